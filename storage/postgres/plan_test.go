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
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Query plans. pgx caches prepared statements, and after a few executions the server may
// switch a prepared statement to a generic plan, made without the parameters' values. The
// hot queries must use their indexes under both, so these tests look at both.

// lines collects the one-column text rows of EXPLAIN.
func lines(t *testing.T, rows pgx.Rows) string {
	t.Helper()
	defer rows.Close()
	var out []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		out = append(out, line)
	}
	require.NoError(t, rows.Err())
	return strings.Join(out, "\n")
}

// explainCustom returns EXPLAIN (options) of sql with args bound: the plan for these values.
func explainCustom(t *testing.T, s *Store, options, sql string, args pgx.StrictNamedArgs) string {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), "EXPLAIN ("+options+") "+sql, args)
	require.NoError(t, err)
	return lines(t, rows)
}

// explainGeneric returns EXPLAIN (COSTS OFF) of sql as a prepared statement under a generic
// plan, the plan a cached statement may end up with.
func explainGeneric(t *testing.T, s *Store, sql string, args pgx.StrictNamedArgs) string {
	t.Helper()
	ctx := t.Context()
	conn, err := s.pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	positional, values, err := args.RewriteQuery(ctx, conn.Conn(), sql, nil)
	require.NoError(t, err)
	lits := make([]string, len(values))
	for i, v := range values {
		lits[i] = literal(t, v)
	}
	_, err = conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	defer func() {
		_, _ = conn.Exec(context.Background(), "DEALLOCATE chrono_plan_test")
		_, _ = conn.Exec(context.Background(), "RESET plan_cache_mode")
	}()
	_, err = conn.Exec(ctx, "PREPARE chrono_plan_test AS "+positional)
	require.NoError(t, err)
	rows, err := conn.Query(ctx, "EXPLAIN (COSTS OFF) EXECUTE chrono_plan_test("+strings.Join(lits, ", ")+")")
	require.NoError(t, err)
	return lines(t, rows)
}

// literal spells a test argument as SQL.
func literal(t *testing.T, v any) string {
	t.Helper()
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	array := func(n int, typ string, elem func(i int) string) string {
		q := make([]string, n)
		for i := range q {
			q[i] = elem(i)
		}
		return "ARRAY[" + strings.Join(q, ", ") + "]::" + typ + "[]"
	}
	bytea := func(b []byte) string {
		if b == nil {
			return "NULL"
		}
		return fmt.Sprintf(`'\x%x'::bytea`, b)
	}
	ts := func(x pgtype.Timestamptz) string {
		if !x.Valid {
			return "NULL"
		}
		return quote(x.Time.UTC().Format(time.RFC3339Nano)) + "::timestamptz"
	}
	switch x := v.(type) {
	case nil:
		return "NULL"
	case pgtype.Interval:
		return fmt.Sprintf("'%d microseconds'::interval", x.Microseconds)
	case int:
		return strconv.Itoa(x)
	case int32:
		return strconv.Itoa(int(x))
	case int64:
		return strconv.FormatInt(x, 10)
	case string:
		return quote(x)
	case *string:
		if x == nil {
			return "NULL"
		}
		return quote(*x)
	case []byte:
		return bytea(x)
	case [][]byte:
		return array(len(x), "bytea", func(i int) string { return bytea(x[i]) })
	case []int32:
		return array(len(x), "int", func(i int) string { return strconv.Itoa(int(x[i])) })
	case []pgtype.Timestamptz:
		return array(len(x), "timestamptz", func(i int) string { return ts(x[i]) })
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = quote(s)
		}
		return "ARRAY[" + strings.Join(q, ", ") + "]::text[]"
	case []int64:
		q := make([]string, len(x))
		for i, n := range x {
			q[i] = strconv.FormatInt(n, 10)
		}
		return "ARRAY[" + strings.Join(q, ", ") + "]::bigint[]"
	case pgtype.Timestamptz:
		return ts(x)
	case pgtype.Text:
		if !x.Valid {
			return "NULL"
		}
		return quote(x.String)
	case pgtype.Int8:
		if !x.Valid {
			return "NULL"
		}
		return strconv.FormatInt(x.Int64, 10)
	}
	t.Fatalf("no literal for %T", v)
	return ""
}

