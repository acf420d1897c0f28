package mysql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// spawnUnder creates a parent named name, claims it and spawns n children of each of the
// given branches under it, one batch per branch. It returns the branch steps.
func spawnUnder(t *testing.T, s *Store, name string, n int, branches ...string) []int64 {
	t.Helper()
	create(t, s, name, "p", at(0))
	got := claimAll(t, s, at(0), 1, name)
	require.Len(t, got, 1)
	var steps []int64
	for _, b := range branches {
		children := make([]storage.NewWorkflow, n)
		for i := range children {
			children[i] = storage.NewWorkflow{Name: name + "-child", Key: fmt.Sprintf("p$%s$c_%d", b, i)}
		}
		res, err := s.SpawnBatch(context.Background(), got[0].Lease(), storage.SpawnRequest{
			Branch: b, Steps: []storage.Step{{Name: b, State: storage.StepPending}}, Children: children, Now: at(time.Second),
		})
		require.NoError(t, err)
		require.Equal(t, n, res.Inserted)
		steps = append(steps, res.BranchStepID)
	}
	return steps
}

// TestStatementCountsCancelChildren: a call that cancels children is one transaction of
// three statements (the locking read, one UPDATE, the read of their branch steps) whether it
// cancels 1,000 or 500; one that finds none is the read alone.
func TestStatementCountsCancelChildren(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	steps := spawnUnder(t, s, "bulk", 2500, "branch$b")
	claimAll(t, s, at(2*time.Second), 3, "bulk-child") // running children are cancelled alike

	some := snapshot{Begin: 1, Commit: 1, Query: 2, Exec: 1}
	for i, want := range []int{1000, 1000, 500} {
		measure(t, c, fmt.Sprintf("CancelChildren call %d of 2,500", i+1), some, func() {
			res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: steps, Limit: storage.MaxCancelChildren, Now: at(time.Minute)})
			require.NoError(t, err)
			require.Len(t, res.Cancelled, want)
			require.Equal(t, want == storage.MaxCancelChildren, res.More)
		})
	}
	measure(t, c, "CancelChildren finding nothing", snapshot{Begin: 1, Commit: 1, Query: 1}, func() {
		res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: steps, Limit: storage.MaxCancelChildren, Now: at(time.Minute)})
		require.NoError(t, err)
		require.Empty(t, res.Cancelled)
		require.False(t, res.More)
	})
}

// TestCancelChildrenIndexes checks with EXPLAIN that the locking read probes the
// (parent_step_id, state) index with both columns for each step and state, for 2 and for
// MaxCancelSteps step IDs, and that the read of branch steps reads ranges of the
// (workflow_id, name) index, never a whole index or table, on tables of 100,000 children of
// big branches and their step records, where index statistics make big estimates.
func TestCancelChildrenIndexes(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()
	const digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4" +
		" UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
	_, err := db.ExecContext(ctx, "INSERT INTO "+s.workflows+" (name, `key`, state, parent_step_id, created_at, updated_at)"+
		" SELECT 'old', CONCAT('k', n), IF(n % 10 = 0, 'idle', 'completed'), 1000000 + n % 100, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)"+
		" FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n FROM "+
		digits+" a, "+digits+" b, "+digits+" c, "+digits+" e, "+digits+" f) AS g")
	require.NoError(t, err)
	steps := spawnUnder(t, s, "tree", 1000, "branch$b0", "branch$b1", "branch$b2", "branch$b3")
	_, err = db.ExecContext(ctx, "INSERT INTO "+s.steps+" (workflow_id, name, state, created_at, updated_at)"+
		" SELECT id, 'work', 'completed', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) FROM "+s.workflows)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "ANALYZE TABLE "+s.workflows+", "+s.steps)
	require.NoError(t, err)

	many := slices.Clone(steps)
	for i := int64(0); len(many) < storage.MaxCancelSteps; i++ {
		many = append(many, 1000000+i) // the old branches, then steps without children
	}
	for _, stepIDs := range [][]int64{steps[:2], many} {
		query, args := s.unfinishedChildrenQuery(stepIDs, 100)
		var plan []planRow
		for _, r := range explain(t, db, query, args...) {
			if r.table != "" { // not the derived tables' SELECTs of constants
				plan = append(plan, r)
			}
		}
		t.Logf("CancelChildren pick plan for %d steps: %+v", len(stepIDs), plan)
		for _, r := range plan {
			if r.table == "w" {
				require.Equal(t, "children", r.key, "%d steps: the pick probes the (parent_step_id, state) index: %+v", len(stepIDs), plan)
				require.Equal(t, "ref", r.accessType, "%d steps: one probe per step and state: %+v", len(stepIDs), plan)
			}
		}
		var doc string
		require.NoError(t, db.QueryRowContext(ctx, "EXPLAIN FORMAT=JSON "+query, args...).Scan(&doc))
		require.Contains(t, doc, `"used_key_parts": ["parent_step_id", "state"]`, "both columns of the index: %s", doc)

		res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: stepIDs, Limit: 100, Now: at(time.Minute)})
		require.NoError(t, err)
		require.Len(t, res.Cancelled, 100)
	}
	kids, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: steps[2], Limit: 1000})
	require.NoError(t, err)
	query, args := s.branchStepsQuery(ids(kids))
	plan := explain(t, db, query, args...)
	t.Logf("CancelChildren branch steps plan for %d children: %+v", len(kids), plan)
	for _, r := range plan {
		require.Equal(t, "range", r.accessType, "ranges of an index of %s: %+v", r.table, plan)
	}
}

