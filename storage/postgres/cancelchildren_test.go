package postgres

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// spawnUnder creates a parent named name, claims it and spawns n children of branch$b under
// it in one batch. It returns the parent's lease and the branch step.
func spawnUnder(t *testing.T, s *Store, name string, n int) (storage.Lease, int64) {
	t.Helper()
	ctx := t.Context()
	_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: name, Key: "p", Now: base(0)})
	require.NoError(t, err)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, Names: []string{name}, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	children := make([]storage.NewWorkflow, n)
	for i := range children {
		children[i] = storage.NewWorkflow{Name: name + "-child", Key: fmt.Sprintf("p$b$c_%d", i)}
	}
	res, err := s.SpawnBatch(ctx, got[0].Lease(), storage.SpawnRequest{
		Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Children: children, Now: base(time.Second),
	})
	require.NoError(t, err)
	require.Equal(t, n, res.Inserted)
	return got[0].Lease(), res.BranchStepID
}

// TestStatementsCancelChildren: cancelling children in bulk is one statement per call of up
// to 1,000 children, so 2,500 children cost three; a call that meets a running child reads
// that child's branch steps again after the commit, one more statement.
func TestStatementsCancelChildren(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	_, branch := spawnUnder(t, s.Store, "bulk", 2500)

	for i, want := range []int{1000, 1000, 500} {
		s.requireOne(fmt.Sprintf("CancelChildren call %d of 2,500 idle children", i+1), func(ctx context.Context) {
			res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: []int64{branch}, Limit: storage.MaxCancelChildren, Now: base(time.Minute)})
			require.NoError(t, err)
			require.Len(t, res.Cancelled, want)
			require.Equal(t, want == storage.MaxCancelChildren, res.More)
		})
	}
	s.requireOne("CancelChildren finding nothing left", func(ctx context.Context) {
		res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: []int64{branch}, Limit: storage.MaxCancelChildren, Now: base(time.Minute)})
		require.NoError(t, err)
		require.Empty(t, res.Cancelled)
		require.False(t, res.More)
	})

	_, small := spawnUnder(t, s.Store, "running", 10)
	running, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 3, Names: []string{"running-child"}, TTL: time.Minute, Now: base(2 * time.Second)})
	require.NoError(t, err)
	require.Len(t, running, 3)
	sql := s.count(func(ctx context.Context) {
		res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: []int64{small}, Limit: 100, Now: base(time.Minute)})
		require.NoError(t, err)
		require.Len(t, res.Cancelled, 10)
	})
	require.Len(t, sql, 2, "CancelChildren meeting running children: the statement and the read of their branch steps:\n%s", strings.Join(sql, "\n"))
	require.Contains(t, sql[1], "LIKE", sql[1])
}

// TestCancelChildrenUsesIndexes: the statement picks children from the (parent_step_id,
// state) index with equality on both columns, reads at most Limit of its entries however
// many children match, and finds rows and step records by index, under a custom and a
// generic plan.
func TestCancelChildrenUsesIndexes(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedChildren(t, s)
	seedSteps(t, s)
	index := s.prefix + "workflows_children"
	bothColumns := regexp.MustCompile(`Index Cond: \(\(parent_step_id = \S+\) AND \(state = \S+\)\)`)
	args := func(steps []int64, limit int) pgx.StrictNamedArgs {
		return pgx.StrictNamedArgs{
			"step_ids": steps, "states": []string{"running", "idle", "stalled"}, "limit": limit,
			"now": ts(base(0)), "branch_like": storage.BranchStepPrefix + "%",
		}
	}
	for _, q := range []struct {
		name string
		sql  string
		args pgx.StrictNamedArgs
	}{
		{"CancelChildren", s.q.cancelChildren, args([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, storage.MaxCancelChildren)},
		{"CancelChildren's read of branch steps", s.q.branchSteps, pgx.StrictNamedArgs{"ids": []int64{5000, 5001}, "branch_like": storage.BranchStepPrefix + "%"}},
	} {
		plan := explainGeneric(t, s, q.sql, q.args)
		t.Logf("generic plan of %s:\n%s", q.name, plan)
		require.NotContains(t, plan, "Seq Scan", "generic plan of %s", q.name)
		if q.sql == s.q.cancelChildren {
			require.Contains(t, plan, index)
			require.Regexp(t, bothColumns, plan)
		}
	}

	// Executed: 26,667 unfinished children of steps 1..10, of which 100 are cancelled.
	const limit = 100
	plan := explainCustom(t, s, "ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF", s.q.cancelChildren, args([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, limit))
	t.Logf("plan of CancelChildren over 26,667 unfinished children with limit %d:\n%s", limit, plan)
	require.NotContains(t, plan, "Seq Scan")
	total := 0
	for _, m := range regexp.MustCompile(`(?:Index (?:Only )?Scan using|Bitmap Index Scan on) `+index+` .*actual rows=(\d+) loops=(\d+)`).FindAllStringSubmatch(plan, -1) {
		rows, _ := strconv.Atoi(m[1])
		loops, _ := strconv.Atoi(m[2])
		total += rows * loops
	}
	require.NotZero(t, total, "an index scan node on %s", index)
	require.LessOrEqual(t, total, limit, "the index scans stop at the limit")
}

// TestCancelChildrenSeesBranchRecordedDuringCall: a branch step that a child records while
// the statement that cancels it waits for the child's row (its snapshot taken before the
// record committed) is still returned: by a child running at the snapshot, and by one
// claimed after it, which ran and suspended in between.
func TestCancelChildrenSeesBranchRecordedDuringCall(t *testing.T) {
	t.Parallel()
	s := newStore(t, ownPool(t, 4, nil))
	ctx := t.Context()
	_, branch := spawnUnder(t, s, "race", 3)
	running, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, Names: []string{"race-child"}, TTL: time.Minute, Now: base(2 * time.Second)})
	require.NoError(t, err)
	require.Len(t, running, 1)
	kids, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: branch})
	require.NoError(t, err)
	var idle int64
	for _, k := range kids {
		if k.State == storage.StateIdle {
			idle = k.ID
		}
	}

	// Another transaction holds both children's rows, as a run's write does, and records a
	// branch step for each; for the idle one it also moves the lease token, as a claim would.
	tx, err := s.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx, `SELECT 1 FROM `+s.workflows+` WHERE id = ANY($1) FOR UPDATE`, []int64{running[0].ID, idle})
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE `+s.workflows+` SET lease_token = lease_token + 1 WHERE id = $1`, idle)
	require.NoError(t, err)
	var late []int64
	for _, id := range []int64{running[0].ID, idle} {
		var stepID int64
		require.NoError(t, tx.QueryRow(ctx, `INSERT INTO `+s.steps+` (workflow_id, name, state, created_at, updated_at)
			VALUES ($1, 'branch$late', 'pending', now(), now()) RETURNING id`, id).Scan(&stepID))
		late = append(late, stepID)
	}

	type outcome struct {
		res storage.CancelChildrenResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := s.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: []int64{branch}, Limit: 10, Now: base(time.Minute)})
		done <- outcome{res, err}
	}()
	eventually(t, 10*time.Second, func() bool {
		var waiting int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND position($1 in query) > 0 AND query LIKE '%cancelled%'`, s.workflows).Scan(&waiting)
		return err == nil && waiting > 0
	}, "CancelChildren waits for the children's rows")
	require.NoError(t, tx.Commit(ctx))

	got := <-done
	require.NoError(t, got.err)
	require.Len(t, got.res.Cancelled, 3)
	require.Subset(t, got.res.BranchStepIDs, late, "branch steps recorded while the call waited")
}
