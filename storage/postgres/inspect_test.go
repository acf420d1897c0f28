package postgres

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// TestStatementsInspect: each operator query, and a listing by key prefix in descending
// pages, is one statement.
func TestStatementsInspect(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	for i := range 5 {
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "inspect", Key: fmt.Sprint("k", i), ParentStepID: 7, Now: base(0)})
		require.NoError(t, err)
	}
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 2, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.NoError(t, s.FinishRun(ctx, got[0].Lease(), storage.Finish{Commit: storage.Commit{Now: base(time.Second)}, State: storage.StateCompleted}))

	s.requireOne("CountStates", func(ctx context.Context) {
		c, err := s.CountStates(ctx, storage.CountStatesQuery{})
		require.NoError(t, err)
		require.Equal(t, 5, c.Counted)
	})
	s.requireOne("CountStates of a name, sampled", func(ctx context.Context) {
		c, err := s.CountStates(ctx, storage.CountStatesQuery{Name: "inspect", Sample: 2})
		require.NoError(t, err)
		require.Equal(t, 2, c.Counted)
		require.True(t, c.Sampled)
	})
	s.requireOne("BranchCounts", func(ctx context.Context) {
		b, err := s.BranchCounts(ctx, storage.BranchQuery{StepID: 7})
		require.NoError(t, err)
		require.Equal(t, 3, b.Count(storage.StateIdle))
		require.Equal(t, 1, b.Count(storage.StateRunning))
		require.Equal(t, 1, b.Count(storage.StateCompleted))
		require.Len(t, b.RecentFinished, 1)
	})
	s.requireOne("Backlog", func(ctx context.Context) {
		b, err := s.Backlog(ctx, base(time.Hour), 0)
		require.NoError(t, err)
		require.Equal(t, 3, b.Due)
	})
	s.requireOne("ListWorkflows by key prefix, newest first, before an ID", func(ctx context.Context) {
		page, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "inspect", KeyPrefix: "k", Desc: true, BeforeID: 1 << 40, Limit: 2})
		require.NoError(t, err)
		require.Len(t, page, 2)
		require.Greater(t, page[0].ID, page[1].ID)
	})
}

// scanRows returns the actual rows an EXPLAIN ANALYZE plan reports for the scan nodes of
// index, each node's rows times its loops, added up.
func scanRows(t *testing.T, plan, index string) int {
	t.Helper()
	total, nodes := 0, 0
	re := regexp.MustCompile(`(?:Index (?:Only )?Scan(?: Backward)? using|Bitmap Index Scan on) ` + index + ` .*actual rows=(\d+) loops=(\d+)`)
	for _, m := range re.FindAllStringSubmatch(plan, -1) {
		rows, _ := strconv.Atoi(m[1])
		loops, _ := strconv.Atoi(m[2])
		total += rows * loops
		nodes++
	}
	require.NotZero(t, nodes, "a scan node on %s:\n%s", index, plan)
	return total
}

// sortedRows returns the largest number of rows a Sort node of an EXPLAIN ANALYZE plan
// reports (0 without one).
func sortedRows(plan string) int {
	most := 0
	for _, m := range regexp.MustCompile(`Sort \(actual rows=(\d+)`).FindAllStringSubmatch(plan, -1) {
		n, _ := strconv.Atoi(m[1])
		most = max(most, n)
	}
	return most
}

const analyze = "ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF"

