package mysql

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// createFlows creates n idle workflows of name governed by flow, runnable at runAt, with one
// CreateWorkflows call.
func createFlows(t testing.TB, s storage.Storage, name, flow string, n int, runAt time.Time) []storage.Workflow {
	t.Helper()
	ws := make([]storage.NewWorkflow, n)
	for i := range ws {
		ws[i] = storage.NewWorkflow{Name: name, Key: fmt.Sprint(i), Flow: flow, RunAt: runAt, Now: at(0)}
	}
	out, _, err := s.CreateWorkflows(context.Background(), ws)
	require.NoError(t, err)
	return out
}

func putFlow(t testing.TB, s *Store, f storage.Flow) {
	t.Helper()
	_, _, err := s.PutFlow(context.Background(), f, false, at(0))
	require.NoError(t, err)
}

// TestFlowStatementCounts: a claim that meets a limited flow is one transaction of a fixed
// number of statements however many workflows it takes (lock, clock and counts, candidates,
// lease, rate window, read-back); a claim of keys without limits stays the UPDATE and the
// SELECT of the fast path; a create with a new (name, flow) pair sends the pair's INSERT
// IGNORE once.
func TestFlowStatementCounts(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	putFlow(t, s, storage.Flow{Key: "lim", Concurrency: storage.MaxConcurrency, Rate: storage.MaxRate, Per: time.Hour})
	putFlow(t, s, storage.Flow{Key: "open", Priority: 5})

	measure(t, c, "CreateWorkflow with a new pair", snapshot{Exec: 2}, func() {
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "one", Key: "a", Flow: "lim", Now: at(0)})
		require.NoError(t, err)
	})
	measure(t, c, "CreateWorkflow with a known pair", snapshot{Exec: 1}, func() {
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "one", Key: "b", Flow: "lim", Now: at(0)})
		require.NoError(t, err)
	})
	measure(t, c, "CreateWorkflows with a new pair", snapshot{Begin: 1, Commit: 1, Exec: 2, Query: 1}, func() {
		createFlows(t, s, "many", "lim", 5, at(0))
	})

	limitedTx := snapshot{Begin: 1, Commit: 1, Query: 4, Exec: 2}
	for _, k := range []int{1, 10, 200} {
		name := fmt.Sprint("lim", k)
		createFlows(t, s, name, "lim", 2*k, at(0))
		createFlows(t, s, fmt.Sprint("free", k), "", k, at(0))
		measure(t, c, fmt.Sprintf("limited Claim of %d", k), limitedTx, func() {
			require.Len(t, claimAll(t, s, at(time.Second), k, name), k)
		})
		measure(t, c, fmt.Sprintf("limited Claim of %d with as many free", k), limitedTx, func() {
			require.Len(t, claimAll(t, s, at(time.Second), 2*k, name, fmt.Sprint("free", k)), 2*k)
		})
	}
	createFlows(t, s, "later", "lim", 3, at(time.Hour))
	measure(t, c, "limited Claim finding nothing", snapshot{Begin: 1, Commit: 1, Query: 3}, func() {
		require.Empty(t, claimAll(t, s, at(time.Second), 10, "later"))
	})

	// A key with a priority and no limit: the fast path, its rows merged by priority.
	for _, k := range []int{1, 10, 200} {
		name := fmt.Sprint("open", k)
		createFlows(t, s, name, "open", k, at(time.Second))
		createFlows(t, s, name+".free", "", k, at(0))
		measure(t, c, fmt.Sprintf("Claim of %d of an unlimited flow", k), snapshot{Exec: 1, Query: 1}, func() {
			got := claimAll(t, s, at(time.Second), k, name, name+".free")
			require.Len(t, got, k)
			for _, w := range got {
				require.Equal(t, "open", w.Flow, "the higher priority first, whatever the RunAt")
			}
		})
	}
	measure(t, c, "Claim finding nothing, an unlimited flow relevant", snapshot{Exec: 1}, func() {
		require.Empty(t, claimAll(t, s, at(time.Second), 10, "open1"))
	})
}

// TestFlowStaleCache: another process's changes reach a store's flow cache only when it
// reloads, and until then its claims are late, never over a limit: the fast path refuses the
// workflows of a key the flows table limits, and the transaction reads the limits it locks.
func TestFlowStaleCache(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	a := newStore(t, db)
	ctx := context.Background()
	b, err := New(db, WithSchema(a.Schema()))
	require.NoError(t, err)
	require.NoError(t, b.Migrate(ctx))
	b.reloadEvery = 0

	createFlows(t, a, "st.w", "st.k", 6, at(0))
	now := at(time.Second)
	require.Empty(t, claimAll(t, b, now, 10, "st.w"), "b has not seen the pair yet")
	require.NoError(t, b.reloadFlows(ctx))

	// a limits the key and runs one: b, which thinks the key unlimited, takes none.
	putFlow(t, a, storage.Flow{Key: "st.k", Concurrency: 2})
	first := claimAll(t, a, now, 1, "st.w")
	require.Len(t, first, 1)
	pairs, limited := b.cache.plan([]string{"st.w"})
	require.Len(t, pairs, 1)
	require.Empty(t, limited, "b's cache is stale")
	require.Empty(t, claimAll(t, b, now, 10, "st.w"), "the fast path refuses a key the flows table limits")

	// Reloaded, b claims within the limit.
	require.NoError(t, b.reloadFlows(ctx))
	require.Len(t, claimAll(t, b, now, 10, "st.w"), 1, "2 of 2 running")
	require.Empty(t, claimAll(t, b, now, 10, "st.w"))

	// a removes the limit: b still takes its transaction, which reads the flow as it is now,
	// and learns it.
	gone, err := a.DeleteFlow(ctx, "st.k")
	require.NoError(t, err)
	require.True(t, gone)
	require.Len(t, claimAll(t, b, now, 10, "st.w"), 4)
	_, limited = b.cache.plan([]string{"st.w"})
	require.Empty(t, limited, "the transaction told the cache")
}

