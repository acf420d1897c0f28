package memory

import (
	"context"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// fenced starts a write under l: it finds the workflow and refuses with storage.Fence's error
// unless l is its current lease, live by the store's clock. The caller holds s.mu.
func (s *Store) fenced(op string, l storage.Lease) (*record, error) {
	r, err := s.lookup(op, l.WorkflowID)
	if err != nil {
		return nil, err
	}
	if err := storage.Fence(l, r.w, s.storeNow()); err != nil {
		return nil, fmt.Errorf("memory: %s: %w", op, err)
	}
	return r, nil
}

// Heartbeat extends a held lease to the store's clock plus ttl and moves RunAt to now+ttl.
func (s *Store) Heartbeat(ctx context.Context, l storage.Lease, ttl time.Duration, now time.Time) error {
	if err := storage.ValidateHeartbeat(l, ttl, now); err != nil {
		return err
	}
	if err := s.begin(ctx, "heartbeat"); err != nil {
		return err
	}
	defer s.mu.Unlock()
	r, err := s.fenced("heartbeat", l)
	if err != nil {
		return err
	}
	until := stamp(s.storeNow().Add(ttl))
	s.update(r, func(w *storage.Workflow) {
		w.LeaseUntil = until
		w.RunAt = stamp(now.Add(ttl))
	})
	return nil
}

// SaveSteps writes c under the lease l.
func (s *Store) SaveSteps(ctx context.Context, l storage.Lease, c storage.Commit) error {
	if err := storage.ValidateLease(l); err != nil {
		return err
	}
	if err := storage.ValidateCommit(c); err != nil {
		return err
	}
	if err := s.begin(ctx, "save steps"); err != nil {
		return err
	}
	defer s.mu.Unlock()
	r, err := s.fenced("save steps", l)
	if err != nil {
		return err
	}
	s.commit(r, c)
	return nil
}

// FinishRun ends the run of l: it writes the commit, sets the new state and releases the
// lease. A wake kept during the run makes an idle workflow's RunAt the earlier of the two.
func (s *Store) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	if err := validateFinishRun(l, f); err != nil {
		return err
	}
	if err := s.begin(ctx, "finish run"); err != nil {
		return err
	}
	defer s.mu.Unlock()
	return s.finish(l, f)
}

// FinishRuns ends several runs under one lock, each fenced on its own.
func (s *Store) FinishRuns(ctx context.Context, ends []storage.RunEnd) ([]error, error) {
	if err := storage.ValidateRunEnds(ends); err != nil {
		return nil, err
	}
	if err := s.begin(ctx, "finish runs"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	errs := make([]error, len(ends))
	for i, e := range ends {
		if errs[i] = validateFinishRun(e.Lease, e.Finish); errs[i] == nil {
			errs[i] = s.finish(e.Lease, e.Finish)
		}
	}
	return errs, nil
}

func validateFinishRun(l storage.Lease, f storage.Finish) error {
	if err := storage.ValidateLease(l); err != nil {
		return err
	}
	return storage.ValidateFinish(f)
}

// finish is FinishRun's write; the caller holds s.mu.
func (s *Store) finish(l storage.Lease, f storage.Finish) error {
	r, err := s.fenced("finish run", l)
	if err != nil {
		return err
	}
	s.commit(r, f.Commit)
	now := stamp(f.Now)
	s.update(r, func(w *storage.Workflow) {
		w.State = f.State
		w.Output = clone(f.Output)
		w.Attempt = f.Attempt
		w.Wait = cloneWait(f.Wait)
		w.LeaseUntil = time.Time{}
		switch f.State {
		case storage.StateIdle:
			w.RunAt = storage.Earliest(stamp(f.RunAt), r.wake)
		case storage.StateStalled:
			w.RunAt = time.Time{}
		default: // completed or failed: final
			w.RunAt = time.Time{}
			w.FinishedAt = now
		}
	})
	r.wake = time.Time{}
	if !r.w.RunAt.IsZero() && !r.w.RunAt.After(now) {
		s.notify() // runnable at once (an early wake kept during the run)
	}
	return nil
}

// Release gives the lease l back: the workflow becomes idle, runnable at now, with its
// progress as it was.
func (s *Store) Release(ctx context.Context, l storage.Lease, now time.Time) error {
	if err := storage.ValidateRelease(l, now); err != nil {
		return err
	}
	if err := s.begin(ctx, "release"); err != nil {
		return err
	}
	defer s.mu.Unlock()
	r, err := s.fenced("release", l)
	if err != nil {
		return err
	}
	s.update(r, func(w *storage.Workflow) {
		w.State = storage.StateIdle
		w.LeaseUntil = time.Time{}
		w.RunAt = stamp(now)
		w.UpdatedAt = stamp(now)
	})
	r.wake = time.Time{} // the workflow is runnable at once, which covers any wake
	s.notify()
	return nil
}

// commit writes c's step records, durable values and error records to r, stamped c.Now.
func (s *Store) commit(r *record, c storage.Commit) {
	now := stamp(c.Now)
	s.putSteps(r, c.Steps, now)
	if c.Values != nil {
		r.w.Values = clone(c.Values)
	}
	for _, e := range c.Errors {
		s.lastError++
		r.errs = append(r.errs, storage.ErrorRecord{
			ID:         s.lastError,
			WorkflowID: r.w.ID,
			Step:       e.Step,
			Attempt:    e.Attempt,
			Type:       e.Type,
			Message:    e.Message,
			Values:     clone(e.Values),
			CreatedAt:  stampOr(e.CreatedAt, now),
		})
		r.w.LastError = e.Message
	}
	r.w.UpdatedAt = now
}

// putSteps inserts or replaces step records by name, as the contract's "Records as input"
// says: the store assigns ID and WorkflowID, keeps CreatedAt on replace, stamps UpdatedAt with
// now and keeps when a completed step completed.
func (s *Store) putSteps(r *record, steps []storage.Step, now time.Time) {
	for _, in := range steps {
		st := r.step(in.Name)
		if st == nil {
			s.lastStep++
			st = &storage.Step{ID: s.lastStep, WorkflowID: r.w.ID, Name: in.Name, CreatedAt: stampOr(in.CreatedAt, now)}
			r.addStep(st)
			s.stepOwner[st.ID] = r.w.ID
		}
		st.State = in.State
		st.Attempts = in.Attempts
		st.Result = clone(in.Result)
		st.Meta = clone(in.Meta)
		st.LastError = in.LastError
		st.UpdatedAt = now
		switch {
		case !in.CompletedAt.IsZero():
			st.CompletedAt = stamp(in.CompletedAt)
		case in.State == storage.StepCompleted:
			st.CompletedAt = storage.Earliest(st.CompletedAt, now)
		default:
			st.CompletedAt = time.Time{}
		}
	}
}