// seedChildren fills the table as a busy store looks: 40,000 children of ten big branch steps
// (4,000 each under steps 1..10, a third each idle, running and completed), 40,000 children
// of 2,000 small branch steps (1001..3000), and 20,000 completed roots, inserted straight
// into the table; then it analyzes the table.
func seedChildren(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	_, err := s.pool.Exec(ctx, `
		INSERT INTO `+s.workflows+` (name, key, state, run_at, parent_step_id, created_at, updated_at)
		SELECT 'child', 'c' || g, (ARRAY['idle', 'running', 'completed'])[1 + g % 3],
			CASE WHEN g % 3 < 2 THEN now() END,
			CASE WHEN g <= 40000 THEN 1 + g % 10 ELSE 1001 + g % 2000 END, now(), now()
		FROM generate_series(1, 80000) AS g`)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `
		INSERT INTO `+s.workflows+` (name, key, state, created_at, updated_at, finished_at)
		SELECT 'root', 'r' || g, 'completed', now(), now(), now() FROM generate_series(1, 20000) AS g`)
	require.NoError(t, err)
	// ANALYZE without VACUUM: the visibility map stays unset, as on a busy table, which
	// makes index-only scans look expensive to the planner.
	_, err = s.pool.Exec(ctx, `ANALYZE `+s.workflows)
	require.NoError(t, err)
}

// seedSteps gives every workflow of the table a step record and an error record.
func seedSteps(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.steps+` (workflow_id, name, state, created_at, updated_at)
		SELECT id, 's', 'completed', now(), now() FROM `+s.workflows)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `INSERT INTO `+s.errors+` (workflow_id, message, created_at) SELECT id, 'e', now() FROM `+s.workflows)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `ANALYZE `+s.steps+`, `+s.errors)
	require.NoError(t, err)
}

