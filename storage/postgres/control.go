package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// Wake makes a waiting workflow runnable no later than at, in one statement. An idle
// workflow's RunAt becomes the earlier of RunAt and at (so wakes coalesce) and listeners are
// told; a running workflow remembers the earliest wake, which FinishRun applies. Final and
// stalled workflows are left alone and Wake reports false; an unknown id gives an error
// wrapping storage.ErrNotFound.
func (s *Store) Wake(ctx context.Context, id int64, at time.Time) (bool, error) {
	if err := storage.ValidateWake(at); err != nil {
		return false, err
	}
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	var (
		woken, notified int64
		exists          bool
	)
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		// Idempotent: waking twice is waking once.
		return s.pool.QueryRow(ctx, s.q.wake, pgx.StrictNamedArgs{"id": id, "at": ts(at)}).Scan(&woken, &exists, &notified)
	})
	if err != nil {
		return false, fmt.Errorf("postgres: wake workflow %d: %w", id, err)
	}
	if woken == 0 && !exists {
		return false, fmt.Errorf("postgres: wake workflow %d: %w", id, storage.ErrNotFound)
	}
	return woken == 1, nil
}

// Retry moves a stalled or failed workflow back to idle, runnable at r.Now, with its attempt
// count reset, its wait and FinishedAt cleared, and r.Steps upserted like SaveSteps does, in
// one statement, and tells listeners. Any other state gives an error wrapping
// storage.ErrWrongState; of concurrent retries, one wins (the others wait for its row lock
// and then find the workflow idle).
func (s *Store) Retry(ctx context.Context, id int64, r storage.RetryRequest) (storage.Workflow, error) {
	if err := storage.ValidateRetry(r); err != nil {
		return storage.Workflow{}, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, err
	}
	args := pgx.StrictNamedArgs{"id": id, "now": ts(r.Now)}
	stepArgs(args, r.Steps)
	var out []storage.Workflow
	err := retry(ctx, once, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, s.q.retry, args)
		if err != nil {
			return err
		}
		out, err = scanWorkflows(rows, 0)
		return err
	})
	if err == nil && len(out) == 0 {
		err = s.wrongState(ctx, id, "only stalled or failed workflows can be retried")
	}
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("postgres: retry: %w", err)
	}
	return out[0], nil
}

// Cancel marks a workflow that is not final as cancelled in one statement: RunAt, the wait
// and a pending wake are cleared, FinishedAt is set, and a lease held on it is revoked
// (LeaseUntil cleared, owner and token kept), so fenced writes under it return
// storage.ErrCancelled. A final workflow gives an error wrapping storage.ErrWrongState.
func (s *Store) Cancel(ctx context.Context, id int64, now time.Time) error {
	if err := storage.ValidateCancel(now); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	var (
		n     int64
		state pgtype.Text
	)
	err := retry(ctx, once, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, s.q.cancel, pgx.StrictNamedArgs{"id": id, "now": ts(now)}).Scan(&n, &state)
	})
	switch {
	case err != nil:
	case n == 1:
		return nil
	case !state.Valid:
		err = fmt.Errorf("workflow %d: %w", id, storage.ErrNotFound)
	default:
		err = fmt.Errorf("workflow %d is already %s: %w", id, state.String, storage.ErrWrongState)
	}
	return fmt.Errorf("postgres: cancel: %w", err)
}

// wrongState explains an update that matched no row: the workflow is unknown, or in a state
// the operation does not allow.
func (s *Store) wrongState(ctx context.Context, id int64, why string) error {
	var state string
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		var token int64
		var until pgtype.Timestamptz
		return s.pool.QueryRow(ctx, s.q.leaseState, pgx.StrictNamedArgs{"id": id}).Scan(&state, &token, &until)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("workflow %d: %w", id, storage.ErrNotFound)
	case err != nil:
		return err
	}
	return fmt.Errorf("workflow %d is %s, %s: %w", id, state, why, storage.ErrWrongState)
}
