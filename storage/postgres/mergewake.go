package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/chronoforge/chronoforge/storage"
)

// wakeMergeWaiters is WakeMergeWaiters' one statement. "o" finds the owners of the given
// steps that have no child in the given states: one probe of the children index per step and
// state, with equality on both leading columns and LIMIT 1, so a branch of 100,000 completed
// children costs one index descent per state, not a walk of its children (a single
// "state = ANY(...)" probe may be planned as a walk of every child of the step, filtered on
// state). The probes run in the order of @states and stop at the first child found, newest
// first (see probeOrder). A step's owner is read by primary key in a scalar subquery, which no plan turns
// into a scan of the steps table. The owners go through a sorted array, so the UPDATE finds them by primary key under
// any plan and locks them in ID order: concurrent calls cannot deadlock on them. Like Wake,
// an idle row's run_at moves earlier and a running row remembers the wake for its finish;
// listeners hear of an idle row woken.
const wakeMergeWaiters = `
WITH o AS (
	SELECT (SELECT s.workflow_id FROM {{steps}} s WHERE s.id = p.id) AS id
	FROM unnest(@step_ids::bigint[]) AS p(id)
	WHERE NOT EXISTS (
		SELECT 1
		FROM unnest(@states::text[]) AS st(state)
		CROSS JOIN LATERAL (
			SELECT 1 FROM {{workflows}} c
			WHERE c.parent_step_id = p.id AND c.state = st.state
			ORDER BY c.id DESC
			LIMIT 1
		) AS found
	)
), u AS (
	UPDATE {{workflows}} SET
		run_at = CASE WHEN state = 'idle' THEN least(run_at, @at::timestamptz) ELSE run_at END,
		wake_at = CASE WHEN state = 'running' THEN least(wake_at, @at::timestamptz) ELSE wake_at END
	WHERE id = ANY(ARRAY(SELECT DISTINCT id FROM o WHERE id IS NOT NULL ORDER BY id))
		AND (state = 'running' OR (state = 'idle' AND wait_kind = @merge::text))
	RETURNING state
), n AS (
	SELECT pg_notify({{channel}}, '') WHERE EXISTS (SELECT 1 FROM u WHERE u.state = 'idle')
)
SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)`

// WakeMergeWaiters wakes the owner of every step of r.StepIDs that has no child in r.States,
// if the owner is idle on a merge wait (RunAt becomes the earlier of RunAt and r.At) or
// running (the wake is kept for FinishRun, as Wake does), in one statement however many step
// IDs it carries. It checks at most one index entry per step and state, whatever the number
// of children. Listeners are told when an idle workflow was woken.
func (s *Store) WakeMergeWaiters(ctx context.Context, r storage.MergeWakeRequest) (int, error) {
	if err := storage.ValidateMergeWake(r); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	args := pgx.StrictNamedArgs{
		"step_ids": slices.Compact(slices.Sorted(slices.Values(r.StepIDs))),
		"states":   strs(probeOrder(r.States)),
		"at":       ts(r.At),
		"merge":    string(storage.WaitMerge),
	}
	var woken, notified int64
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		// Idempotent: waking twice is waking once.
		return s.pool.QueryRow(ctx, s.q.wakeMergeWaiters, args).Scan(&woken, &notified)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: wake merge waiters: %w", err)
	}
	return int(woken), nil
}

// probeOrder returns the distinct states, running and idle first. Children pass through idle
// and running in ID order (claims take them oldest first), so until a branch drains, a live
// child sits at the top of the running or idle range, and the newest-first probe finds it at
// once; the entries below it belong to children that moved on, and may still be in the index
// as dead versions (until vacuum), which a probe from the bottom would have to step over.
func probeOrder(states []storage.State) []storage.State {
	rank := func(s storage.State) int {
		switch s {
		case storage.StateRunning:
			return 0
		case storage.StateIdle:
			return 1
		}
		return 2
	}
	out := slices.Clone(states)
	slices.SortFunc(out, func(a, b storage.State) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(string(a), string(b))
	})
	return slices.Compact(out)
}
