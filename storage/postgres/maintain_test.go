package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Table maintenance runs outside the write units: a spawn that makes it due is one statement
// and returns at once, the ANALYZE runs afterwards in the background, one at a time, and its
// failure is logged, not returned.

// logRecorder is a slog.Handler that keeps every record, at every level.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// at returns the records of one level.
func (r *logRecorder) at(level slog.Level) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.recs {
		if rec.Level == level {
			out = append(out, rec)
		}
	}
	return out
}

// count returns how many records of one level have a message containing substr.
func (r *logRecorder) count(level slog.Level, substr string) int {
	n := 0
	for _, rec := range r.at(level) {
		if strings.Contains(rec.Message, substr) {
			n++
		}
	}
	return n
}

// attr returns the value of a record's attribute, as text.
func attr(rec slog.Record, key string) string {
	var v string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// maintainedStore is a counting store that logs into rec, with a claimed parent to spawn
// children under.
func maintainedStore(t *testing.T, rec *logRecorder) (countingStore, storage.Lease) {
	t.Helper()
	pool := ownPool(t, 4, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter{} })
	s := countingStore{Store: newStore(t, pool, WithLogger(slog.New(rec))), t: t}
	ctx := t.Context()
	_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "parent", Key: "p", Now: base(0)})
	require.NoError(t, err)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Hour, Now: base(0)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	return s, got[0].Lease()
}

// spawn is a batch of n new children of branch "branch$b", keys starting with prefix.
func spawn(prefix string, n int) storage.SpawnRequest {
	r := storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Now: base(time.Second)}
	for i := range n {
		r.Children = append(r.Children, storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$%s_%d", prefix, i)})
	}
	return r
}

// lockTable holds, in a transaction of its own until release, the lock ANALYZE needs on the
// store's workflows table (SHARE UPDATE EXCLUSIVE, which does not hold up reads or writes).
func lockTable(t *testing.T, s *Store) (release func()) {
	t.Helper()
	tx, err := testPool(t).Begin(t.Context())
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), "LOCK TABLE "+s.workflows+" IN SHARE UPDATE EXCLUSIVE MODE")
	require.NoError(t, err)
	var once sync.Once
	release = func() { once.Do(func() { _ = tx.Rollback(context.Background()) }) }
	t.Cleanup(release)
	return release
}

// analyzing returns how many sessions run ANALYZE on the store's workflows table, and how
// many of them wait for a lock.
func analyzing(t *testing.T, s *Store) (running, waiting int) {
	t.Helper()
	err := testPool(t).QueryRow(t.Context(), `SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock')
		FROM pg_stat_activity WHERE state = 'active' AND query = 'ANALYZE ' || $1`, s.workflows).Scan(&running, &waiting)
	require.NoError(t, err)
	return running, waiting
}

