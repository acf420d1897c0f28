package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Wake makes a waiting workflow runnable no later than at, with one UPDATE: an idle
// workflow's RunAt becomes the earlier of RunAt and at; a running workflow remembers the
// earliest wake and FinishRun applies it. Final and stalled workflows are left alone and Wake
// reports false; only then, or for an unknown id, a second statement tells the two apart.
func (s *Store) Wake(ctx context.Context, id int64, at time.Time) (bool, error) {
	if err := storage.ValidateWake(at); err != nil {
		return false, err
	}
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	t := dbTime(at)
	var woken bool
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		res, err := s.db.ExecContext(ctx, s.q.wake, t, t, t, t, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if woken = n > 0; woken {
			return nil
		}
		_, err = s.stateOf(ctx, s.db, id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("mysql: wake workflow %d: %w", id, err)
	}
	return woken, nil
}

// stateOf reads a workflow's state, or returns storage.ErrNotFound.
func (s *Store) stateOf(ctx context.Context, q queryer, id int64) (storage.State, error) {
	var state []byte
	err := q.QueryRowContext(ctx, s.q.stateOf, id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", storage.ErrNotFound
	}
	return storage.State(state), err
}

// Retry moves a stalled or failed workflow back to idle, runnable at r.Now, with its attempt
// count reset, its wait and FinishedAt cleared, and r.Steps upserted like SaveSteps does, in
// one transaction that locks the row first, so of concurrent retries one wins. Any other
// state gives an error wrapping storage.ErrWrongState.
func (s *Store) Retry(ctx context.Context, id int64, r storage.RetryRequest) (storage.Workflow, error) {
	if err := storage.ValidateRetry(r); err != nil {
		return storage.Workflow{}, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, err
	}
	now := micro(r.Now)
	var out storage.Workflow
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		w, err := s.queryWorkflow(ctx, tx, s.q.lockWorkflow, id)
		if err != nil {
			return err
		}
		if w.State != storage.StateStalled && w.State != storage.StateFailed {
			return fmt.Errorf("workflow %d is %s, only stalled or failed workflows can be retried: %w", id, w.State, storage.ErrWrongState)
		}
		if err := s.upsertSteps(ctx, tx, id, r.Steps, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q.retry, dbTime(now), dbTime(now), id); err != nil {
			return err
		}
		w.State = storage.StateIdle
		w.RunAt = now
		w.Attempt = 0
		w.Wait = storage.Wait{}
		w.FinishedAt = time.Time{}
		w.UpdatedAt = now
		out = w
		return nil
	})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("mysql: retry workflow %d: %w", id, err)
	}
	return out, nil
}

// Cancel marks a workflow that is not final as cancelled, clears its RunAt and wait and sets
// FinishedAt, with one conditional UPDATE. A lease held on it is revoked (LeaseUntil cleared;
// owner and token stay on record) and fenced writes under it return storage.ErrCancelled. A
// final workflow gives an error wrapping storage.ErrWrongState, found by a second statement
// only when the UPDATE changed nothing.
func (s *Store) Cancel(ctx context.Context, id int64, now time.Time) error {
	if err := storage.ValidateCancel(now); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	// Not idempotent: after a lost reply, a second attempt would report the cancelled
	// workflow as already final.
	err := s.retry(ctx, once, func(ctx context.Context) error {
		res, err := s.db.ExecContext(ctx, s.q.cancel, dbTime(now), dbTime(now), id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil || n > 0 {
			return err
		}
		state, err := s.stateOf(ctx, s.db, id)
		switch {
		case err != nil:
			return err
		case state.Final():
			return fmt.Errorf("workflow %d is already %s: %w", id, state, storage.ErrWrongState)
		default:
			return errVanished // it left a final state in between (a retry): try again
		}
	})
	if err != nil {
		return fmt.Errorf("mysql: cancel workflow %d: %w", id, err)
	}
	return nil
}
