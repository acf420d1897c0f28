package mysql

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

func TestPrefixEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix string
		end    string
		ok     bool
	}{
		{"a", "b", true},
		{"order-", "order.", true},
		{"a\xff", "b", true},
		{"a\xff\xff", "b", true},
		{"\xff\xff", "", false},
		{"ü", "\xc3\xbd", true},
	} {
		end, ok := prefixEnd(tc.prefix)
		require.Equal(t, tc.ok, ok, "prefix %q", tc.prefix)
		require.Equal(t, tc.end, string(end), "prefix %q", tc.prefix)
	}
}

// TestInspectStatementCounts: each operator query, and a listing by key prefix or newest
// first, is one statement.
func TestInspectStatementCounts(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	p := create(t, s, "parent", "p", at(0))
	got := claimAll(t, s, at(0), 1, "parent")
	require.Len(t, got, 1)
	children := make([]storage.NewWorkflow, 50)
	for i := range children {
		children[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$i_%d", i)}
	}
	res, err := s.SpawnBatch(ctx, got[0].Lease(), storage.SpawnRequest{
		Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Children: children, Now: at(time.Second),
	})
	require.NoError(t, err)

	one := snapshot{Query: 1}
	measure(t, c, "ListWorkflows by key prefix, newest first", one, func() {
		ws, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "child", KeyPrefix: "p$b$i_1", Desc: true, BeforeID: 1 << 40})
		require.NoError(t, err)
		require.Len(t, ws, 11) // i_1, i_10 .. i_19
	})
	measure(t, c, "CountStates", one, func() {
		n, err := s.CountStates(ctx, storage.CountStatesQuery{Sample: 10})
		require.NoError(t, err)
		require.True(t, n.Sampled)
		require.Equal(t, 10, n.Counted)
	})
	measure(t, c, "CountStates of a name", one, func() {
		n, err := s.CountStates(ctx, storage.CountStatesQuery{Name: "parent"})
		require.NoError(t, err)
		require.Equal(t, []storage.StateCount{{Name: "parent", State: storage.StateRunning, Count: 1}}, n.Counts)
	})
	measure(t, c, "BranchCounts", one, func() {
		b, err := s.BranchCounts(ctx, storage.BranchQuery{StepID: res.BranchStepID, Cap: 20})
		require.NoError(t, err)
		require.Equal(t, 20, b.Count(storage.StateIdle))
		require.Equal(t, []storage.State{storage.StateIdle}, b.Capped)
	})
	measure(t, c, "Backlog", one, func() {
		b, err := s.Backlog(ctx, at(time.Hour), 0)
		require.NoError(t, err)
		require.Equal(t, 50, b.Due)
	})
	require.NotZero(t, p.ID)
}