// TestMaintenanceAfterSpawn: the spawn that makes the first refresh due (1,000 children) is
// one statement, and the refresh runs afterwards, on its own: the table is analyzed.
func TestMaintenanceAfterSpawn(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	s, l := maintainedStore(t, rec)
	s.requireOne("SpawnBatch of 1,000 children that makes table maintenance due", func(ctx context.Context) {
		res, err := s.SpawnBatch(ctx, l, spawn("a", analyzeFirst))
		require.NoError(t, err)
		require.Equal(t, analyzeFirst, res.Inserted)
	})
	eventually(t, 30*time.Second, func() bool { return len(rec.at(slog.LevelDebug)) > 0 }, "no refresh after the spawn")
	require.Empty(t, rec.at(slog.LevelWarn))
	require.Contains(t, rec.at(slog.LevelDebug)[0].Message, "refreshed the planner's statistics")

	// last_analyze is set by ANALYZE only, never by autovacuum.
	eventually(t, 30*time.Second, func() bool {
		var analyzed bool
		require.NoError(t, s.pool.QueryRow(t.Context(), `SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables
			WHERE relid = $1::text::regclass`, s.workflows).Scan(&analyzed))
		return analyzed
	}, "the table's statistics show no ANALYZE")
	// With the statistics the refresh left, claims walk the runnable index (see
	// TestClaimUsesRunnableIndex for a table of 100,000).
	args := pgx.StrictNamedArgs{"owner": "w", "ttl": interval(time.Minute), "run_at": ts(base(time.Hour)), "now": ts(base(time.Minute)), "names": []string{}, "limit": 64}
	for kind, plan := range map[string]string{
		"custom":  explainCustom(t, s.Store, "COSTS OFF", s.q.claim, args),
		"generic": explainGeneric(t, s.Store, s.q.claim, args),
	} {
		require.Regexp(t, indexOrder(s.prefix+"workflows_runnable"), plan, "%s plan of Claim: the index gives run_at order", kind)
	}

	// The next refresh is due after 20,000 more: 1,000 more make none.
	s.requireOne("SpawnBatch of 1,000 more", func(ctx context.Context) {
		_, err := s.SpawnBatch(ctx, l, spawn("b", analyzeFirst))
		require.NoError(t, err)
	})
	s.maint.close() // waits for a refresh, had one started
	require.Len(t, rec.at(slog.LevelDebug), 1)
}

// TestMaintenanceFailureLogged: a refresh that cannot finish within its timeout (here: a
// lock held elsewhere) is logged as a warning; the spawn that made it due neither waited for
// it nor saw its error.
func TestMaintenanceFailureLogged(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	s, l := maintainedStore(t, rec)
	s.maint.timeout = 200 * time.Millisecond
	lockTable(t, s.Store)
	s.requireOne("SpawnBatch of 1,000 children while ANALYZE cannot run", func(ctx context.Context) {
		res, err := s.SpawnBatch(ctx, l, spawn("a", analyzeFirst))
		require.NoError(t, err)
		require.Equal(t, analyzeFirst, res.Inserted)
	})
	eventually(t, 30*time.Second, func() bool { return len(rec.at(slog.LevelWarn)) > 0 }, "the failed refresh was not logged")
	warn := rec.at(slog.LevelWarn)[0]
	t.Logf("logged: %s error=%s", warn.Message, attr(warn, "error"))
	require.Contains(t, warn.Message, "table maintenance failed")
	require.Equal(t, s.workflows, attr(warn, "table"))
	require.NotEmpty(t, attr(warn, "error"))
	require.Empty(t, rec.at(slog.LevelDebug), "no refresh succeeded")
}

// TestMaintenanceOneAtATime: refreshes due while one runs coalesce into one more run, never
// a second at once; Close stops a running refresh and waits for it, logging nothing (goleak
// in TestMain checks that its goroutine is gone).
func TestMaintenanceOneAtATime(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	s, l := maintainedStore(t, rec)
	release := lockTable(t, s.Store)
	_, err := s.SpawnBatch(t.Context(), l, spawn("a", analyzeFirst))
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { _, waiting := analyzing(t, s.Store); return waiting == 1 },
		"the refresh never started to wait for the lock")
	for range 5 {
		s.maint.trigger(jobAnalyze) // as 20,000 more children would, five times
	}
	running, _ := analyzing(t, s.Store)
	require.Equal(t, 1, running, "one refresh at a time")
	release()
	eventually(t, 30*time.Second, func() bool { return len(rec.at(slog.LevelDebug)) >= 2 }, "the refresh and the one due meanwhile")
	eventually(t, 30*time.Second, func() bool {
		s.maint.mu.Lock()
		defer s.maint.mu.Unlock()
		return !s.maint.running
	}, "the maintenance goroutine never ended")
	require.Len(t, rec.at(slog.LevelDebug), 2, "five triggers during one refresh make one more")

	lockTable(t, s.Store)
	s.maint.trigger(jobAnalyze)
	eventually(t, 30*time.Second, func() bool { _, waiting := analyzing(t, s.Store); return waiting == 1 },
		"the refresh never started to wait for the lock")
	start := time.Now()
	require.NoError(t, s.Close())
	require.Less(t, time.Since(start), 10*time.Second, "Close stops the refresh instead of waiting for the lock")
	require.Empty(t, rec.at(slog.LevelWarn), "a refresh stopped by Close is no failure")
	s.maint.trigger(jobAnalyze)
	s.maint.mu.Lock()
	require.False(t, s.maint.running, "a closed store starts no refresh")
	s.maint.mu.Unlock()
	require.True(t, strings.HasPrefix(rec.at(slog.LevelDebug)[0].Message, "postgres: table maintenance"))
}

