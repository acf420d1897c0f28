package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// Branch units: a batch of children spawned under the parent's lease, and the capped count of
// a branch's children.

// SpawnBatch writes one batch of a branch's children in one statement, fenced by the parent's
// lease like SaveSteps: it upserts r.Steps, resolves the branch step r.Branch (in the batch
// or already stored; otherwise the error wraps storage.ErrInvalid and nothing is written), and
// inserts every child whose name and key are not stored yet with one
// INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING: idle, runnable at its RunAt
// (r.Now when zero), linked to the branch step. Existing children of the same branch step,
// and repeats within the batch, are left as they are; a name and key held under another
// parent step fails the statement (nothing is written) and one more query reads what holds
// it for the *storage.ConflictError. Listeners are told when a new child is due. However
// many children the batch has, it is one statement and one round trip (two on a conflict).
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
	args := leaseArgs(l, r.Now)
	args["branch"] = r.Branch
	stepArgs(args, r.Steps)
	n := len(r.Children)
	names, keys := make([]string, n), make([]string, n)
	inputs, traces := make([][]byte, n), make([][]byte, n)
	tags, flows := make([]string, n), make([]string, n)
	runAt := make([]pgtype.Timestamptz, n)
	for i, c := range r.Children {
		names[i], keys[i], inputs[i], traces[i], runAt[i] = c.Name, c.Key, c.Input, c.TraceContext, ts(c.RunAt)
		tags[i], flows[i] = encodeTags(c.Tags), c.Flow
	}
	args["child_names"], args["child_keys"], args["child_inputs"] = names, keys, inputs
	args["child_traces"], args["child_tags"], args["child_run_at"] = traces, tags, runAt
	args["child_flows"] = flows

	var out storage.SpawnResult
	var matched bool
	err := retry(ctx, once, func(ctx context.Context) error {
		var inserted, notified, conflicts int64
		err := s.pool.QueryRow(ctx, s.q.spawn, args).Scan(&out.BranchStepID, &inserted, &notified, &conflicts)
		if errors.Is(err, pgx.ErrNoRows) {
			matched = false
			return nil
		}
		matched, out.Inserted = err == nil, int(inserted)
		return err
	})
	if err == nil && !matched {
		err = s.refuse(ctx, l)
		if errors.Is(err, errLeaseHolds) {
			// The fence holds now, so either the branch step is unknown, or the lease changed
			// while the statement ran (a heartbeat that began before the lease ran out and
			// extended it after the statement read it): tell the two apart rather than report
			// a lease race as bad input, which would fail the workflow.
			err = s.branchKnown(ctx, l, r)
		}
	}
	if isSpawnConflict(err) {
		err = s.spawnConflict(ctx, l, r.Branch, args)
	}
	if err != nil {
		return storage.SpawnResult{}, fmt.Errorf("postgres: spawn batch of branch %q: %w", r.Branch, err)
	}
	s.maint.childrenSpawned(out.Inserted) // may refresh statistics, in the background
	return out, nil
}

// spawnConflictMark starts the text of the error the spawn statement raises when a child's
// name and key are held under another parent step.
const spawnConflictMark = "chronoforge: spawn conflict:"

// isSpawnConflict reports whether err is the spawn statement's conflict error: the failed
// integer cast of a text that starts with spawnConflictMark.
func isSpawnConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "22P02" && strings.Contains(pgErr.Message, spawnConflictMark)
}

// spawnConflict reads, after a batch refused for a conflict, which workflow holds the first
// conflicting child's name and key, and returns the *storage.ConflictError that names it.
func (s *Store) spawnConflict(ctx context.Context, l storage.Lease, branch string, args pgx.StrictNamedArgs) error {
	c := &storage.ConflictError{WorkflowID: l.WorkflowID, Branch: branch}
	q := pgx.StrictNamedArgs{"id": l.WorkflowID, "branch": branch, "child_names": args["child_names"], "child_keys": args["child_keys"]}
	var others int64
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		err := s.pool.QueryRow(ctx, s.q.spawnConflict, q).Scan(&c.ID, &c.Name, &c.Key, &c.ParentStepID, &c.BranchStepID, &others)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // the holder is gone since; the batch was refused all the same
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%w (reading which workflow holds a child's key: %w)", storage.ErrConflict, err)
	}
	c.Others = int(max(others-1, 0))
	return c
}

// CountChildren counts the children of q.StepIDs whose state is in q.States, stopping at
// q.Cap, in one query that reads one range of the (parent_step_id, state) index per step
// and state and stops after q.Cap entries in all, so the cost is bounded by the cap (plus
// one index descent per pair), not by the number of children. Repeated step IDs or states
// count once.
func (s *Store) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	if err := storage.ValidateChildQuery(q); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	stepIDs := slices.Compact(slices.Sorted(slices.Values(q.StepIDs)))
	args := pgx.StrictNamedArgs{"step_ids": stepIDs, "states": strs(q.States), "cap": q.Cap}
	var n int64
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, s.q.countChildren, args).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: count children: %w", err)
	}
	return int(n), nil
}

// branchKnown explains a spawn refused while its lease holds: ErrInvalid when the branch step
// is neither in the batch nor recorded, ErrLeaseLost (the lease changed during the write)
// otherwise.
func (s *Store) branchKnown(ctx context.Context, l storage.Lease, r storage.SpawnRequest) error {
	for _, st := range r.Steps {
		if st.Name == r.Branch {
			return fmt.Errorf("workflow %d: the lease changed during the write: %w", l.WorkflowID, storage.ErrLeaseLost)
		}
	}
	var stored bool
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+s.steps+` WHERE workflow_id = $1 AND name = $2)`, l.WorkflowID, r.Branch).Scan(&stored)
	})
	switch {
	case err != nil:
		return fmt.Errorf("workflow %d: read the branch step after a refused spawn: %w", l.WorkflowID, err)
	case stored:
		return fmt.Errorf("workflow %d: the lease changed during the write: %w", l.WorkflowID, storage.ErrLeaseLost)
	}
	return fmt.Errorf("%w: branch step %q is neither in the batch nor recorded on workflow %d", storage.ErrInvalid, r.Branch, l.WorkflowID)
}
