package sdk

import (
	"context"
	"fmt"

	"github.com/chronoforge/chronoforge/storage"
)

// WakeMerges makes the workflows waiting to merge the given branches runnable now, for every
// branch none of whose children can still change by itself (idle or running) — all done, or
// the rest failed, stalled or cancelled, which a FailFast merge or a Call acts on at once —
// instead of at their next merge probe, which backs off
// up to the branch's ProbeInterval maximum while children run. branchStepIDs are the
// ParentStepID of finished child workflows; call it after their final writes committed, so
// the last child of a branch finds no sibling left. A parent merging several branches is
// woken when any of them is done, and its probe then decides whether all are. A running
// parent is woken when its run ends, so a probe that raced the last child does not wait.
//
// It costs one storage call per storage.MaxMergeWake step IDs, whatever the number of
// children, and wakes this engine's workers when it woke a workflow. It returns how many
// workflows it woke. Waking is always safe: the merge probe still decides when a merge is
// done, and a workflow no call wakes resumes at its next probe.
// unsettled are the child states that keep a merge's parent asleep when its children finish:
// a child failed or stalled (which only an operator moves on) wakes it too, so a Call or a
// FailFast merge learns of the failure at once, and a plain merge's probe, finding the child
// still incomplete, suspends again on its own schedule.
var unsettled = []storage.State{storage.StateIdle, storage.StateRunning}

func (e *Engine) WakeMerges(ctx context.Context, branchStepIDs []int64) (int, error) {
	woken := 0
	for start := 0; start < len(branchStepIDs); start += storage.MaxMergeWake {
		chunk := branchStepIDs[start:min(start+storage.MaxMergeWake, len(branchStepIDs))]
		n, err := e.store.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: chunk, States: unsettled, At: e.clock.Now()})
		woken += n
		if err != nil {
			if woken > 0 {
				e.notify()
			}
			return woken, fmt.Errorf("wake merges of %d branch steps: %w", len(chunk), err)
		}
	}
	if woken > 0 {
		e.notify()
	}
	return woken, nil
}