// TestInspectPlans: on a table of 100,000 workflows (seedChildren), CountStates walks the
// primary key backwards and stops one row past its sample, BranchCounts reads the children
// index with equality on step and state and stops at its cap, and Backlog walks the runnable
// index and stops one row past its probe, under a custom plan (analyzed: the rows each scan
// produced are counted) and a generic one: no Seq Scan, and no Sort but of the few rows
// already read. The answers agree with plain SQL over the same rows.
func TestInspectPlans(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedChildren(t, s)
	ctx := t.Context()
	pkey, children, runnable := s.prefix+"workflows_pkey", s.prefix+"workflows_children", s.prefix+"workflows_runnable"

	check := func(what, sql string, args pgx.StrictNamedArgs, index string, maxRows, maxSorted int) {
		t.Helper()
		plan := explainCustom(t, s, analyze, sql, args)
		t.Logf("custom plan of %s:\n%s", what, plan)
		require.NotContains(t, plan, "Seq Scan on "+s.prefix+"workflows", "custom plan of %s", what)
		require.LessOrEqual(t, scanRows(t, plan, index), maxRows, "custom plan of %s: the scans of %s stop early:\n%s", what, index, plan)
		require.LessOrEqual(t, sortedRows(plan), maxSorted, "custom plan of %s: sorts only what it read:\n%s", what, plan)
		generic := explainGeneric(t, s, sql, args)
		t.Logf("generic plan of %s:\n%s", what, generic)
		require.NotContains(t, generic, "Seq Scan on "+s.prefix+"workflows", "generic plan of %s", what)
		require.Contains(t, generic, index, "generic plan of %s", what)
	}

	// CountStates: the newest 1,000 (and one more), by the primary key, of all and of a name.
	const sample = 1000
	check("CountStates", s.q.countStates, pgx.StrictNamedArgs{"limit": sample + 1}, pkey, sample+1, 0)
	check("CountStates of a name", s.q.countStatesName, pgx.StrictNamedArgs{"limit": sample + 1, "name": "child"}, pkey, sample+1+20_000, 0)
	for _, name := range []string{"", "child", "root"} {
		got, err := s.CountStates(ctx, storage.CountStatesQuery{Name: name, Sample: sample})
		require.NoError(t, err)
		require.True(t, got.Sampled, "name %q", name)
		require.Equal(t, sample, got.Counted, "name %q", name)
		rows, err := s.pool.Query(ctx, `SELECT name, state, count(*) FROM (SELECT name, state FROM `+s.workflows+`
			WHERE $1 = '' OR name = $1 ORDER BY id DESC LIMIT $2) AS t GROUP BY name, state`, name, sample)
		require.NoError(t, err)
		want, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.StateCount, error) {
			var c storage.StateCount
			var n int64
			err := r.Scan(&c.Name, &c.State, &n)
			c.Count = int(n)
			return c, err
		})
		require.NoError(t, err)
		storage.SortStateCounts(want)
		require.Equal(t, want, got.Counts, "name %q", name)
	}

	// BranchCounts: step 3 has 4,000 children, a third each idle, running and completed.
	const capped, recent = 100, 200
	branchArgs := pgx.StrictNamedArgs{"step": int64(3), "cap": capped, "recent": recent, "states": strs(storage.States), "final": finalStates}
	check("BranchCounts", s.q.branchCounts, branchArgs, children, len(storage.States)*capped+len(finalStates)*recent, len(finalStates)*recent)
	generic := explainGeneric(t, s, s.q.branchCounts, branchArgs)
	require.Regexp(t, `Index Cond: \(\(parent_step_id = \S+\) AND \(state = \S+\)\)`, generic, "equality on step and state")
	b, err := s.BranchCounts(ctx, storage.BranchQuery{StepID: 3, Cap: 1400, Recent: 5})
	require.NoError(t, err)
	require.Equal(t, 1333, b.Count(storage.StateIdle), "g = 12, 42, ...: g %% 3 = 0")
	require.Equal(t, 1333, b.Count(storage.StateRunning))
	require.Equal(t, 1334, b.Count(storage.StateCompleted))
	require.Empty(t, b.Capped)
	require.Len(t, b.RecentFinished, 5)
	b, err = s.BranchCounts(ctx, storage.BranchQuery{StepID: 3, Cap: 1000})
	require.NoError(t, err)
	require.Equal(t, []storage.State{storage.StateIdle, storage.StateRunning, storage.StateCompleted}, b.Capped)

	// Backlog: about 53,000 rows are due, idle and running (the running ones without a
	// lease, so not runnable); the probe reads BacklogProbe of them and one more (the window
	// function reads one row ahead). The walks of the runnable index and of each flow's
	// pairs in the governed one are merged in order. (The flows' small tables may be read
	// whole: only a scan of the workflows table fails.)
	now := time.Now().Add(time.Hour)
	backlogArgs := pgx.StrictNamedArgs{"now": ts(now), "probe": storage.BacklogProbe, "probe_rows": storage.BacklogProbe + 1, "limit": 100}
	check("Backlog", s.q.backlog, backlogArgs, runnable, storage.BacklogProbe+2, 101)
	bl, err := s.Backlog(ctx, now, 0)
	require.NoError(t, err)
	require.True(t, bl.Probed)
	var due int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'idle') FROM (SELECT state FROM `+s.workflows+`
		WHERE state IN ('idle', 'running') AND run_at IS NOT NULL ORDER BY run_at, id LIMIT $1) AS t`, storage.BacklogProbe).Scan(&due))
	require.Equal(t, due, bl.Due)
	require.Empty(t, bl.Expired, "the running rows have no lease")

	// Descending pages walk the primary key (or the children index) backwards: no sort.
	for _, f := range []storage.ListFilter{
		{Desc: true, BeforeID: 50_000},
		{Desc: true, Name: "root"},
		{Desc: true, AfterID: 10, BeforeID: 60_000, States: []storage.State{storage.StateCompleted}},
		{Desc: true, ParentStepID: 3, States: []storage.State{storage.StateIdle}, BeforeID: 30_000},
	} {
		sql, args := s.listQuery(f)
		index := pkey
		if f.ParentStepID != 0 {
			index = children
		}
		what := fmt.Sprintf("ListWorkflows %+v", f)
		check(what, sql, args, index, storage.DefaultListLimit*2, 0)
		require.Contains(t, explainGeneric(t, s, sql, args), "Index Scan Backward using "+index, what)
	}
}

// seedNames fills the table with 100,000 workflows of 50 names, 2,000 keys each ("key-0" to
// "key-1999"), and analyzes it.
func seedNames(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	_, err := s.pool.Exec(ctx, `
		INSERT INTO `+s.workflows+` (name, key, state, created_at, updated_at, finished_at)
		SELECT 'name' || (g % 50), 'key-' || (g / 50), 'completed', now(), now(), now()
		FROM generate_series(0, 99999) AS g`)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `ANALYZE `+s.workflows)
	require.NoError(t, err)
}

// TestKeyPrefixPlan: a listing by key prefix finds the keys of the name through the (name,
// key) index, not by a walk of the table, under a custom and a generic plan, and pages
// through them in both directions.
func TestKeyPrefixPlan(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedNames(t, s)
	ctx := t.Context()
	nameKey, pkey := s.prefix+"workflows_name_key", s.prefix+"workflows_pkey"
	for _, f := range []storage.ListFilter{
		{Name: "name7", KeyPrefix: "key-12"},
		{Name: "name7", KeyPrefix: "key-1", Desc: true, BeforeID: 60_000, Limit: 10},
		{Name: "name7", KeyPrefix: "key-", AfterID: 100},
	} {
		sql, args := s.listQuery(f)
		what := fmt.Sprintf("ListWorkflows %+v", f)
		plan := explainCustom(t, s, analyze, sql, args)
		t.Logf("custom plan of %s:\n%s", what, plan)
		generic := explainGeneric(t, s, sql, args)
		t.Logf("generic plan of %s:\n%s", what, generic)
		for kind, p := range map[string]string{"custom": plan, "generic": generic} {
			require.NotContains(t, p, "Seq Scan", "%s plan of %s", kind, what)
			require.Regexp(t, `(Index|Bitmap Index) (Only )?Scan (using|on) `+nameKey+`[^\n]*\n\s+Index Cond: \(name = `, p, "%s plan of %s", kind, what)
			require.Contains(t, p, pkey, "%s plan of %s: the page is read by primary key", kind, what)
		}
		require.LessOrEqual(t, scanRows(t, plan, nameKey), 2000, "custom plan of %s: the keys of the name only", what)
	}

	page, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "name7", KeyPrefix: "key-12", Desc: true, Limit: 3})
	require.NoError(t, err)
	var keys []string
	for _, w := range page {
		keys = append(keys, w.Key)
	}
	require.Equal(t, []string{"key-1299", "key-1298", "key-1297"}, keys)
	all, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "name7", KeyPrefix: "key-12", Limit: 1000})
	require.NoError(t, err)
	require.Len(t, all, 111, "key-12 and key-120 to key-1299")
	require.True(t, slices.IsSortedFunc(all, func(a, b storage.Workflow) int { return int(a.ID - b.ID) }))
}
