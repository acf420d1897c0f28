package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
)

// cancelSet is what Cancel and CancelChildren write to a workflow they cancel: the state, no
// run time, wait or remembered wake, the lease revoked (owner and token stay on record), and
// the finish time. Its two placeholders are the finish and update times.
const cancelSet = `state = 'cancelled', run_at = NULL, wait_kind = '', wait_step = '', wait_data = NULL,
    wake_at = NULL, lease_until = NULL, finished_at = ` + ts + `, updated_at = ` + ts

// CancelChildren cancels up to r.Limit unfinished children of the branch steps r.StepIDs in
// one transaction, each as Cancel does, and returns them with their own branch steps. It is
// three statements however many children it cancels: a locking read of the children from the
// (parent_step_id, state) index, stopped at r.Limit; one UPDATE of them by primary key; and
// one read of their branch steps from the (workflow_id, name) index (the last two only when
// it found children).
//
// The locking read waits for a child a worker is writing rather than skip it, and reads the
// child's latest state, so every child it returns is unfinished and locked, and ends
// cancelled. Every write under a child's lease locks the child's row first (the fence), so
// once the read holds it, the child's writes have committed or will be refused; the read of
// its branch steps comes after, with a read view of its own (InnoDB makes it at the
// transaction's first plain read, this one, under both READ COMMITTED and REPEATABLE READ),
// so it misses no branch step the child recorded.
func (s *Store) CancelChildren(ctx context.Context, r storage.CancelChildrenRequest) (storage.CancelChildrenResult, error) {
	if err := storage.ValidateCancelChildren(r); err != nil {
		return storage.CancelChildrenResult{}, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.CancelChildrenResult{}, err
	}
	pick, args := s.unfinishedChildrenQuery(r.StepIDs, r.Limit)
	now := dbTime(r.Now)
	var out storage.CancelChildrenResult
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = storage.CancelChildrenResult{}
		ids, err := queryIDs(ctx, tx, pick, args...)
		if err != nil || len(ids) == 0 {
			return err
		}
		out.More = len(ids) == r.Limit
		slices.Sort(ids)
		in, idArgs := inLists("id", ids)
		res, err := tx.ExecContext(ctx, "UPDATE "+s.workflows+" SET "+cancelSet+" WHERE "+in, append([]any{now, now}, idArgs...)...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != int64(len(ids)) {
			// The rows are locked and were unfinished; anything else is a bug, not a race.
			return fmt.Errorf("cancelled %d of %d locked children", n, len(ids))
		}
		query, args := s.branchStepsQuery(ids)
		out.BranchStepIDs, err = queryIDs(ctx, tx, query, args...)
		out.Cancelled = ids
		return err
	})
	if err != nil {
		return storage.CancelChildrenResult{}, fmt.Errorf("mysql: cancel children of %d branch steps: %w", len(r.StepIDs), err)
	}
	return out, nil
}

// unfinishedChildrenQuery builds the locking read of up to limit unfinished children of the
// steps. Every step and unfinished state is a row of a derived table, joined in that order
// (STRAIGHT_JOIN) to the (parent_step_id, state) index with equality on both columns, so each
// pair is one probe of the index and the join stops at the limit. The obvious
// "parent_step_id IN (...) AND state IN (...)" is planned from index statistics once it has
// more than a few hundred ranges, and on a table of big branches the optimizer then scans the
// whole index from its start, past every other branch's children.
func (s *Store) unfinishedChildrenQuery(stepIDs []int64, limit int) (string, []any) {
	stepIDs = slices.Compact(slices.Sorted(slices.Values(stepIDs)))
	states := []storage.State{storage.StateRunning, storage.StateIdle, storage.StateStalled}
	args := make([]any, 0, len(stepIDs)+len(states)+1)
	var b strings.Builder
	b.WriteString("SELECT STRAIGHT_JOIN w.id FROM (")
	for i, id := range stepIDs {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT CAST(? AS SIGNED) AS id")
		args = append(args, id)
	}
	b.WriteString(") AS p CROSS JOIN (")
	for i, st := range states {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT CAST(? AS BINARY) AS state")
		args = append(args, bstr(string(st)))
	}
	b.WriteString(") AS st JOIN " + s.workflows + " AS w FORCE INDEX (children)" +
		" ON w.parent_step_id = p.id AND w.state = st.state LIMIT ? FOR UPDATE")
	return b.String(), append(args, limit)
}

// branchStepsQuery builds the read of the branch steps of the workflows ids: a prefix range
// of the (workflow_id, name) index per workflow (names are bytes, so LIKE with a constant
// prefix is a range; the prefix has no LIKE wildcards).
func (s *Store) branchStepsQuery(ids []int64) (string, []any) {
	in, args := inLists("workflow_id", ids)
	return "SELECT id FROM " + s.steps + " WHERE " + in + " AND name LIKE ? ORDER BY id",
		append(args, bstr(storage.BranchStepPrefix+"%"))
}

// inLists is "(col IN (...) OR col IN (...))" over ids, at most holdersInList per list (see
// holdersInList: MariaDB turns longer lists into a join that scans the table).
func inLists(col string, ids []int64) (string, []any) {
	var b strings.Builder
	args := make([]any, 0, len(ids))
	b.WriteByte('(')
	for part := range slices.Chunk(ids, holdersInList) {
		if len(args) > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString(col + " IN (" + placeholders(len(part)) + ")")
		for _, id := range part {
			args = append(args, id)
		}
	}
	b.WriteByte(')')
	return b.String(), args
}

// queryIDs runs a query of one integer column and returns its rows.
func queryIDs(ctx context.Context, q queryer, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
