package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/chronoforge/chronoforge/storage"
)

// cancelSet is what Cancel and CancelChildren write to a workflow they cancel: the state, no
// run time, wait or remembered wake, the lease revoked (owner and token stay on record), and
// the finish time.
const cancelSet = `state = 'cancelled', run_at = NULL, wait_kind = '', wait_step = '', wait_data = NULL,
		wake_at = NULL, lease_until = NULL, finished_at = @now::timestamptz, updated_at = @now::timestamptz`

// cancelChildren is CancelChildren's statement.
//
// "c" picks the children: one range of the children index per step and state, with equality
// on both leading columns, stopped at @limit each and overall (the inner LIMIT also keeps the
// planner from flattening the lateral query into a walk of every child of the steps). It is
// a plain read, in the statement's snapshot, and locks nothing.
//
// The UPDATE takes them through a sorted array, so it finds them by primary key under any
// plan and locks them in ID order: concurrent calls cannot deadlock on them. It does not skip
// locked rows: a child a worker is claiming or writing is waited for, then checked again
// (READ COMMITTED's recheck of the latest version), so it ends cancelled unless it became
// final first. The count of "c", not of the UPDATE, says whether more may be left.
//
// The branch steps of the cancelled children are read in the statement's snapshot, which
// misses a branch step a child recorded after the snapshot was taken and before the UPDATE
// locked it. Only a child that was running at the snapshot, or was claimed after it (its
// lease token moved), can have written since, so the statement names those children ("w"),
// and CancelChildren reads their branch steps again after the commit.
const cancelChildren = `
WITH c AS MATERIALIZED (
	SELECT w.id, w.state, w.lease_token
	FROM unnest(@step_ids::bigint[]) AS p(id)
	CROSS JOIN unnest(@states::text[]) AS st(state)
	CROSS JOIN LATERAL (
		SELECT w.id, w.state, w.lease_token FROM {{workflows}} w
		WHERE w.parent_step_id = p.id AND w.state = st.state
		LIMIT @limit
	) AS w
	LIMIT @limit
), u AS (
	UPDATE {{workflows}} SET ` + cancelSet + `
	WHERE id = ANY(ARRAY(SELECT id FROM c ORDER BY id))
		AND state NOT IN ('completed', 'failed', 'cancelled')
	RETURNING id, lease_token
)
SELECT
	(SELECT count(*) FROM c),
	ARRAY(SELECT id FROM u ORDER BY id),
	ARRAY(SELECT u.id FROM u JOIN c ON c.id = u.id
		WHERE c.state = 'running' OR u.lease_token <> c.lease_token ORDER BY u.id) AS w,
	ARRAY(SELECT s.id FROM {{steps}} s
		WHERE s.workflow_id = ANY(ARRAY(SELECT id FROM u)) AND s.name LIKE @branch_like ORDER BY s.id)`

// branchSteps reads the branch steps of the given workflows, after the statement that
// cancelled them committed. The name prefix filters each workflow's range of the
// (workflow_id, name) index: text ranges follow the database's collation, so no range on the
// name is assumed.
const branchSteps = `
SELECT id FROM {{steps}}
WHERE workflow_id = ANY(@ids::bigint[]) AND name LIKE @branch_like
ORDER BY id`

// CancelChildren cancels up to r.Limit unfinished children of the branch steps r.StepIDs in
// one statement, each as Cancel does, and returns them with their own branch steps. Nothing
// becomes runnable, so listeners are not told. When a cancelled child was running, or was
// claimed while the statement ran, a second statement reads its branch steps after the
// commit (see cancelChildren), so it costs one statement, or two when it met a run.
func (s *Store) CancelChildren(ctx context.Context, r storage.CancelChildrenRequest) (storage.CancelChildrenResult, error) {
	if err := storage.ValidateCancelChildren(r); err != nil {
		return storage.CancelChildrenResult{}, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.CancelChildrenResult{}, err
	}
	like := storage.BranchStepPrefix + "%" // the prefix has no LIKE wildcards
	args := pgx.StrictNamedArgs{
		"step_ids":    slices.Compact(slices.Sorted(slices.Values(r.StepIDs))),
		"states":      []string{string(storage.StateRunning), string(storage.StateIdle), string(storage.StateStalled)},
		"limit":       r.Limit,
		"now":         ts(r.Now),
		"branch_like": like,
	}
	var (
		found   int64
		out     storage.CancelChildrenResult
		written []int64
	)
	// Not idempotent: after a lost reply, a second attempt would cancel other children and
	// the first ones' branch steps would be lost.
	err := retry(ctx, once, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, s.q.cancelChildren, args).Scan(&found, &out.Cancelled, &written, &out.BranchStepIDs)
	})
	if err == nil && len(written) > 0 {
		var again []int64
		err = retry(ctx, idempotent, func(ctx context.Context) error {
			rows, err := s.pool.Query(ctx, s.q.branchSteps, pgx.StrictNamedArgs{"ids": written, "branch_like": like})
			if err != nil {
				return err
			}
			again, err = pgx.CollectRows(rows, pgx.RowTo[int64])
			return err
		})
		out.BranchStepIDs = slices.Compact(slices.Sorted(slices.Values(append(out.BranchStepIDs, again...))))
	}
	if err != nil {
		return storage.CancelChildrenResult{}, fmt.Errorf("postgres: cancel children of %d branch steps: %w", len(r.StepIDs), err)
	}
	out.More = found == int64(r.Limit)
	return out, nil
}
