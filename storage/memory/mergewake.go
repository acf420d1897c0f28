package memory

import (
	"context"

	"github.com/chronoforge/chronoforge/storage"
)

// WakeMergeWaiters wakes, at r.At, the owner of each step of r.StepIDs that has no child in
// r.States, if that owner is idle on a merge wait (RunAt becomes the earlier of RunAt and
// r.At) or running (the wake is kept for FinishRun). It returns how many owners it woke, each
// counted once.
func (s *Store) WakeMergeWaiters(ctx context.Context, r storage.MergeWakeRequest) (int, error) {
	if err := storage.ValidateMergeWake(r); err != nil {
		return 0, err
	}
	if err := s.begin(ctx, "wake merge waiters"); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	at := stamp(r.At)
	states := uniq(r.States)
	woken := map[int64]struct{}{}
	for _, step := range uniq(r.StepIDs) {
		owner, ok := s.stepOwner[step]
		if !ok {
			continue // unknown step
		}
		if _, done := woken[owner]; done || s.hasChildIn(step, states) {
			continue
		}
		rec := s.byID[owner]
		if rec.w.State == storage.StateIdle && rec.w.Wait.Kind != storage.WaitMerge {
			continue // idle on another wait: a merge wake is not for it
		}
		if s.wake(rec, at) {
			woken[owner] = struct{}{}
		}
	}
	return len(woken), nil
}

// hasChildIn reports whether branch step has a child in one of states.
func (s *Store) hasChildIn(step int64, states []storage.State) bool {
	b := s.children[step]
	if b == nil {
		return false
	}
	for _, st := range states {
		if len(b.byState[st]) > 0 {
			return true
		}
	}
	return false
}