// claimScanPages returns how many index and table pages the claim's scan of due rows reads
// to find one, by EXPLAIN (ANALYZE, BUFFERS) of its subquery without the lock.
func claimScanPages(t *testing.T, s *Store, now time.Time) int {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF)
		SELECT id FROM `+s.workflows+` WHERE state IN ('idle', 'running') AND run_at IS NOT NULL AND flow IS NULL AND run_at <= $1
		ORDER BY run_at, id LIMIT 1`, now)
	require.NoError(t, err)
	plan := lines(t, rows)
	var pages int
	for line := range strings.Lines(plan) {
		if i := strings.Index(line, "Buffers: shared hit="); i >= 0 && pages == 0 {
			_, err := fmt.Sscanf(line[i:], "Buffers: shared hit=%d", &pages)
			require.NoError(t, err, plan)
		}
	}
	require.Positive(t, pages, "no buffer counts in the plan:\n%s", plan)
	return pages
}

// vacuumed reports whether VACUUM (not autovacuum) ran on the store's workflows table.
func vacuumed(t *testing.T, s *Store) bool {
	t.Helper()
	var ok bool
	require.NoError(t, s.pool.QueryRow(t.Context(), `SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables
		WHERE relid = $1::text::regclass`, s.workflows).Scan(&ok))
	return ok
}

// createIdle creates n idle workflows due at base(0), in batches.
func createIdle(t *testing.T, s storage.Storage, n int) {
	t.Helper()
	for done := 0; done < n; {
		batch := make([]storage.NewWorkflow, min(n-done, storage.MaxCreateBatch))
		for i := range batch {
			batch[i] = storage.NewWorkflow{Name: "w", Key: fmt.Sprint(done + i), Now: base(0)}
		}
		_, _, err := s.CreateWorkflows(t.Context(), batch)
		require.NoError(t, err)
		done += len(batch)
	}
}

// TestVacuumAfterClaims: where autovacuum is off (as on the test server), the claim that
// brings the rows this store claimed to its vacuum interval stays one statement, and the
// store then vacuums the table in the background. Before the vacuum, finding the next due
// row walks over the dead index entries the claimed rows left at the front of the runnable
// index; after it, it reads a few pages.
func TestVacuumAfterClaims(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	pool := ownPool(t, 4, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter{} })
	const every = 4000
	s := countingStore{Store: newStore(t, pool, WithLogger(slog.New(rec)), WithVacuumEvery(every)), t: t}
	on, err := s.maint.autovacuumOn(t.Context())
	require.NoError(t, err)
	if on {
		t.Skip("autovacuum is on for the test server: the store leaves vacuuming to it (TestVacuumLeftToAutovacuum)")
	}
	createIdle(t, s, 6000)
	ctx := t.Context()
	for range every/storage.MaxClaim - 1 {
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: storage.MaxClaim, TTL: time.Hour, Now: base(time.Second)})
		require.NoError(t, err)
		require.Len(t, got, storage.MaxClaim)
	}
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: storage.MaxClaim - 1, TTL: time.Hour, Now: base(time.Second)})
	require.NoError(t, err)
	require.Len(t, got, storage.MaxClaim-1)
	before := claimScanPages(t, s.Store, base(time.Second))
	require.False(t, vacuumed(t, s.Store), "no vacuum before the interval is full")

	s.requireOne("Claim that makes a vacuum due", func(ctx context.Context) {
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Hour, Now: base(time.Second)})
		require.NoError(t, err)
		require.Len(t, got, 1)
	})
	eventually(t, time.Minute, func() bool { return rec.count(slog.LevelDebug, "vacuumed the table") > 0 }, "no vacuum after the claim")
	require.Empty(t, rec.at(slog.LevelWarn))
	require.True(t, vacuumed(t, s.Store))
	after := claimScanPages(t, s.Store, base(time.Second))
	// A transaction elsewhere on the server that began before the claims (another test's)
	// keeps VACUUM from removing their dead entries; the store's next vacuum removes them.
	for try := 0; after > 5 && try < 20; try++ {
		time.Sleep(100 * time.Millisecond)
		s.maint.vacuum()
		after = claimScanPages(t, s.Store, base(time.Second))
	}
	t.Logf("finding the next due row behind %d claimed rows: %d pages before the vacuum, %d after", every, before, after)
	require.Greater(t, before, 10, "the dead entries of %d claimed rows are walked over", every)
	require.LessOrEqual(t, after, 5, "a vacuumed index finds the next due row at once")

	// The next vacuum is due after `every` more claimed rows: 1,000 more make none.
	vacuums := rec.count(slog.LevelDebug, "vacuumed the table")
	_, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: storage.MaxClaim, TTL: time.Hour, Now: base(time.Second)})
	require.NoError(t, err)
	s.maint.close() // waits for a vacuum, had one started
	require.Equal(t, vacuums, rec.count(slog.LevelDebug, "vacuumed the table"))
}

// TestVacuumLeftToAutovacuum: where autovacuum covers the table, a vacuum that falls due
// only logs that it is left to autovacuum, and WithVacuumEvery(0) never makes one due.
func TestVacuumLeftToAutovacuum(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	s := newStore(t, nil, WithLogger(slog.New(rec)), WithVacuumEvery(10))
	s.maint.autovacuum = func(context.Context) (bool, error) { return true, nil }
	createIdle(t, s, 10)
	_, err := s.Claim(t.Context(), storage.ClaimRequest{Owner: "w", Limit: 10, TTL: time.Hour, Now: base(time.Second)})
	require.NoError(t, err)
	eventually(t, time.Minute, func() bool { return rec.count(slog.LevelDebug, "autovacuum is on for the table; left to it") > 0 },
		"the due vacuum did not run")
	s.maint.close()
	require.False(t, vacuumed(t, s))

	off := newStore(t, nil, WithVacuumEvery(0))
	createIdle(t, off, 10)
	_, err = off.Claim(t.Context(), storage.ClaimRequest{Owner: "w", Limit: 10, TTL: time.Hour, Now: base(time.Second)})
	require.NoError(t, err)
	off.maint.mu.Lock()
	require.False(t, off.maint.running, "WithVacuumEvery(0): no maintenance after a claim")
	off.maint.mu.Unlock()

	_, err = New(testPool(t), WithVacuumEvery(-1))
	require.ErrorIs(t, err, storage.ErrInvalid)
	require.ErrorContains(t, err, "vacuum interval -1")
}

// TestAutovacuumOn: the store's view of autovacuum follows the server's setting and the
// table's own autovacuum_enabled.
func TestAutovacuumOn(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	var server bool
	require.NoError(t, s.pool.QueryRow(t.Context(), `SELECT current_setting('autovacuum')::bool`).Scan(&server))
	on, err := s.maint.autovacuumOn(t.Context())
	require.NoError(t, err)
	require.Equal(t, server, on)
	_, err = s.pool.Exec(t.Context(), `ALTER TABLE `+s.workflows+` SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	on, err = s.maint.autovacuumOn(t.Context())
	require.NoError(t, err)
	require.False(t, on, "autovacuum_enabled = false on the table")
}