// TestGenericPlansUseIndexes: every unit reads the rows it needs through an index, also
// under a generic plan of its cached statement, on tables of 100,000 workflows and steps.
func TestGenericPlansUseIndexes(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedChildren(t, s)
	seedSteps(t, s)
	l := storage.Lease{WorkflowID: 5000, Token: 1}
	now := base(0)
	steps := []storage.Step{{Name: "a", State: storage.StepCompleted}, {Name: "b", State: storage.StepPending}}
	commit := storage.Commit{Steps: steps, Values: []byte(`{}`), Errors: []storage.ErrorRecord{{Message: "m"}}, Now: now}
	finish := commitArgs(l, commit)
	finish["state"], finish["output"], finish["attempt"], finish["run_at"] = "idle", []byte(nil), int32(0), ts(now)
	finish["wait_kind"], finish["wait_step"], finish["wait_data"] = "", "", []byte(nil)
	spawn := leaseArgs(l, now)
	spawn["branch"] = "a"
	stepArgs(spawn, steps)
	spawn["child_names"], spawn["child_keys"] = []string{"c"}, []string{"k"}
	spawn["child_inputs"], spawn["child_traces"], spawn["child_tags"] = [][]byte{nil}, [][]byte{nil}, []string{`{"team":"a"}`}
	spawn["child_run_at"], spawn["child_flows"] = []pgtype.Timestamptz{{}}, []string{"f"}
	retryArgs := pgx.StrictNamedArgs{"id": int64(5000), "now": ts(now)}
	stepArgs(retryArgs, steps)
	heartbeat := pgx.StrictNamedArgs{"id": l.WorkflowID, "token": l.Token, "ttl": interval(time.Minute), "run_at": ts(now)}
	for _, q := range []struct {
		name string
		sql  string
		args pgx.StrictNamedArgs
	}{
		{"Load", s.q.load, pgx.StrictNamedArgs{"id": int64(5000)}},
		{"SaveSteps", s.q.saveSteps, commitArgs(l, commit)},
		{"FinishRun", s.q.finishRun, finish},
		{"SpawnBatch", s.q.spawn, spawn},
		{"Retry", s.q.retry, retryArgs},
		{"Heartbeat", s.q.heartbeat, heartbeat},
		{"Release", s.q.release, leaseArgs(l, now)},
		{"Wake", s.q.wake, pgx.StrictNamedArgs{"id": int64(5000), "at": ts(now)}},
		{"Cancel", s.q.cancel, pgx.StrictNamedArgs{"id": int64(5000), "now": ts(now)}},
		{"ListErrors", s.q.listErrors, pgx.StrictNamedArgs{"id": int64(5000), "limit": 100}},
		{"DeleteFinished", s.q.deleteFinished, pgx.StrictNamedArgs{"before": ts(now), "limit": 1000, "budget": 1000, "states": []string{"completed", "failed", "cancelled"}}},
		{"DeleteFinished emptied", s.q.deleteEmptied, pgx.StrictNamedArgs{"ids": []int64{1, 2, 3}}},
		{"CreateWorkflow", s.q.create, pgx.StrictNamedArgs{
			"name": "n", "key": "k", "input": []byte(nil), "trace": []byte(nil), "tags": "", "flow": "f",
			"parent": pgtype.Int8{}, "run_at": ts(now), "now": ts(now),
		}},
	} {
		plan := explainGeneric(t, s, q.sql, q.args)
		if testing.Verbose() {
			t.Logf("generic plan of %s:\n%s", q.name, plan)
		}
		require.NotContains(t, plan, "Seq Scan", "generic plan of %s:\n%s", q.name, plan)
		if q.name == "DeleteFinished" {
			require.NotContains(t, plan, "Sort", "generic plan of %s: no sort of every finished row:\n%s", q.name, plan)
		}
	}
}

// TestCountChildrenUsesIndex: the capped count is answered from the (parent_step_id, state)
// index, with equality on both columns, and its scans stop at the cap however many children
// match, under a custom and a generic plan.
func TestCountChildrenUsesIndex(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedChildren(t, s)
	index := s.prefix + "workflows_children"
	bothColumns := regexp.MustCompile(`Index Cond: \(\(parent_step_id = \S+\) AND \(state = \S+\)\)`)

	for _, tc := range []struct {
		steps   []int64
		states  []string
		capped  int
		matches string
	}{
		{[]int64{3, 4}, []string{"idle", "running"}, 100, "5,333"},
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, []string{"idle", "running", "stalled"}, storage.MaxCountCap, "26,667"},
	} {
		args := pgx.StrictNamedArgs{"step_ids": tc.steps, "states": tc.states, "cap": tc.capped}
		plan := explainCustom(t, s, "ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF", s.q.countChildren, args)
		t.Logf("plan of CountChildren over %s matching children with cap %d:\n%s", tc.matches, tc.capped, plan)
		require.Contains(t, plan, index, "the count uses the children index")
		require.Regexp(t, bothColumns, plan, "equality on parent step and state")
		// Each scan node reports how many index entries it produced: at most the cap in all.
		total := 0
		for _, m := range regexp.MustCompile(`(?:Index (?:Only )?Scan using|Bitmap Index Scan on) `+index+` .*actual rows=(\d+) loops=(\d+)`).FindAllStringSubmatch(plan, -1) {
			rows, _ := strconv.Atoi(m[1])
			loops, _ := strconv.Atoi(m[2])
			total += rows * loops
		}
		require.NotZero(t, total, "an index scan node on %s", index)
		require.LessOrEqual(t, total, tc.capped, "the index scans stop at the cap")

		generic := explainGeneric(t, s, s.q.countChildren, args)
		t.Logf("generic plan of CountChildren:\n%s", generic)
		require.Contains(t, generic, index, "the generic plan uses the children index")
		require.Regexp(t, bothColumns, generic, "the generic plan has equality on parent step and state")
	}

	const capped = 100
	n, err := s.CountChildren(t.Context(), storage.ChildQuery{StepIDs: []int64{3, 4}, States: []storage.State{storage.StateIdle, storage.StateRunning}, Cap: capped})
	require.NoError(t, err)
	require.Equal(t, capped, n)
	n, err = s.CountChildren(t.Context(), storage.ChildQuery{StepIDs: []int64{3, 3}, States: []storage.State{storage.StateCompleted}, Cap: storage.MaxCountCap})
	require.NoError(t, err)
	require.Equal(t, 1334, n, "completed children of step 3: g = 2, 32, 62, ..., 39992")
}