// TestInspectIndexesUsed checks with EXPLAIN, on a table large enough for the optimizer to
// care, that each operator query reads the index meant for it and no query scans the whole
// table or sorts it.
func TestInspectIndexesUsed(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()

	create(t, s, "parent", "p", at(0))
	got := claimAll(t, s, at(0), 1, "parent")
	require.Len(t, got, 1)
	l := got[0].Lease()
	var branches []int64
	for b := range 4 {
		children := make([]storage.NewWorkflow, 1000)
		for i := range children {
			children[i] = storage.NewWorkflow{Name: fmt.Sprint("child", b), Key: fmt.Sprintf("p$b%d$i_%d", b, i), RunAt: at(time.Duration(i) * time.Second)}
		}
		name := fmt.Sprintf("branch$b%d", b)
		res, err := s.SpawnBatch(ctx, l, storage.SpawnRequest{
			Branch: name, Steps: []storage.Step{{Name: name, State: storage.StepPending}}, Children: children, Now: at(time.Second),
		})
		require.NoError(t, err)
		branches = append(branches, res.BranchStepID)
	}
	// Some of the first branch's children finish, so that its final states have rows.
	claimed := claimAll(t, s, at(time.Hour), 100, "child0")
	require.Len(t, claimed, 100)
	for i, w := range claimed {
		st := []storage.State{storage.StateCompleted, storage.StateFailed}[i%2]
		require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: at(time.Hour)}, State: st}))
	}
	_, err := db.ExecContext(ctx, "ANALYZE TABLE "+s.workflows)
	require.NoError(t, err)

	// noScan fails on a full scan of the workflows table or a sort of more than a derived
	// table's bounded rows.
	noScan := func(what string, plan []planRow) {
		t.Helper()
		t.Logf("%s plan: %+v", what, plan)
		for _, r := range plan {
			if strings.HasPrefix(r.table, "<") {
				continue // <derived2>, <union2,3>: bounded rows already read
			}
			require.NotEqual(t, "ALL", r.accessType, "%s: no full scan of %s: %+v", what, r.table, plan)
			require.NotContains(t, r.extra, "filesort", "%s: no sort of %s: %+v", what, r.table, plan)
		}
	}

	query, args := s.listQuery(storage.ListFilter{Name: "child1", KeyPrefix: "p$b1$i_12", Desc: true}, time.Time{})
	plan := explain(t, db, query, args...)
	require.True(t, usesIndex(plan, "name_key"), "a key prefix is a range of the (name, key) index: %+v", plan)
	t.Logf("ListWorkflows by key prefix plan: %+v", plan) // sorts the prefix's rows, not the table
	for _, r := range plan {
		require.NotEqual(t, "ALL", r.accessType, "no full scan: %+v", plan)
	}
	query, args = s.listQuery(storage.ListFilter{Desc: true, BeforeID: 3000}, time.Time{})
	plan = explain(t, db, query, args...)
	require.True(t, usesIndex(plan, "PRIMARY"), "newest first walks the primary key backwards: %+v", plan)
	noScan("ListWorkflows newest first", plan)
	query, args = s.listQuery(storage.ListFilter{ParentStepID: branches[2], States: []storage.State{storage.StateIdle}, Desc: true, Limit: 10}, time.Time{})
	plan = explain(t, db, query, args...)
	require.True(t, usesIndex(plan, "children"), "a branch's children newest first read the children index: %+v", plan)
	noScan("ListWorkflows of a branch newest first", plan)

	plan = explain(t, db, s.q.countStates, 1001)
	require.True(t, usesIndex(plan, "PRIMARY"), "CountStates walks the primary key backwards: %+v", plan)
	noScan("CountStates", plan)

	// With a name no index is in (name, id) order: a range of a name index sorted, or the
	// primary key walked backwards, never a full scan.
	plan = explain(t, db, s.q.countStatesOf, bstr("child2"), 101)
	t.Logf("CountStates of a name plan: %+v", plan)
	for _, r := range plan {
		if !strings.HasPrefix(r.table, "<") {
			require.NotEqual(t, "ALL", r.accessType, "CountStates of a name: no full scan: %+v", plan)
		}
	}

	plan = explain(t, db, s.q.branchCounts, branchCountsArgs(storage.BranchQuery{StepID: branches[0], Cap: 100, Recent: 10})...)
	for _, r := range plan {
		if !strings.HasPrefix(r.table, "<") && r.table != "" {
			require.Equal(t, "children", r.key, "BranchCounts reads only the children index: %+v", plan)
		}
	}
	noScan("BranchCounts", plan)

	plan = explain(t, db, s.q.backlog, dbTime(at(time.Hour)), storage.BacklogProbe+1, storage.BacklogProbe, storage.BacklogProbe, storage.BacklogProbe, 100)
	require.True(t, usesIndex(plan, "runnable"), "Backlog probes the runnable index: %+v", plan)
	noScan("Backlog", plan)

	// And the answers agree with what was stored.
	b, err := s.BranchCounts(ctx, storage.BranchQuery{StepID: branches[0], Recent: 10})
	require.NoError(t, err)
	require.Equal(t, 900, b.Count(storage.StateIdle))
	require.Equal(t, 50, b.Count(storage.StateCompleted))
	require.Equal(t, 50, b.Count(storage.StateFailed))
	require.Len(t, b.RecentFinished, 10)
	ws, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "child1", KeyPrefix: "p$b1$i_12", Desc: true})
	require.NoError(t, err)
	require.Len(t, ws, 11) // i_12, i_120 .. i_129
	require.Greater(t, ws[0].ID, ws[10].ID)
}

// TestBacklogProbeFull: Backlog counts the BacklogProbe oldest due rows and says when more
// are due; with exactly BacklogProbe due it reports them all, unprobed.
func TestBacklogProbeFull(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	var last storage.Workflow
	for from := 0; from <= storage.BacklogProbe; from += storage.MaxCreateBatch {
		ws := make([]storage.NewWorkflow, min(storage.MaxCreateBatch, storage.BacklogProbe+1-from))
		for i := range ws {
			ws[i] = storage.NewWorkflow{Name: "due", Key: fmt.Sprint(from + i), RunAt: at(time.Duration(from+i) * time.Millisecond), Now: at(0)}
		}
		out, _, err := s.CreateWorkflows(ctx, ws)
		require.NoError(t, err)
		last = out[len(out)-1]
	}
	got, err := s.Backlog(ctx, at(time.Hour), 0)
	require.NoError(t, err)
	require.Equal(t, storage.BacklogProbe, got.Due)
	require.True(t, got.Probed, "one more row is due than the probe holds")
	require.True(t, at(0).Equal(got.OldestDue), "oldest due %v", got.OldestDue)

	require.NoError(t, s.Cancel(ctx, last.ID, at(time.Second)))
	got, err = s.Backlog(ctx, at(time.Hour), 0)
	require.NoError(t, err)
	require.Equal(t, storage.BacklogProbe, got.Due)
	require.False(t, got.Probed, "exactly BacklogProbe rows are due")
}