// TestFlowCacheReload: Claim reloads the flow cache once it is older than reloadEvery, with
// one query, and so sees pairs and flows another process stored.
func TestFlowCacheReload(t *testing.T) {
	t.Parallel()
	b, c := countingStore(t)
	ctx := context.Background()
	other, err := New(b.db, WithSchema(b.Schema()))
	require.NoError(t, err)
	require.NoError(t, other.Migrate(ctx))
	createFlows(t, other, "rl.w", "rl.k", 3, at(0))

	b.reloadEvery = 0
	measure(t, c, "Claim with the cache kept", snapshot{Exec: 1}, func() {
		require.Empty(t, claimAll(t, b, at(time.Second), 10, "rl.w"))
	})
	b.reloadEvery = time.Nanosecond // every claim finds the cache stale
	measure(t, c, "Claim reloading the cache", snapshot{Exec: 1, Query: 2}, func() {
		require.Len(t, claimAll(t, b, at(time.Second), 10, "rl.w"), 3)
	})
}

// TestFlowGeneratedColumns: a row without a flow has NULL flow_at and running_until whatever
// it does, so its entries in the flow indexes never move; a row with a flow is the reverse.
func TestFlowGeneratedColumns(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()
	free := create(t, s, "gc.free", "a", at(0))
	gov := createFlows(t, s, "gc.gov", "gc.k", 1, at(0))[0]
	claimAll(t, s, at(time.Second), 10, "gc.free", "gc.gov")
	read := func(id int64) (freeAt, flowAt, running any) {
		var f, g, r []byte
		require.NoError(t, db.QueryRowContext(ctx, "SELECT free_at, flow_at, running_until FROM "+s.workflows+" WHERE id = ?", id).Scan(&f, &g, &r))
		return f != nil, g != nil, r != nil
	}
	f, g, r := read(free.ID)
	require.Equal(t, []any{true, false, false}, []any{f, g, r}, "a row without a flow: only free_at")
	f, g, r = read(gov.ID)
	require.Equal(t, []any{false, true, true}, []any{f, g, r}, "a running row with a flow: flow_at and running_until")
}

// TestFlowMaxFlows: a new key beyond storage.MaxFlows stored flows is refused with
// ErrTooLarge and nothing written; a stored key may still be replaced.
func TestFlowMaxFlows(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()
	// Filled directly, one statement: the bound is what PutFlow checks.
	_, err := db.ExecContext(ctx, "INSERT INTO "+s.flows+" (`key`, updated_at)"+
		" SELECT CONCAT('max.', seq), UTC_TIMESTAMP(6) FROM seq_1_to_"+fmt.Sprint(storage.MaxFlows))
	if err != nil {
		// Without MariaDB's sequence engine, one row at a time.
		for i := 1; i <= storage.MaxFlows; i++ {
			putFlow(t, s, storage.Flow{Key: fmt.Sprint("max.", i)})
		}
	}
	_, _, err = s.PutFlow(ctx, storage.Flow{Key: "max.new", Concurrency: 1}, false, at(0))
	require.ErrorIs(t, err, storage.ErrTooLarge)
	list, err := s.ListFlows(ctx, at(0))
	require.NoError(t, err)
	require.Len(t, list, storage.MaxFlows, "nothing written")
	got, wrote, err := s.PutFlow(ctx, storage.Flow{Key: "max.7", Concurrency: 1}, false, at(0))
	require.NoError(t, err)
	require.True(t, wrote)
	require.Equal(t, 1, got.Concurrency, "a stored key is replaced at the bound")
}

// TestFlowClaimsLockOnlyTheirFlows: a claim reads in share mode only the flows rows of the
// keys of the rows it takes, so a claim of one flow never waits for a transaction that holds
// another flow's row (a limited claim, a PutFlow). The pool's lock wait timeout is one
// second: a claim that waited would fail (after its retries) instead of passing.
func TestFlowClaimsLockOnlyTheirFlows(t *testing.T) {
	t.Parallel()
	cfg := serverConfig(t)
	cfg.Params = map[string]string{"innodb_lock_wait_timeout": "1"}
	db := openDB(t, cfg, 4)
	s := newStore(t, db)
	ctx := context.Background()
	putFlow(t, s, storage.Flow{Key: "lk.held", Concurrency: 5})
	putFlow(t, s, storage.Flow{Key: "lk.open", Priority: 2})
	putFlow(t, s, storage.Flow{Key: "lk.lim", Concurrency: 5})
	createFlows(t, s, "lk.held", "lk.held", 3, at(0))
	createFlows(t, s, "lk.open", "lk.open", 3, at(0))
	createFlows(t, s, "lk.lim", "lk.lim", 3, at(0))
	createFlows(t, s, "lk.free", "", 3, at(0))

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	var key []byte
	require.NoError(t, tx.QueryRowContext(ctx, "SELECT `key` FROM "+s.flows+" WHERE `key` = 'lk.held' FOR UPDATE").Scan(&key))

	now := at(time.Second)
	require.Len(t, claimAll(t, s, now, 10, "lk.open", "lk.free"), 6, "the fast path with a flow key")
	require.Len(t, claimAll(t, s, now, 10, "lk.lim"), 3, "a limited claim of another key")
	require.NoError(t, tx.Rollback())
	require.Len(t, claimAll(t, s, now, 10, "lk.held"), 3)
}