// indexOrder matches a plan that locks rows (FOR UPDATE SKIP LOCKED) straight from a scan
// of index, in the index's order: no sort of the due rows comes between, only the gate of the
// plain claim (a one-time filter: the names have no flow). (The fast claim sorts only the
// rows it locked, to merge them with the governed rows in priority order.)
func indexOrder(index string) *regexp.Regexp {
	return regexp.MustCompile(`LockRows\n(\s+->  Result\n\s+One-Time Filter: .*\n)?\s+->  Index Scan using ` + regexp.QuoteMeta(index) + ` `)
}

// TestClaimUsesRunnableIndex: claiming reads the runnable partial index in (run_at, id)
// order, with no sort of the due rows, and updates the claimed rows by primary key, under a
// custom and a generic plan.
func TestClaimUsesRunnableIndex(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedChildren(t, s)
	for _, names := range [][]string{{}, {"child", "other"}} {
		args := pgx.StrictNamedArgs{"owner": "w", "ttl": interval(time.Minute), "run_at": ts(base(time.Minute)), "now": ts(base(0)), "names": names, "limit": 64}
		for kind, plan := range map[string]string{
			"custom":  explainCustom(t, s, "COSTS OFF", s.q.claim, args),
			"generic": explainGeneric(t, s, s.q.claim, args),
		} {
			t.Logf("%s plan of Claim with names %v:\n%s", kind, names, plan)
			what := fmt.Sprintf("%s plan, names %v", kind, names)
			require.Regexp(t, indexOrder(s.prefix+"workflows_runnable"), plan, "%s: FOR UPDATE SKIP LOCKED of rows in the index's run_at order, no sort", what)
			require.Contains(t, plan, "Index Scan using "+s.prefix+"workflows_pkey", "%s: claimed rows are updated by key", what)
			require.NotContains(t, plan, "Seq Scan on "+s.prefix+"workflows", "%s: (the flows' small tables may be read whole)", what)
		}
	}
}

// seedMessages gives 2,000 of the seeded workflows 100 messages each on three topics, all but
// the last few of each topic consumed, as a long-lived mailbox looks; then it analyzes them.
func seedMessages(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	_, err := s.pool.Exec(ctx, `
		INSERT INTO `+s.messages+` (workflow_id, topic, msg_key, payload, created_at, consumed_by, consumed_at)
		SELECT w, 'topic' || (g % 3), CASE WHEN g % 2 = 0 THEN 'key' || g END, '\x31', now(),
			CASE WHEN g < 90 THEN 'recv' || g ELSE '' END, CASE WHEN g < 90 THEN now() END
		FROM generate_series(1, 2000) AS w CROSS JOIN generate_series(1, 100) AS g`)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `ANALYZE `+s.messages)
	require.NoError(t, err)
}

