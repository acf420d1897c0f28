package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/chronoforge/chronoforge/internal/dbtest"
)

// TestMain closes the package's shared pool after the tests and then fails the package if any
// goroutine is left running: the listener and every worker the tests start must stop.
func TestMain(m *testing.M) {
	code := m.Run()
	closeSharedPool()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	sharedMu   sync.Mutex
	sharedPool *pgxpool.Pool
)

// testDSN returns the test server's DSN, or skips (or fails) t as dbtest decides.
func testDSN(t testing.TB) string {
	t.Helper()
	return dbtest.DSN(t, dbtest.Postgres)
}

// testPool returns the pool shared by the package's tests, built on first use. It is modest
// (8 connections) so that parallel tests also exercise waiting for connections.
func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dsn := testDSN(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedPool == nil {
		sharedPool = newPool(t, dsn, 8, nil)
	}
	return sharedPool
}

func closeSharedPool() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedPool != nil {
		sharedPool.Close()
		sharedPool = nil
	}
}

// newPool builds a pool over dsn with at most maxConns connections; configure may adjust it.
// The caller closes it.
func newPool(t testing.TB, dsn string, maxConns int32, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.MaxConns = maxConns
	if configure != nil {
		configure(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Ping(ctx))
	return pool
}

// ownPool builds a pool for one test and closes it when the test ends.
func ownPool(t testing.TB, maxConns int32, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	pool := newPool(t, testDSN(t), maxConns, configure)
	t.Cleanup(pool.Close)
	return pool
}

// freshSchema returns the name of a new, empty schema that is dropped when the test ends.
func freshSchema(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "chrono_t_" + hex.EncodeToString(b[:])
	pool := testPool(t)
	_, err := pool.Exec(context.Background(), `CREATE SCHEMA "`+schema+`"`)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, `DROP SCHEMA "`+schema+`" CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// newStore returns a migrated store in a fresh schema over pool (the shared pool when nil),
// closed when the test ends.
func newStore(t testing.TB, pool *pgxpool.Pool, opts ...Option) *Store {
	t.Helper()
	if pool == nil {
		pool = testPool(t)
	}
	schema := freshSchema(t)
	s, err := New(pool, append([]Option{WithSchema(schema)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

// storeIn returns a store over pool on the tables of an existing schema, closed when the test
// ends.
func storeIn(t testing.TB, pool *pgxpool.Pool, schema string, opts ...Option) *Store {
	t.Helper()
	s, err := New(pool, append([]Option{WithSchema(schema)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// eventually waits until cond holds, failing t after timeout.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
