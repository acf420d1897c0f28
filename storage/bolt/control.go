package bolt

import (
	"context"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Wake makes a waiting workflow runnable no later than at. An idle workflow's RunAt becomes
// the earlier of RunAt and at; a running workflow remembers the earliest wake and FinishRun
// applies it. Final and stalled workflows are left alone and Wake reports false.
func (s *Store) Wake(ctx context.Context, id int64, at time.Time) (bool, error) {
	if err := storage.ValidateWake(at); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	at = at.UTC()
	var woken bool
	err := s.update(func(t *txn) error {
		old, err := t.get(id)
		if err != nil {
			return err
		}
		w := *old
		switch old.State {
		case storage.StateIdle:
			w.RunAt = storage.Earliest(old.RunAt, at)
		case storage.StateRunning:
			// RunAt stays where the claim or heartbeat put it while leased.
			w.Wake = storage.Earliest(old.Wake, at)
		default:
			return nil
		}
		woken = true
		if w.RunAt.Equal(old.RunAt) && w.Wake.Equal(old.Wake) {
			return nil
		}
		return t.put(old, &w)
	})
	if err != nil {
		return false, fmt.Errorf("bolt: wake: %w", err)
	}
	return woken, nil
}

// Retry moves a stalled or failed workflow back to idle, runnable at r.Now, with its attempt
// count reset, its wait and FinishedAt cleared, and r.Steps upserted like SaveSteps does, in
// one transaction. Any other state gives an error wrapping storage.ErrWrongState.
func (s *Store) Retry(ctx context.Context, id int64, r storage.RetryRequest) (storage.Workflow, error) {
	if err := storage.ValidateRetry(r); err != nil {
		return storage.Workflow{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Workflow{}, err
	}
	now := r.Now.UTC()
	var out storage.Workflow
	err := s.update(func(t *txn) error {
		old, err := t.get(id)
		if err != nil {
			return err
		}
		if old.State != storage.StateStalled && old.State != storage.StateFailed {
			return fmt.Errorf("workflow %d is %s, only stalled or failed workflows can be retried: %w", id, old.State, storage.ErrWrongState)
		}
		if err := t.upsertSteps(id, r.Steps, now); err != nil {
			return err
		}
		w := *old
		w.State = storage.StateIdle
		w.RunAt = now
		w.Attempt = 0
		w.Wait = storage.Wait{}
		w.Wake = time.Time{}
		w.FinishedAt = time.Time{}
		w.UpdatedAt = now
		if err := t.put(old, &w); err != nil {
			return err
		}
		out = w.Workflow
		return nil
	})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("bolt: retry: %w", err)
	}
	return out, nil
}

// Cancel marks a workflow that is not final as cancelled, clears its RunAt and wait and sets
// FinishedAt. A lease held on it is revoked (LeaseUntil zeroed; owner and token stay on
// record) and fenced writes under it return storage.ErrCancelled. A final workflow gives an
// error wrapping storage.ErrWrongState.
func (s *Store) Cancel(ctx context.Context, id int64, now time.Time) error {
	if err := storage.ValidateCancel(now); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(t *txn) error {
		old, err := t.get(id)
		if err != nil {
			return err
		}
		if old.State.Final() {
			return fmt.Errorf("workflow %d is already %s: %w", id, old.State, storage.ErrWrongState)
		}
		return t.cancel(old, now.UTC())
	})
	if err != nil {
		return fmt.Errorf("bolt: cancel: %w", err)
	}
	return nil
}

// cancel writes old, a workflow that is not final, as cancelled at now: RunAt, wait and wake
// cleared, the lease revoked (owner and token stay on record), FinishedAt set.
func (t *txn) cancel(old *record, now time.Time) error {
	w := *old
	w.State = storage.StateCancelled
	w.RunAt = time.Time{}
	w.Wait = storage.Wait{}
	w.Wake = time.Time{}
	w.LeaseUntil = time.Time{}
	w.FinishedAt = now
	w.UpdatedAt = now
	return t.put(old, &w)
}