func ids(ws []storage.Workflow) []int64 {
	out := make([]int64, len(ws))
	for i, w := range ws {
		out[i] = w.ID
	}
	return out
}

// TestCancelChildrenSeesBranchRecordedDuringCall: a branch step that a child records while
// the call waits for the child's row is among the branch steps the call returns.
func TestCancelChildrenSeesBranchRecordedDuringCall(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()
	steps := spawnUnder(t, s, "race", 2, "branch$b")
	kids, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: steps[0]})
	require.NoError(t, err)
	require.Len(t, kids, 2)

	// Another transaction holds the children's rows, as a run's fenced write does, and
	// records a branch step for one of them.
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	_, err = tx.ExecContext(ctx, "SELECT id FROM "+s.workflows+" WHERE id IN (?, ?) FOR UPDATE", kids[0].ID, kids[1].ID)
	require.NoError(t, err)
	res, err := tx.ExecContext(ctx, "INSERT INTO "+s.steps+" (workflow_id, name, state, created_at, updated_at) VALUES (?, 'branch$late', 'pending', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))", kids[1].ID)
	require.NoError(t, err)
	late, err := res.LastInsertId()
	require.NoError(t, err)

	type outcome struct {
		res storage.CancelChildrenResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: steps, Limit: 10, Now: at(time.Minute)})
		done <- outcome{res, err}
	}()
	schema := strings.Trim(strings.SplitN(s.workflows, ".", 2)[0], "`")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		// Bounded: a read of innodb_trx can itself stall behind the server's lock system.
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		// The call's locking read is running on the server (it cannot finish while this
		// transaction holds the children's rows). MariaDB does not always list such a read in
		// innodb_trx as LOCK WAIT, so look for the statement itself.
		err := db.QueryRowContext(pctx, "SELECT count(*) FROM information_schema.processlist WHERE command = 'Query' AND info LIKE ? AND info NOT LIKE '%information_schema%'", "%"+schema+"%").Scan(&waiting)
		cancel()
		if err == nil && waiting > 0 {
			break
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
		select {
		case got := <-done:
			t.Fatalf("CancelChildren returned without waiting for the children's rows: %+v", got)
		default:
		}
		require.True(t, time.Now().Before(deadline), "CancelChildren does not wait for the children's rows")
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, tx.Commit())

	got := <-done
	require.NoError(t, got.err)
	require.Len(t, got.res.Cancelled, 2)
	require.Equal(t, []int64{late}, got.res.BranchStepIDs, "the branch step recorded while the call waited")
}