// TestMessagePlans: the mailbox statements and CreateWorkflows read through indexes under a
// custom and a generic plan: ConsumeMessage takes the next message of a topic with one seek
// of the partial messages_next index (no sort), SendMessage finds the workflow by key and a
// keyed message by the (workflow_id, msg_key) index, and CreateWorkflows looks up existing
// names and keys by the unique index. A tag filter is the exception the contract allows:
// no index serves it, so ListWorkflows walks the primary key in ID order and filters, and
// stops at the page's limit; its plan is logged.
func TestMessagePlans(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	seedChildren(t, s)
	seedMessages(t, s)
	l := storage.Lease{WorkflowID: 1500, Token: 1}
	now := base(0)
	consume := commitArgs(l, storage.Commit{Steps: []storage.Step{{Name: "a", State: storage.StepCompleted}}, Now: now})
	consume["topic"], consume["step"] = "topic1", "recv$x"
	send := pgx.StrictNamedArgs{
		"id": int64(1500), "topic": "topic1", "key": pgtype.Text{String: "k", Valid: true}, "payload": []byte(`1`),
		"now": ts(now), "wait_kind": "message", "topic_data": []byte("topic1"),
	}
	batch := createBatchArgs([]storage.NewWorkflow{
		{Name: "child", Key: "c5", Now: now}, {Name: "new", Key: "n", Tags: map[string]string{"a": "b"}, Now: now},
	}, []int{0, 1})
	next := s.prefix + "messages_next"
	for _, q := range []struct {
		name, sql string
		args      pgx.StrictNamedArgs
		want      []string
	}{
		{"ConsumeMessage", s.q.consumeMessage, consume, []string{"Index Scan using " + next, "Index Cond: ((workflow_id = "}},
		{"SendMessage", s.q.sendMessage, send, []string{s.prefix + "messages_workflow_key", s.prefix + "workflows_pkey"}},
		{"CreateWorkflows", s.q.createBatch, batch, []string{s.prefix + "workflows_name_key", "Index Cond: ((name = "}},
	} {
		for kind, plan := range map[string]string{
			"custom":  explainCustom(t, s, "COSTS OFF", q.sql, q.args),
			"generic": explainGeneric(t, s, q.sql, q.args),
		} {
			what := fmt.Sprintf("%s plan of %s", kind, q.name)
			if testing.Verbose() {
				t.Logf("%s:\n%s", what, plan)
			}
			require.NotContains(t, plan, "Seq Scan", "%s:\n%s", what, plan)
			for _, want := range q.want {
				require.Contains(t, plan, want, "%s:\n%s", what, plan)
			}
			if q.name == "ConsumeMessage" {
				require.NotContains(t, plan, "Sort", "%s: the index gives ID order:\n%s", what, plan)
				require.Regexp(t, `Index Scan using `+next+`[^\n]*\n\s+Index Cond: \(\(workflow_id = \S+\) AND \(topic = \S+\)\)`, plan,
					"%s: equality on workflow and topic:\n%s", what, plan)
			}
		}
	}

	// A batch of 5,000 names and keys is still looked up by key, not by a scan of the
	// table's 100,000 rows.
	big := make([]storage.NewWorkflow, storage.MaxCreateBatch)
	pick := make([]int, len(big))
	for i := range big {
		big[i], pick[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("c%d", i*7), Now: now}, i
	}
	plan := explainCustom(t, s, "COSTS OFF", s.q.createBatch, createBatchArgs(big, pick))
	t.Logf("custom plan of CreateWorkflows of %d:\n%s", len(big), plan)
	require.NotContains(t, plan, "Seq Scan", "custom plan of a full CreateWorkflows batch")
	require.Regexp(t, `Index Scan using `+s.prefix+`workflows_name_key [^\n]*\n\s+Index Cond: \(\(name = `, plan,
		"custom plan of a full CreateWorkflows batch: one probe per name and key, not a walk of the index")

	sql, args := s.listQuery(storage.ListFilter{Tags: map[string]string{"team": "a"}, Limit: 100})
	for kind, plan := range map[string]string{
		"custom":  explainCustom(t, s, "COSTS OFF", sql, args),
		"generic": explainGeneric(t, s, sql, args),
	} {
		// Allowed to scan (no index on tags): it walks the primary key in ID order,
		// filtering on the tags, and stops once the page is full.
		t.Logf("%s plan of ListWorkflows by tag (a scan, as the contract allows):\n%s", kind, plan)
		require.Contains(t, plan, "tags @>", kind)
	}
}
