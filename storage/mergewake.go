package storage

import (
	"fmt"
	"time"
)

// MaxMergeWake is the most step IDs one WakeMergeWaiters call may carry.
const MaxMergeWake = 1000

// MergeWakeRequest is the input of WakeMergeWaiters.
type MergeWakeRequest struct {
	// StepIDs are branch steps (SpawnResult.BranchStepID) whose children may have finished:
	// 1..MaxMergeWake positive IDs. A step ID given twice counts once.
	StepIDs []int64
	// States are the child states that keep a merge waiting; a step with a child in one of
	// them wakes nothing.
	States []State
	// At is the wake time: the owner's RunAt becomes the earlier of RunAt and At.
	At time.Time
}

// ValidateMergeWake checks the input of WakeMergeWaiters: 1..MaxMergeWake positive step IDs,
// at least one state, every state a defined one, and At given and in range.
func ValidateMergeWake(r MergeWakeRequest) error {
	if len(r.StepIDs) == 0 || len(r.StepIDs) > MaxMergeWake {
		return fmt.Errorf("%w: a merge wake needs 1..%d step IDs, got %d", ErrInvalid, MaxMergeWake, len(r.StepIDs))
	}
	if len(r.States) == 0 {
		return fmt.Errorf("%w: a merge wake needs the child states that keep a merge waiting", ErrInvalid)
	}
	for _, id := range r.StepIDs {
		if id <= 0 {
			return fmt.Errorf("%w: branch step ID %d must be positive", ErrInvalid, id)
		}
	}
	for _, st := range r.States {
		if !st.Valid() {
			return fmt.Errorf("%w: unknown state %q", ErrInvalid, st)
		}
	}
	return validateNow("wake time", r.At)
}
