package bolt

import (
	"context"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Writes made under a lease. Each one loads the row, checks the lease (fence) and writes in
// the same transaction, so a stale worker can never write after another has taken over. The
// lease's expiry is checked against the process clock read in that transaction, never the
// request's time.

// fence returns the workflow if l is its current lease, live at now (the store's clock, read
// in the transaction), and it is running; otherwise the error storage.Fence gives. A missing
// workflow yields an error wrapping both storage.ErrNotFound and storage.ErrLeaseLost.
func (t *txn) fence(l storage.Lease, now time.Time) (*record, error) {
	r, err := t.get(l.WorkflowID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, storage.ErrLeaseLost)
	}
	if err := storage.Fence(l, r.Workflow, now); err != nil {
		return nil, err
	}
	return r, nil
}

// Heartbeat extends a held lease to the process clock plus ttl, and RunAt to now+ttl.
func (s *Store) Heartbeat(ctx context.Context, l storage.Lease, ttl time.Duration, now time.Time) error {
	if err := storage.ValidateHeartbeat(l, ttl, now); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(t *txn) error {
		storeNow := s.clock()
		old, err := t.fence(l, storeNow)
		if err != nil {
			return err
		}
		w := *old
		w.LeaseUntil = storeNow.Add(ttl)
		w.RunAt = now.UTC().Add(ttl)
		return t.put(old, &w)
	})
	if err != nil {
		return fmt.Errorf("bolt: heartbeat: %w", err)
	}
	return nil
}

// SaveSteps writes c under the lease l: it upserts the step records by name (keeping their
// IDs), replaces the durable values when c.Values is non-nil and appends the error records.
func (s *Store) SaveSteps(ctx context.Context, l storage.Lease, c storage.Commit) error {
	if err := storage.ValidateLease(l); err != nil {
		return err
	}
	if err := storage.ValidateCommit(c); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.batch(func(t *txn) error {
		old, err := t.fence(l, s.clock())
		if err != nil {
			return err
		}
		w := *old
		if err := t.commit(&w, c); err != nil {
			return err
		}
		return t.put(old, &w)
	})
	if err != nil {
		return fmt.Errorf("bolt: save steps: %w", err)
	}
	return nil
}

// FinishRun writes f's commit, sets the run's outcome and releases the lease in one
// transaction, fenced like SaveSteps. For idle, RunAt becomes the earlier of f.RunAt and a
// wake received during the run; for completed, failed and stalled, RunAt and the wait are
// cleared, and the final states get FinishedAt. Releasing the lease zeroes LeaseUntil; the
// owner and token stay as the record of the last lease, so tokens only grow.
func (s *Store) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	if err := storage.ValidateLease(l); err != nil {
		return err
	}
	if err := storage.ValidateFinish(f); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.batch(func(t *txn) error {
		old, err := t.fence(l, s.clock())
		if err != nil {
			return err
		}
		w := *old
		if err := t.commit(&w, f.Commit); err != nil {
			return err
		}
		w.State = f.State
		w.Output = f.Output
		w.Attempt = f.Attempt
		if f.State == storage.StateIdle {
			w.RunAt = storage.Earliest(utc(f.RunAt), w.Wake)
			w.Wait = f.Wait
		} else {
			w.RunAt = time.Time{}
			w.Wait = storage.Wait{}
		}
		if f.State.Final() {
			w.FinishedAt = w.UpdatedAt
		}
		w.Wake = time.Time{}
		w.LeaseUntil = time.Time{} // released; owner and token stay as the record of the last lease
		return t.put(old, &w)
	})
	if err != nil {
		return fmt.Errorf("bolt: finish run as %s: %w", f.State, err)
	}
	return nil
}

// Release gives the lease l back: the workflow becomes idle and runnable at now, its
// progress unchanged. LeaseUntil is zeroed; owner and token stay, as in FinishRun.
func (s *Store) Release(ctx context.Context, l storage.Lease, now time.Time) error {
	if err := storage.ValidateRelease(l, now); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(t *txn) error {
		old, err := t.fence(l, s.clock())
		if err != nil {
			return err
		}
		w := *old
		w.State = storage.StateIdle
		w.RunAt = now.UTC()
		w.Wake = time.Time{} // runnable now covers any wake
		w.LeaseUntil = time.Time{}
		w.UpdatedAt = w.RunAt
		return t.put(old, &w)
	})
	if err != nil {
		return fmt.Errorf("bolt: release: %w", err)
	}
	return nil
}

// commit applies c to w (not yet written): steps, values, error records, LastError and
// UpdatedAt.
func (t *txn) commit(w *record, c storage.Commit) error {
	now := c.Now.UTC()
	if err := t.upsertSteps(w.ID, c.Steps, now); err != nil {
		return err
	}
	if c.Values != nil {
		w.Values = c.Values
	}
	for _, e := range c.Errors {
		seq, err := t.errors.NextSequence()
		if err != nil {
			return err
		}
		e.ID = int64(seq)
		e.WorkflowID = w.ID
		e.CreatedAt = utc(e.CreatedAt)
		if e.CreatedAt.IsZero() {
			e.CreatedAt = now
		}
		if err := t.errors.Put(childKey(w.ID, idKey(e.ID)), encodeError(&e)); err != nil {
			return err
		}
		w.LastError = e.Message
	}
	w.UpdatedAt = now
	return nil
}

// upsertSteps inserts or replaces step records by (workflow, name). A replaced record keeps
// its ID and CreatedAt (and its CompletedAt if the new one has none); a new record gets the
// next ID from the steps sequence.
func (t *txn) upsertSteps(workflowID int64, steps []storage.Step, now time.Time) error {
	for _, st := range steps {
		key := childKey(workflowID, []byte(st.Name))
		st.WorkflowID = workflowID
		st.UpdatedAt = now
		st.CreatedAt = utc(st.CreatedAt)
		st.CompletedAt = utc(st.CompletedAt)
		var prevCompleted time.Time
		if v := t.steps.Get(key); v != nil {
			prev, err := decodeStep(v)
			if err != nil {
				return fmt.Errorf("workflow %d step %q: %w", workflowID, st.Name, err)
			}
			st.ID = prev.ID
			st.CreatedAt = prev.CreatedAt
			prevCompleted = prev.CompletedAt
		} else {
			seq, err := t.steps.NextSequence()
			if err != nil {
				return err
			}
			st.ID = int64(seq)
			if st.CreatedAt.IsZero() {
				st.CreatedAt = now
			}
		}
		if st.State == storage.StepCompleted && st.CompletedAt.IsZero() {
			st.CompletedAt = storage.Earliest(prevCompleted, now)
		}
		if err := t.steps.Put(key, encodeStep(&st)); err != nil {
			return err
		}
	}
	return nil
}
