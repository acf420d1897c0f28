package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Branch units: spawning a batch of children under the parent's lease, and the capped count
// of a branch's children by state.

// SpawnBatch writes one batch of a branch's children in one transaction, fenced by the
// parent's lease like SaveSteps, with a fixed number of statements however many children
// the batch has: the fence (which also reads the branch step's ID when it is recorded), one
// upsert of r.Steps, one SELECT of the branch step's ID only when this batch records it
// first, one multi-row INSERT IGNORE of the children, and one UPDATE of the parent row.
// The branch step must be among r.Steps or recorded already, else the error wraps
// storage.ErrInvalid. A child whose name and key exist already (including a repeat within
// the batch) is left as it is; the others are idle, runnable at their RunAt (r.Now when
// zero) and linked to the branch step. Any error leaves the store unchanged.
func (s *Store) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	if err := storage.ValidateLease(l); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := storage.ValidateSpawn(r); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.SpawnResult{}, err
	}
	now := micro(r.Now)
	var out storage.SpawnResult
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		fc, err := s.fence(ctx, tx, l, r.Branch)
		if err != nil {
			return err
		}
		set, args, err := s.writeCommit(ctx, tx, l.WorkflowID, storage.Commit{Steps: r.Steps, Now: r.Now})
		if err != nil {
			return err
		}
		branchID := fc.branchID
		if branchID == 0 {
			err := tx.QueryRowContext(ctx, s.q.branchID, l.WorkflowID, bstr(r.Branch)).Scan(&branchID)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: branch step %q is neither in the batch nor recorded on workflow %d", storage.ErrInvalid, r.Branch, l.WorkflowID)
			}
			if err != nil {
				return err
			}
		}
		inserted, err := s.insertChildren(ctx, tx, branchID, r.Children, now)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.workflows+" SET "+strings.Join(set, ", ")+" WHERE id = ?", append(args, l.WorkflowID)...); err != nil {
			return err
		}
		out = storage.SpawnResult{BranchStepID: branchID, Inserted: inserted}
		return nil
	})
	if err != nil {
		return storage.SpawnResult{}, fmt.Errorf("mysql: spawn batch of branch %q: %w", r.Branch, err)
	}
	return out, nil
}

// insertChildren inserts the children that do not exist yet with one multi-row INSERT IGNORE
// (the unique name and key index skips the others) and returns how many it inserted.
// Every value was validated before, so IGNORE can only skip duplicates.
func (s *Store) insertChildren(ctx context.Context, tx *sql.Tx, branchID int64, children []storage.NewWorkflow, now time.Time) (int, error) {
	if len(children) == 0 {
		return 0, nil
	}
	const row = "?, ?, ?, 'idle', " + ts + ", ?, ?, " + ts + ", " + ts
	const cols = 8
	size := func(i int) int {
		c := &children[i]
		return len(c.Name) + len(c.Key) + len(c.Input) + len(c.TraceContext)
	}
	inserted := 0
	for _, c := range chunks(len(children), cols, size) {
		n := c[1] - c[0]
		args := make([]any, 0, n*cols)
		for i := c[0]; i < c[1]; i++ {
			child := &children[i]
			runAt := micro(child.RunAt)
			if runAt.IsZero() {
				runAt = now
			}
			args = append(args, bstr(child.Name), bstr(child.Key), child.Input, dbTime(runAt), child.TraceContext, branchID, dbTime(now), dbTime(now))
		}
		query := "INSERT IGNORE INTO " + s.workflows +
			" (name, `key`, input, state, run_at, trace_context, parent_step_id, created_at, updated_at) VALUES " + rowsSQL(n, row)
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return 0, err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		inserted += int(k)
	}
	return inserted, nil
}

// CountChildren counts the children of q.StepIDs in q.States, stopping at q.Cap, with one
// query whose inner LIMIT bounds the rows it reads from the (parent_step_id, state) index.
// Repeated step IDs or states count once.
func (s *Store) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	if err := storage.ValidateChildQuery(q); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	query, args := s.countQuery(q)
	var n int
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		return s.db.QueryRowContext(ctx, query, args...).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("mysql: count children: %w", err)
	}
	return n, nil
}

// countQuery builds CountChildren's query and arguments.
func (s *Store) countQuery(q storage.ChildQuery) (string, []any) {
	stepIDs := slices.Compact(slices.Sorted(slices.Values(q.StepIDs)))
	states := slices.Compact(slices.Sorted(slices.Values(q.States)))
	args := make([]any, 0, len(stepIDs)+len(states)+1)
	for _, id := range stepIDs {
		args = append(args, id)
	}
	for _, st := range states {
		args = append(args, bstr(string(st)))
	}
	args = append(args, q.Cap)
	query := "SELECT COUNT(*) FROM (SELECT 1 FROM " + s.workflows +
		" WHERE parent_step_id IN (" + placeholders(len(stepIDs)) + ") AND state IN (" + placeholders(len(states)) + ")" +
		" LIMIT ?) AS t"
	return query, args
}
