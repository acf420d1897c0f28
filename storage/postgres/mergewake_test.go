package postgres

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

var waitedOn = []storage.State{storage.StateIdle, storage.StateRunning, storage.StateFailed, storage.StateStalled, storage.StateCancelled}

// TestStatementsWakeMergeWaiters: waking the parents of drained branches is one statement,
// whether it wakes nothing (a branch of 2,000 idle children) or 40 parents among
// MaxMergeWake step IDs.
func TestStatementsWakeMergeWaiters(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	park := func(name string, children int) int64 {
		t.Helper()
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: name, Key: "p", Now: base(0)})
		require.NoError(t, err)
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, Names: []string{name}, TTL: time.Minute, Now: base(0)})
		require.NoError(t, err)
		require.Len(t, got, 1)
		kids := make([]storage.NewWorkflow, children)
		for i := range kids {
			kids[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("%s$b$c_%d", name, i)}
		}
		res, err := s.SpawnBatch(ctx, got[0].Lease(), storage.SpawnRequest{
			Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Children: kids, Now: base(time.Second),
		})
		require.NoError(t, err)
		require.NoError(t, s.FinishRun(ctx, got[0].Lease(), storage.Finish{
			Commit: storage.Commit{Now: base(2 * time.Second)}, State: storage.StateIdle, RunAt: base(time.Hour),
			Wait: storage.Wait{Kind: storage.WaitMerge, Step: "merge$b"},
		}))
		return res.BranchStepID
	}
	busy := park("busy", 2000)
	var drained []int64
	for i := range 40 {
		drained = append(drained, park(fmt.Sprint("drained", i), 0))
	}

	s.requireOne("WakeMergeWaiters of a branch with 2,000 idle children", func(ctx context.Context) {
		n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{busy}, States: waitedOn, At: base(3 * time.Second)})
		require.NoError(t, err)
		require.Zero(t, n)
	})
	ids := append([]int64{busy}, drained...)
	for i := int64(1); len(ids) < storage.MaxMergeWake; i++ {
		ids = append(ids, 1<<40+i)
	}
	s.requireOne("WakeMergeWaiters of MaxMergeWake step IDs waking 40 parents", func(ctx context.Context) {
		n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: ids, States: waitedOn, At: base(3 * time.Second)})
		require.NoError(t, err)
		require.Equal(t, 40, n)
	})
}

// TestWakeMergeWaitersUsesIndex: the drained check probes the (parent_step_id, state) index
// with equality on both columns and reads at most one entry per step and state, so a step
// with 20,000 completed children costs what one with none does, and reads each step's owner
// by primary key, under a custom and a generic plan, on tables of 120,000 workflows and
// steps.
func TestWakeMergeWaitersUsesIndex(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedChildren(t, s)
	seedSteps(t, s)
	ctx := t.Context()
	// A parent parked on a merge owns ten branch steps (1,000 children each, idle, running
	// and completed) and one whose 20,000 children all completed. The step IDs are past those
	// seedSteps gave.
	const big, drained = 1_000_000, 1_005_000
	var parent int64
	require.NoError(t, s.pool.QueryRow(ctx, `
		INSERT INTO `+s.workflows+` (name, key, state, run_at, wait_kind, created_at, updated_at)
		VALUES ('parent', 'p', 'idle', now() + interval '1 hour', 'merge', now(), now()) RETURNING id`).Scan(&parent))
	_, err := s.pool.Exec(ctx, `
		INSERT INTO `+s.steps+` (id, workflow_id, name, state, created_at, updated_at) OVERRIDING SYSTEM VALUE
		SELECT g, $1, 'branch$b' || g, 'completed', now(), now()
		FROM unnest(ARRAY[$2 + 1, $2 + 2, $2 + 3, $2 + 4, $2 + 5, $2 + 6, $2 + 7, $2 + 8, $2 + 9, $2 + 10, $3]) AS g`,
		parent, int64(big), int64(drained))
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `
		INSERT INTO `+s.workflows+` (name, key, state, parent_step_id, created_at, updated_at)
		SELECT 'child', 'big' || g, (ARRAY['idle', 'running', 'completed'])[1 + g % 3], $1 + 1 + g % 10, now(), now()
		FROM generate_series(1, 10000) AS g`, int64(big))
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `
		INSERT INTO `+s.workflows+` (name, key, state, parent_step_id, created_at, updated_at, finished_at)
		SELECT 'child', 'done' || g, 'completed', $1, now(), now(), now() FROM generate_series(1, 20000) AS g`, int64(drained))
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `ANALYZE `+s.workflows+`, `+s.steps)
	require.NoError(t, err)
	steps := []int64{drained}
	for i := range int64(10) {
		steps = append(steps, big+1+i)
	}

	index := s.prefix + "workflows_children"
	bothColumns := regexp.MustCompile(`Index Cond: \(\(parent_step_id = \S+\) AND \(state = \S+\)\)`)
	args := pgx.StrictNamedArgs{"step_ids": steps, "states": strs(waitedOn), "at": ts(time.Now()), "merge": string(storage.WaitMerge)}

	// EXPLAIN ANALYZE runs the statement: in a transaction rolled back afterwards.
	tx, err := s.pool.Begin(ctx)
	require.NoError(t, err)
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "+s.q.wakeMergeWaiters, args)
	require.NoError(t, err)
	plan := lines(t, rows)
	require.NoError(t, tx.Rollback(ctx))
	t.Logf("plan of WakeMergeWaiters over 11 steps, one with 20,000 completed children:\n%s", plan)
	require.Contains(t, plan, index, "the check uses the children index")
	require.Regexp(t, bothColumns, plan, "equality on parent step and state")
	require.Contains(t, plan, "Index Scan using "+s.prefix+"steps_pkey", "a step's owner is read by primary key")
	total := 0
	for _, m := range regexp.MustCompile(`(?:Index (?:Only )?Scan using|Bitmap Index Scan on) `+index+` .*actual rows=(\d+) loops=(\d+)`).FindAllStringSubmatch(plan, -1) {
		rows, _ := strconv.Atoi(m[1])
		loops, _ := strconv.Atoi(m[2])
		total += rows * loops
	}
	require.LessOrEqual(t, total, len(steps)*len(waitedOn), "at most one index entry per step and state")

	generic := explainGeneric(t, s, s.q.wakeMergeWaiters, args)
	t.Logf("generic plan of WakeMergeWaiters:\n%s", generic)
	require.Contains(t, generic, index, "the generic plan uses the children index")
	require.Regexp(t, bothColumns, generic, "the generic plan has equality on parent step and state")
	require.Contains(t, generic, "Index Scan using "+s.prefix+"steps_pkey", "the generic plan reads owners by primary key")
	require.NotContains(t, generic, "Seq Scan", "the generic plan scans no table")

	n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: steps, States: waitedOn, At: time.Now()})
	require.NoError(t, err)
	require.Equal(t, 1, n, "one step drained: its owner is woken")
	n, err = s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: steps[1:], States: waitedOn, At: time.Now()})
	require.NoError(t, err)
	require.Zero(t, n, "the big branches still have incomplete children")
}
