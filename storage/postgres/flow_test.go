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

// requireBatch requires that fn sent exactly n statements, every one in one pipelined batch:
// one round trip, one implicit transaction (no BEGIN or COMMIT).
func (c countingStore) requireBatch(what string, n int, fn func(ctx context.Context)) {
	c.t.Helper()
	sql := c.count(fn)
	require.Len(c.t, sql, n, "%s: want %d statements in one batch, got %d:\n%s", what, n, len(sql), strings.Join(sql, "\n"))
	for _, q := range sql {
		require.True(c.t, strings.HasPrefix(q, "batch: "), "%s: every statement rides the one batch: %s", what, q)
	}
	c.t.Logf("%s: %d statements in one batch", what, n)
}

// createFlows creates n workflows of name governed by flow, due at base(0).
func createFlows(t *testing.T, s storage.Storage, name, flow string, n int) {
	t.Helper()
	for start := 0; start < n; start += storage.MaxCreateBatch {
		var ws []storage.NewWorkflow
		for i := start; i < min(n, start+storage.MaxCreateBatch); i++ {
			ws = append(ws, storage.NewWorkflow{Name: name, Key: fmt.Sprint(i), Now: base(0), Flow: flow})
		}
		_, _, err := s.CreateWorkflows(t.Context(), ws)
		require.NoError(t, err)
	}
}

// TestStatementsClaimFlow: a claim is one round trip on every path. Names without a flow key
// are claimed with the plain statement and names of flows without limits with the fast one,
// one statement each; with a limited flow among them it is the limited path's three
// statements (the plan setting, the lock, the claim) pipelined in one batch. A claim that guessed a lower path (the first claim of its names, or
// a limit set by another process) takes two round trips once, then the path it needs; once
// the limit is gone, the limited path finds so and the next claim is one statement again.
// PutFlow is one batch, DeleteFlow and ListFlows one statement each.
func TestStatementsClaimFlow(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	other := storeIn(t, s.pool, s.Schema()) // another process's store: its PutFlow leaves s's cache alone
	ctx := t.Context()
	claim := func(ctx context.Context, limit int, names ...string) []storage.Workflow {
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: limit, Names: names, TTL: time.Minute, Now: base(time.Minute)})
		require.NoError(t, err)
		return got
	}
	// twoTrips requires that fn sent a statement that claimed nothing, then the one it needs.
	twoTrips := func(what string, want int, fn func(ctx context.Context)) {
		t.Helper()
		sql := s.count(fn)
		require.Len(t, sql, want, "%s: a lower path's statement, then the needed one:\n%s", what, strings.Join(sql, "\n"))
		require.False(t, strings.HasPrefix(sql[0], "batch: "), "%s: %s", what, sql[0])
		t.Logf("%s: %d statements in two round trips", what, want)
	}

	s.requireBatch("PutFlow", 2, func(ctx context.Context) {
		_, wrote, err := s.PutFlow(ctx, storage.Flow{Key: "prio", Priority: 5}, false, base(0))
		require.NoError(t, err)
		require.True(t, wrote)
	})
	createFlows(t, s, "st.prio", "prio", 10)
	createFlows(t, s, "st.lim", "lim", 10)
	createFlows(t, s, "st.free", "", 20)
	s.requireOne("Claim of names without a flow key (the plain path)", func(ctx context.Context) {
		require.Len(t, claim(ctx, 2, "st.free"), 2)
	})
	twoTrips("First Claim of a flow with priority only and of no flow", 2, func(ctx context.Context) {
		got := claim(ctx, 1, "st.prio", "st.free")
		require.Equal(t, "prio", got[0].Flow, "the higher priority first")
	})
	s.requireOne("Claim of a flow with priority only and of no flow", func(ctx context.Context) {
		got := claim(ctx, 4, "st.prio", "st.free")
		require.Equal(t, map[string]int{"st.prio": 4}, countNames(got), "the higher priority first")
	})
	twoTrips("First Claim of a key without a stored flow", 2, func(ctx context.Context) {
		require.Len(t, claim(ctx, 2, "st.lim"), 2)
	})
	s.requireOne("Claim of a key without a stored flow", func(ctx context.Context) {
		require.Len(t, claim(ctx, 2, "st.lim"), 2)
	})

	// Another process limits the key: this store's first claim of these names guesses a lower path.
	_, _, err := other.PutFlow(ctx, storage.Flow{Key: "lim", Concurrency: 6}, false, base(0))
	require.NoError(t, err)
	twoTrips("First Claim of a limited flow and of no flow", 4, func(ctx context.Context) {
		got := claim(ctx, 4, "st.lim", "st.free")
		require.Equal(t, map[string]int{"st.lim": 2, "st.free": 2}, countNames(got), "4 running of 6, then the free ones")
	})
	s.requireBatch("Claim of a limited flow at its limit and of no flow", 3, func(ctx context.Context) {
		got := claim(ctx, 4, "st.lim", "st.free")
		require.Equal(t, map[string]int{"st.free": 4}, countNames(got))
	})

	// Another process removes the limit: the limited path finds none, and the next claim is fast.
	_, err = other.DeleteFlow(ctx, "lim")
	require.NoError(t, err)
	s.requireBatch("Claim after the limit went", 3, func(ctx context.Context) {
		require.Equal(t, map[string]int{"st.lim": 2}, countNames(claim(ctx, 2, "st.lim", "st.free")))
	})
	s.requireOne("Claim with no limit left", func(ctx context.Context) {
		require.Len(t, claim(ctx, 2, "st.lim", "st.free"), 2)
	})
	// This store limits it: its next claim takes the limited path at once.
	_, _, err = s.PutFlow(ctx, storage.Flow{Key: "lim", Concurrency: 100}, false, base(0))
	require.NoError(t, err)
	s.requireBatch("Claim after this store set a limit", 3, func(ctx context.Context) {
		require.Len(t, claim(ctx, 2, "st.lim", "st.free"), 2)
	})

	s.requireOne("DeleteFlow", func(ctx context.Context) {
		gone, err := s.DeleteFlow(ctx, "prio")
		require.NoError(t, err)
		require.True(t, gone)
	})
	s.requireOne("ListFlows", func(ctx context.Context) {
		_, err := s.ListFlows(ctx, base(0))
		require.NoError(t, err)
	})
}

