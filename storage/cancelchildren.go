package storage

import (
	"fmt"
	"time"
)

// MaxCancelSteps is the most branch step IDs one CancelChildren call may carry.
const MaxCancelSteps = 1000

// MaxCancelChildren is the largest Limit of CancelChildren: the most children one call
// cancels, and so the most rows one of its transactions writes and keeps locked.
const MaxCancelChildren = 1000

// BranchStepPrefix starts the name of every branch step record ("branch$<name>", the record
// SpawnBatch links children to). CancelChildren reports the cancelled children's step
// records with this prefix, so a tree can be cancelled level by level.
const BranchStepPrefix = "branch$"

// CancelChildrenRequest is the input of CancelChildren.
type CancelChildrenRequest struct {
	// StepIDs are the branch steps whose unfinished children are cancelled: 1..MaxCancelSteps
	// positive IDs. A step ID given twice counts once.
	StepIDs []int64
	// Limit is the most children one call cancels: 1..MaxCancelChildren.
	Limit int
	// Now is the caller's time, stored as the children's FinishedAt and UpdatedAt.
	Now time.Time
}

// CancelChildrenResult is the outcome of CancelChildren.
type CancelChildrenResult struct {
	// Cancelled are the IDs of the children this call cancelled, in ID order.
	Cancelled []int64
	// BranchStepIDs are the IDs of the cancelled children's branch steps, in ID order: the
	// StepIDs of the calls that cancel the grandchildren.
	BranchStepIDs []int64
	// More reports that the call stopped at its Limit, so unfinished children may be left:
	// call again with the same step IDs. When it is false, none is left.
	More bool
}

// ValidateCancelChildren checks the input of CancelChildren: 1..MaxCancelSteps positive step
// IDs, a Limit of 1..MaxCancelChildren, and Now given and in range.
func ValidateCancelChildren(r CancelChildrenRequest) error {
	if len(r.StepIDs) == 0 || len(r.StepIDs) > MaxCancelSteps {
		return fmt.Errorf("%w: cancelling children needs 1..%d branch step IDs, got %d", ErrInvalid, MaxCancelSteps, len(r.StepIDs))
	}
	for _, id := range r.StepIDs {
		if id <= 0 {
			return fmt.Errorf("%w: branch step ID %d must be positive", ErrInvalid, id)
		}
	}
	if r.Limit < 1 || r.Limit > MaxCancelChildren {
		return fmt.Errorf("%w: cancel limit %d must be 1..%d", ErrInvalid, r.Limit, MaxCancelChildren)
	}
	return validateNow("now", r.Now)
}
