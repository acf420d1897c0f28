package postgres

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// TestMigrationsNumbered: the embedded migrations are numbered 1..n and every placeholder
// in them is filled.
func TestMigrationsNumbered(t *testing.T) {
	ms, err := migrations()
	require.NoError(t, err)
	require.NotEmpty(t, ms)
	require.Equal(t, len(ms), SchemaVersion())
	s, err := New(&pgxpool.Pool{}, WithSchema("s"))
	require.NoError(t, err)
	for i, m := range ms {
		require.Equal(t, i+1, m.Version, m.Name)
		sql := s.replacer().Replace(m.SQL)
		require.NotContains(t, sql, "{{", "%s: unknown placeholder", m.Name)
		require.NotContains(t, sql, "}}", "%s: unknown placeholder", m.Name)
	}
}

// versions returns the versions recorded in a store's version table.
func versions(t *testing.T, s *Store) []int {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `SELECT version FROM `+s.versions+` ORDER BY version`)
	require.NoError(t, err)
	var out []int
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		out = append(out, v)
	}
	require.NoError(t, rows.Err())
	return out
}

func allVersions() []int {
	var out []int
	for v := 1; v <= SchemaVersion(); v++ {
		out = append(out, v)
	}
	return out
}

// TestMigrateIdempotent: Migrate again changes nothing and records each version once.
func TestMigrateIdempotent(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	require.NoError(t, s.Migrate(t.Context()), "a second Migrate")
	require.NoError(t, s.Migrate(t.Context()), "a third Migrate")
	require.Equal(t, allVersions(), versions(t, s))

	// A store built later over the same tables works at once.
	other := storeIn(t, s.pool, s.schema)
	_, created, err := other.CreateWorkflow(t.Context(), storage.NewWorkflow{Name: "after", Key: "k", Now: time.Now()})
	require.NoError(t, err)
	require.True(t, created)
}

// TestMigrateConcurrent: four stores migrating one schema at once, which none has created
// yet, all succeed and apply each migration once.
func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	// A schema nobody created yet: the concurrent calls also race to create it.
	schema := freshSchema(t)
	_, err := pool.Exec(t.Context(), `DROP SCHEMA "`+schema+`"`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), `CREATE SCHEMA IF NOT EXISTS "`+schema+`"`) }) // for freshSchema's drop

	const n = 4
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = storeIn(t, pool, schema)
	}
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = stores[i].Migrate(t.Context())
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "Migrate %d of %d concurrent calls", i, n)
	}
	require.Equal(t, allVersions(), versions(t, stores[0]), "each migration applied once")
	for _, s := range stores {
		_, _, err := s.CreateWorkflow(t.Context(), storage.NewWorkflow{Name: "after", Key: "k", Now: time.Now()})
		require.NoError(t, err)
	}
}

// TestSchemaNewerThanBuild: tables migrated by a newer build are refused with a clear error,
// by Migrate and by a store that never migrated.
func TestSchemaNewerThanBuild(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	_, err := s.pool.Exec(t.Context(), `INSERT INTO `+s.versions+` (version, name) VALUES (999, '0999_future.sql')`)
	require.NoError(t, err)

	err = s.Migrate(t.Context())
	require.ErrorIs(t, err, ErrSchemaTooNew)
	require.ErrorIs(t, err, storage.ErrSchemaTooNew, "the backend's sentinel is the shared one")
	require.Contains(t, err.Error(), "999")

	// A store that has not checked the version yet refuses to work on the tables.
	other := storeIn(t, s.pool, s.schema)
	_, err = other.GetWorkflow(t.Context(), 1)
	require.ErrorIs(t, err, ErrSchemaTooNew)
	_, err = other.Claim(t.Context(), storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: time.Now()})
	require.ErrorIs(t, err, ErrSchemaTooNew)
}

// TestNotMigrated: a store used before Migrate says so instead of failing on a statement.
func TestNotMigrated(t *testing.T) {
	t.Parallel()
	s := storeIn(t, testPool(t), freshSchema(t))
	_, err := s.GetWorkflow(t.Context(), 1)
	require.ErrorIs(t, err, ErrNotMigrated)
	require.ErrorIs(t, err, storage.ErrNotMigrated, "the backend's sentinel is the shared one")
	require.Contains(t, err.Error(), "postgres: ")
	_, _, err = s.CreateWorkflow(t.Context(), storage.NewWorkflow{Name: "x", Key: "k", Now: time.Now()})
	require.ErrorIs(t, err, ErrNotMigrated)

	missing := storeIn(t, testPool(t), "chrono_t_no_such_schema")
	_, err = missing.GetWorkflow(t.Context(), 1)
	require.ErrorIs(t, err, ErrNotMigrated)

	require.NoError(t, s.Migrate(t.Context()))
	_, err = s.GetWorkflow(t.Context(), 1)
	require.ErrorIs(t, err, storage.ErrNotFound, "after Migrate the store works")
}

// TestPrefixesShareASchema: two prefixes in one schema are two independent stores.
func TestPrefixesShareASchema(t *testing.T) {
	t.Parallel()
	a := newStore(t, nil)
	b := storeIn(t, a.pool, a.schema, WithTablePrefix("other_"))
	require.NoError(t, b.Migrate(t.Context()))
	require.NotEqual(t, a.Channel(), b.Channel())

	wa, _, err := a.CreateWorkflow(t.Context(), storage.NewWorkflow{Name: "job", Key: "k", Input: []byte(`"a"`), Now: time.Now()})
	require.NoError(t, err)
	wb, created, err := b.CreateWorkflow(t.Context(), storage.NewWorkflow{Name: "job", Key: "k", Input: []byte(`"b"`), Now: time.Now()})
	require.NoError(t, err)
	require.True(t, created, "the other prefix has tables of its own")
	require.Equal(t, `"b"`, string(wb.Input))
	got, err := a.FindWorkflow(t.Context(), "job", "k")
	require.NoError(t, err)
	require.Equal(t, wa.ID, got.ID)
	require.Equal(t, `"a"`, string(got.Input))
}

// TestInvalidOptions: schema names and prefixes are identifiers, validated by New.
func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	for _, bad := range []string{"", "Upper", "has-dash", "x;drop table y", `quo"te`, "9starts_with_digit", "é", strings.Repeat("a", 42), "a b"} {
		_, err := New(pool, WithSchema(bad))
		require.ErrorIs(t, err, storage.ErrInvalid, "schema %q", bad)
		_, err = New(pool, WithTablePrefix(bad))
		require.ErrorIs(t, err, storage.ErrInvalid, "prefix %q", bad)
	}
	for _, good := range []string{"a", "_x", "chrono_", "app2_wf_", strings.Repeat("a", 41)} {
		s, err := New(pool, WithSchema(good), WithTablePrefix(good))
		require.NoError(t, err, "%q", good)
		require.LessOrEqual(t, len(s.Channel()), 63, "channel of %q", good)
	}
	_, err := New(nil)
	require.ErrorIs(t, err, storage.ErrInvalid, "nil pool")
	_, err = New(pool, nil)
	require.ErrorIs(t, err, storage.ErrInvalid, "nil option")
	_, err = New(pool, WithLogger(nil))
	require.ErrorIs(t, err, storage.ErrInvalid, "nil logger")

	s, err := New(pool)
	require.NoError(t, err)
	require.Equal(t, DefaultTablePrefix, s.TablePrefix())
	require.Equal(t, "", s.Schema())
	require.Equal(t, `"chrono_workflows"`, s.workflows, "without a schema the search_path decides")
}