// countNames counts the workflows of ws by name.
func countNames(ws []storage.Workflow) map[string]int {
	out := map[string]int{}
	for _, w := range ws {
		out[w.Name]++
	}
	return out
}

// buffers returns the shared buffers (hit and read) of the top node of an EXPLAIN (ANALYZE,
// BUFFERS) plan: everything the statement touched.
func buffers(t *testing.T, plan string) int {
	t.Helper()
	m := regexp.MustCompile(`Buffers: shared((?: \w+=\d+)+)`).FindStringSubmatch(plan)
	require.NotNil(t, m, "no buffers in the plan:\n%s", plan)
	total := 0
	for _, kv := range regexp.MustCompile(`(hit|read)=(\d+)`).FindAllStringSubmatch(m[1], -1) {
		n, _ := strconv.Atoi(kv[2])
		total += n
	}
	return total
}

// TestClaimFlowBacklogPlans: with a held-back backlog of 100,000 due workflows of a limited
// flow (inserted straight into the table, then analyzed), a claim's statements on both paths
// read a few pages, not the backlog: the fast statement's probe of the limited pair stops at
// its first due row, the limited path counts the flow's runs from the range after now of the
// governed index and takes the first rows of its room, and a claim of other workflows never
// reads the flow's rows at all. The statements run under EXPLAIN ANALYZE in transactions that
// are rolled back; generic plans read no table whole either.
func TestClaimFlowBacklogPlans(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()
	for _, f := range []storage.Flow{{Key: "deep", Concurrency: 2}, {Key: "open", Priority: 3}} {
		_, _, err := s.PutFlow(ctx, f, false, base(0))
		require.NoError(t, err)
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO `+s.workflows+` (name, key, state, run_at, flow, created_at, updated_at)
		SELECT 'deep', 'd' || g, 'idle', now() - interval '1 day' + g * interval '1 millisecond', 'deep', now(), now()
		FROM generate_series(1, 100000) AS g`)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `INSERT INTO `+s.flowNames+` (flow, name) VALUES ('deep', 'deep')`)
	require.NoError(t, err)
	createFlows(t, s, "free", "", 100)
	createFlows(t, s, "open", "open", 100)
	_, err = s.pool.Exec(ctx, `ANALYZE `+s.workflows)
	require.NoError(t, err)
	// One run of the deep flow holds a live lease: one more has room.
	now := base(time.Hour)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, Names: []string{"deep"}, TTL: time.Hour, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 1)

	args := func(limit int, names ...string) pgx.StrictNamedArgs {
		names = append([]string{}, names...) // never NULL
		return pgx.StrictNamedArgs{"owner": "w", "ttl": interval(time.Minute), "run_at": ts(now.Add(time.Minute)), "now": ts(now), "names": names, "limit": limit}
	}
	const analyzeBuffers = "ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF"
	// explain runs EXPLAIN ANALYZE of sql in a transaction, after the statements of before,
	// and rolls it back.
	explain := func(sql string, a pgx.StrictNamedArgs, before ...string) string {
		t.Helper()
		tx, err := s.pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(context.Background()) }()
		for _, b := range before {
			_, err := tx.Exec(ctx, b, pgx.StrictNamedArgs{"names": a["names"], "now": a["now"], "limit": a["limit"]})
			require.NoError(t, err)
		}
		rows, err := tx.Query(ctx, "EXPLAIN ("+analyzeBuffers+") "+sql, a)
		require.NoError(t, err)
		return lines(t, rows)
	}
	const maxBuffers = 300 // the backlog's index alone spans several hundred pages, its rows thousands
	for _, tc := range []struct {
		what   string
		sql    string
		args   pgx.StrictNamedArgs
		before []string
	}{
		{"plain Claim of names without a flow", s.q.claim, args(10, "free"), nil},
		{"plain Claim of any name, which finds flows", s.q.claim, args(10), nil},
		{"fast Claim of other workflows", s.q.claimFast, args(10, "free", "open"), nil},
		{"fast Claim of any name, which finds the limited flow's due rows", s.q.claimFast, args(10), nil},
		{"limited Claim: lock", s.q.lockFlows, pgx.StrictNamedArgs{"names": []string{}, "now": ts(now), "limit": 10}, nil},
		{"limited Claim: claim", s.q.claimLimited, args(10), []string{s.q.lockFlows}},
		{"limited Claim of the deep flow only", s.q.claimLimited, args(10, "deep"), []string{s.q.lockFlows}},
	} {
		plan := explain(tc.sql, tc.args, tc.before...)
		t.Logf("plan of %s:\n%s", tc.what, plan)
		require.NotContains(t, plan, "Seq Scan on "+s.prefix+"workflows", tc.what)
		require.LessOrEqual(t, buffers(t, plan), maxBuffers, "%s reads a few pages, not the backlog", tc.what)
		generic := explainGeneric(t, s, tc.sql, tc.args)
		require.NotContains(t, generic, "Seq Scan on "+s.prefix+"workflows", "generic plan of %s:\n%s", tc.what, generic)
	}
	// The claims themselves: the deep flow's one room, then none, and the others all along.
	got, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 300, TTL: time.Hour, Now: now})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"deep": 1, "free": 100, "open": 100}, countNames(got))
	list, err := s.ListFlows(ctx, now)
	require.NoError(t, err)
	require.Equal(t, "deep", list[0].Key)
	require.Equal(t, 2, list[0].Running)
	require.Equal(t, storage.FlowProbe, list[0].Due)
	require.True(t, list[0].Capped)
}
