package mysql

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

var waitedOn = []storage.State{storage.StateIdle, storage.StateRunning, storage.StateFailed, storage.StateStalled, storage.StateCancelled}

// parkOnMerge creates a parent named name, spawns one branch of n children and parks the
// parent on a merge wait due in an hour; it returns the branch step's ID.
func parkOnMerge(t *testing.T, s *Store, name string, n int) int64 {
	t.Helper()
	ctx := context.Background()
	create(t, s, name, "p", at(0))
	got := claimAll(t, s, at(0), 1, name)
	require.Len(t, got, 1)
	kids := make([]storage.NewWorkflow, n)
	for i := range kids {
		kids[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("%s$b$c_%d", name, i)}
	}
	res, err := s.SpawnBatch(ctx, got[0].Lease(), storage.SpawnRequest{
		Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Children: kids, Now: at(time.Second),
	})
	require.NoError(t, err)
	require.NoError(t, s.FinishRun(ctx, got[0].Lease(), storage.Finish{
		Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateIdle, RunAt: at(time.Hour),
		Wait: storage.Wait{Kind: storage.WaitMerge, Step: "merge$b"},
	}))
	return res.BranchStepID
}

// TestStatementCountsWakeMergeWaiters: waking the parents of drained branches is one query
// when there is nothing to wake (a branch of 2,000 idle children), and one query and one
// UPDATE for 40 parents among MaxMergeWake step IDs; never a transaction.
func TestStatementCountsWakeMergeWaiters(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	busy := parkOnMerge(t, s, "busy", 2000)
	var drained []int64
	for i := range 40 {
		drained = append(drained, parkOnMerge(t, s, fmt.Sprint("drained", i), 0))
	}
	measure(t, c, "WakeMergeWaiters of a branch with 2,000 idle children", snapshot{Query: 1}, func() {
		n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{busy}, States: waitedOn, At: at(3 * time.Second)})
		require.NoError(t, err)
		require.Zero(t, n)
	})
	ids := append([]int64{busy}, drained...)
	for i := int64(1); len(ids) < storage.MaxMergeWake; i++ {
		ids = append(ids, 1<<40+i)
	}
	measure(t, c, "WakeMergeWaiters of MaxMergeWake step IDs waking 40 parents", snapshot{Query: 1, Exec: 1}, func() {
		n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: ids, States: waitedOn, At: at(3 * time.Second)})
		require.NoError(t, err)
		require.Equal(t, 40, n)
	})
	w, err := s.FindWorkflow(ctx, "drained7", "p")
	require.NoError(t, err)
	require.True(t, at(3*time.Second).Equal(w.RunAt), "woken: %v", w.RunAt)
}

// TestWakeMergeWaitersUsesIndex checks with EXPLAIN that the drained check reads steps by ID
// and probes the (parent_step_id, state) index with both columns, on a table large enough for
// the optimizer to care: the probes then stop at the first entry, whatever the number of
// children.
func TestWakeMergeWaitersUsesIndex(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()
	var steps []int64
	for b := range 4 {
		steps = append(steps, parkOnMerge(t, s, fmt.Sprint("parent", b), 2000))
	}
	_, err := db.ExecContext(ctx, "ANALYZE TABLE "+s.workflows+", "+s.steps)
	require.NoError(t, err)
	query, args := s.drainedOwnersQuery(storage.MergeWakeRequest{StepIDs: steps, States: waitedOn, At: at(time.Minute)})
	plan := explain(t, db, query, args...)
	t.Logf("WakeMergeWaiters plan: %+v", plan)
	require.True(t, usesIndex(plan, "children"), "the check must probe the (parent_step_id, state) index: %+v", plan)
	require.True(t, usesIndex(plan, "by_id"), "steps are read by ID: %+v", plan)
	for _, r := range plan {
		require.NotEqual(t, "ALL", r.accessType, "no full scan of %s: %+v", r.table, plan)
	}

	// Every probe of the children index uses both key parts (EXPLAIN's JSON names them, on
	// MySQL and MariaDB alike).
	var doc string
	require.NoError(t, db.QueryRowContext(ctx, "EXPLAIN FORMAT=JSON "+query, args...).Scan(&doc))
	var tree any
	require.NoError(t, json.Unmarshal([]byte(doc), &tree))
	probes := 0
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["key"] == "children" {
				probes++
				require.Equal(t, []any{"parent_step_id", "state"}, x["used_key_parts"], "probe of the children index: %s", doc)
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(tree)
	require.Equal(t, len(waitedOn), probes, "one probe per state: %s", doc)

	n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: steps, States: waitedOn, At: at(time.Minute)})
	require.NoError(t, err)
	require.Zero(t, n)
}
