package memory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Wake makes an idle workflow runnable no later than at, or, for a running one, keeps the
// wake for the end of its run. Final and stalled workflows are left alone (false).
func (s *Store) Wake(ctx context.Context, id int64, at time.Time) (bool, error) {
	if err := storage.ValidateWake(at); err != nil {
		return false, err
	}
	if err := s.begin(ctx, "wake"); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	r, err := s.lookup("wake", id)
	if err != nil {
		return false, err
	}
	return s.wake(r, stamp(at)), nil
}

// wake wakes r at at, as Wake and WakeMergeWaiters do, and reports whether it was woken.
func (s *Store) wake(r *record, at time.Time) bool {
	switch r.w.State {
	case storage.StateIdle:
		s.update(r, func(w *storage.Workflow) { w.RunAt = storage.Earliest(w.RunAt, at) })
		s.notify()
		return true
	case storage.StateRunning:
		// RunAt belongs to the run's lease; FinishRun applies the kept wake.
		r.wake = storage.Earliest(r.wake, at)
		return true
	}
	return false
}

// Retry moves a stalled or failed workflow back to idle, runnable at r.Now, with its attempt
// count reset and r.Steps written.
func (s *Store) Retry(ctx context.Context, id int64, r storage.RetryRequest) (storage.Workflow, error) {
	if err := storage.ValidateRetry(r); err != nil {
		return storage.Workflow{}, err
	}
	if err := s.begin(ctx, "retry"); err != nil {
		return storage.Workflow{}, err
	}
	defer s.mu.Unlock()
	rec, err := s.lookup("retry", id)
	if err != nil {
		return storage.Workflow{}, err
	}
	if st := rec.w.State; st != storage.StateStalled && st != storage.StateFailed {
		return storage.Workflow{}, fmt.Errorf("memory: retry workflow %d: it is %s, not stalled or failed: %w", id, st, storage.ErrWrongState)
	}
	now := stamp(r.Now)
	s.putSteps(rec, r.Steps, now)
	s.update(rec, func(w *storage.Workflow) {
		w.State = storage.StateIdle
		w.RunAt = now
		w.Attempt = 0
		w.Wait = storage.Wait{}
		w.FinishedAt = time.Time{}
		w.UpdatedAt = now
	})
	s.notify()
	return rec.out(), nil
}

// Cancel marks a workflow that is not final as cancelled: final, with no RunAt. A run in
// progress keeps its lease fields, but every write under it is refused with ErrCancelled.
func (s *Store) Cancel(ctx context.Context, id int64, now time.Time) error {
	if err := storage.ValidateCancel(now); err != nil {
		return err
	}
	if err := s.begin(ctx, "cancel"); err != nil {
		return err
	}
	defer s.mu.Unlock()
	r, err := s.lookup("cancel", id)
	if err != nil {
		return err
	}
	if r.w.State.Final() {
		return fmt.Errorf("memory: cancel workflow %d: it is %s already: %w", id, r.w.State, storage.ErrWrongState)
	}
	s.cancel(r, stamp(now))
	return nil
}

// cancel makes r cancelled at now; r is not final.
func (s *Store) cancel(r *record, now time.Time) {
	s.update(r, func(w *storage.Workflow) {
		w.State = storage.StateCancelled
		w.RunAt = time.Time{}
		w.LeaseUntil = time.Time{} // a lease held on it is revoked; owner and token stay
		w.Wait = storage.Wait{}
		w.FinishedAt = now
		w.UpdatedAt = now
	})
	r.wake = time.Time{}
}

// unfinished are the child states CancelChildren cancels.
var unfinished = []storage.State{storage.StateIdle, storage.StateRunning, storage.StateStalled}

// CancelChildren cancels up to r.Limit unfinished children of r.StepIDs, as Cancel does, in
// one critical section, and reports them with their own branch steps. It reads the
// children's state sets of each branch, so its cost is bounded by the limit.
func (s *Store) CancelChildren(ctx context.Context, r storage.CancelChildrenRequest) (storage.CancelChildrenResult, error) {
	var res storage.CancelChildrenResult
	if err := storage.ValidateCancelChildren(r); err != nil {
		return res, err
	}
	if err := s.begin(ctx, "cancel children"); err != nil {
		return res, err
	}
	defer s.mu.Unlock()
	var picked []*record
	for _, id := range uniq(r.StepIDs) {
		b := s.children[id]
		if b == nil {
			continue
		}
		for _, st := range unfinished {
			for cid := range b.byState[st] {
				if len(picked) == r.Limit {
					break
				}
				picked = append(picked, s.byID[cid])
			}
		}
	}
	res.More = len(picked) == r.Limit // as the contract says: a full call may have left more
	now := stamp(r.Now)
	for _, c := range picked {
		s.cancel(c, now)
		res.Cancelled = append(res.Cancelled, c.w.ID)
		for _, st := range c.steps {
			if strings.HasPrefix(st.Name, storage.BranchStepPrefix) {
				res.BranchStepIDs = append(res.BranchStepIDs, st.ID)
			}
		}
	}
	slices.Sort(res.Cancelled)
	slices.Sort(res.BranchStepIDs)
	return res, nil
}
