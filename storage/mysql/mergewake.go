package mysql

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
)

// WakeMergeWaiters wakes the owner of every step of r.StepIDs that has no child in r.States,
// if the owner is idle on a merge wait (RunAt becomes the earlier of RunAt and r.At) or
// running (the wake is kept for FinishRun, as Wake does). It is one query that finds the
// owners, and one UPDATE of them when there are any, however many step IDs it carries; it
// reads at most one index entry per step and state, whatever the number of children.
//
// MySQL refuses an UPDATE whose subquery reads the table it updates, hence two statements.
// They need no transaction: a branch's children only leave the waited-on states, and a
// running parent is woken either way, so what the query found stays true for the UPDATE
// except for a spurious wake, which a merge wait tolerates.
func (s *Store) WakeMergeWaiters(ctx context.Context, r storage.MergeWakeRequest) (int, error) {
	if err := storage.ValidateMergeWake(r); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	query, args := s.drainedOwnersQuery(r)
	at := dbTime(r.At)
	var woken int64
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		woken = 0
		rows, err := s.db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		var owners []any
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				_ = rows.Close()
				return err
			}
			owners = append(owners, id)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil || len(owners) == 0 {
			return err
		}
		// As in Wake: an idle row's run_at moves earlier, a running row remembers the
		// earliest wake for its finish, and wake_count makes the affected-row count the match
		// count. IN on the primary key locks the rows in ID order, so calls do not deadlock.
		update := "UPDATE " + s.workflows + " SET" +
			" run_at = IF(state = 'idle' AND (run_at IS NULL OR run_at > " + ts + "), " + ts + ", run_at)," +
			" wake_at = IF(state = 'running' AND (wake_at IS NULL OR wake_at > " + ts + "), " + ts + ", wake_at)," +
			" wake_count = wake_count + 1" +
			" WHERE id IN (" + placeholders(len(owners)) + ")" +
			" AND (state = 'running' OR (state = 'idle' AND wait_kind = ?))"
		uargs := append([]any{at, at, at, at}, owners...)
		uargs = append(uargs, bstr(string(storage.WaitMerge)))
		res, err := s.db.ExecContext(ctx, update, uargs...)
		if err != nil {
			return err
		}
		woken, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("mysql: wake merge waiters: %w", err)
	}
	return int(woken), nil
}

// drainedOwnersQuery builds the query for the workflows owning the steps of r.StepIDs that
// have no child in r.States. Each state gets a NOT EXISTS of its own, so every probe of the
// children index has equality on both its columns and stops at the first entry: one
// "state IN (...)" probe could walk every completed child of the step, filtered on state.
func (s *Store) drainedOwnersQuery(r storage.MergeWakeRequest) (string, []any) {
	stepIDs := slices.Compact(slices.Sorted(slices.Values(r.StepIDs)))
	states := slices.Compact(slices.Sorted(slices.Values(r.States)))
	args := make([]any, 0, len(stepIDs)+len(states))
	for _, id := range stepIDs {
		args = append(args, id)
	}
	var b strings.Builder
	b.WriteString("SELECT DISTINCT s.workflow_id FROM " + s.steps + " AS s WHERE s.id IN (" + placeholders(len(stepIDs)) + ")")
	for _, st := range states {
		b.WriteString(" AND NOT EXISTS (SELECT 1 FROM " + s.workflows + " AS c WHERE c.parent_step_id = s.id AND c.state = ?)")
		args = append(args, bstr(string(st)))
	}
	b.WriteString(" ORDER BY s.workflow_id")
	return b.String(), args
}
