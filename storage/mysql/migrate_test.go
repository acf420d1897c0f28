package mysql

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

func TestMigrationsAreNumberedAndSplit(t *testing.T) {
	ms, err := migrations()
	require.NoError(t, err)
	require.NotEmpty(t, ms)
	require.Equal(t, len(ms), SchemaVersion())
	for _, m := range ms {
		stmts := statements(m.SQL)
		require.NotEmpty(t, stmts, m.Name)
		for _, st := range stmts {
			require.True(t, strings.HasSuffix(st, ";"), "%s: statement %q must end with a semicolon", m.Name, st)
		}
	}
	require.Equal(t, []string{"A;", "-- c;\nB\nC;"}, statements("A;\n-- c;\nB\nC;\n-- trailing\n"))
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	for _, tc := range []struct {
		name string
		opt  Option
	}{
		{"empty prefix", WithTablePrefix("")},
		{"upper-case prefix", WithTablePrefix("Chrono_")},
		{"quote in prefix", WithTablePrefix("a`b")},
		{"dash in prefix", WithTablePrefix("a-b")},
		{"statement in prefix", WithTablePrefix("x; DROP TABLE y")},
		{"overlong prefix", WithTablePrefix(strings.Repeat("p", 42))},
		{"empty schema", WithSchema("")},
		{"digit first schema", WithSchema("1db")},
		{"dotted schema", WithSchema("a.b")},
		{"overlong schema", WithSchema(strings.Repeat("s", 42))},
		{"nil option", nil},
	} {
		_, err := New(db, tc.opt)
		require.ErrorIs(t, err, storage.ErrInvalid, tc.name)
	}
	_, err := New(nil)
	require.ErrorIs(t, err, storage.ErrInvalid, "nil db")

	s, err := New(db, WithSchema("a_b1"), WithTablePrefix(strings.Repeat("p", 41)))
	require.NoError(t, err, "the longest valid names")
	require.Equal(t, "a_b1", s.Schema())
	require.Equal(t, strings.Repeat("p", 41), s.TablePrefix())
}

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	ctx := context.Background()
	schema := newSchema(t, db)

	// Four processes' worth of stores migrate one fresh database at once.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := New(db, WithSchema(schema))
			if err == nil {
				err = s.Migrate(ctx)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "concurrent Migrate %d", i)
	}
	s, err := New(db, WithSchema(schema))
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx), "Migrate again")
	require.NoError(t, s.Migrate(ctx), "and again")

	var versions, rows int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(MAX(version), 0) FROM "+s.versions).Scan(&rows, &versions))
	require.Equal(t, SchemaVersion(), rows, "each migration is recorded once")
	require.Equal(t, SchemaVersion(), versions)

	// The store works, and another prefix in the same database is independent of it.
	w := create(t, s, "job", "k", at(0))
	other, err := New(db, WithSchema(schema), WithTablePrefix("other_"))
	require.NoError(t, err)
	require.NoError(t, other.Migrate(ctx))
	_, err = other.GetWorkflow(ctx, w.ID)
	require.ErrorIs(t, err, storage.ErrNotFound)
	var tables int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?", schema).Scan(&tables))
	require.Equal(t, 14, tables, "two prefixes of seven tables each")
}

func TestSchemaTooNewOrMissing(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	ctx := context.Background()

	missing, err := New(db, WithSchema(newSchema(t, db)))
	require.NoError(t, err)
	_, err = missing.GetWorkflow(ctx, 1)
	require.ErrorIs(t, err, ErrNotMigrated, "a store whose tables were never created")
	require.ErrorIs(t, err, storage.ErrNotMigrated, "the backend's sentinel is the shared one")
	require.Contains(t, err.Error(), "mysql: ")

	s := newStore(t, db)
	w := create(t, s, "job", "k", at(0))
	_, err = db.ExecContext(ctx, "INSERT INTO "+s.versions+" (version, name, applied_at) VALUES (?, 'from_the_future.sql', UTC_TIMESTAMP(6))", SchemaVersion()+1)
	require.NoError(t, err)

	err = s.Migrate(ctx)
	require.ErrorIs(t, err, ErrSchemaTooNew)
	require.ErrorIs(t, err, storage.ErrSchemaTooNew, "the backend's sentinel is the shared one")
	require.Contains(t, err.Error(), "newer than this build")

	fresh, err := New(db, WithSchema(s.Schema()))
	require.NoError(t, err)
	_, err = fresh.GetWorkflow(ctx, w.ID)
	require.ErrorIs(t, err, ErrSchemaTooNew, "a new store on a newer schema refuses to work")
	require.ErrorIs(t, fresh.Migrate(ctx), ErrSchemaTooNew)
}

func TestMigrateWaitsForTheLock(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	schema := newSchema(t, db)
	s, err := New(db, WithSchema(schema))
	require.NoError(t, err)

	// Another process holds the migration lock of this database and prefix.
	conn, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer conn.Close()
	var got int
	require.NoError(t, conn.QueryRowContext(context.Background(), "SELECT GET_LOCK(?, 0)", lockKey(schema, s.prefix)).Scan(&got))
	require.Equal(t, 1, got)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	require.ErrorIs(t, s.Migrate(ctx), context.DeadlineExceeded, "Migrate waits while another holds the lock")

	_, err = conn.ExecContext(context.Background(), "DO RELEASE_LOCK(?)", lockKey(schema, s.prefix))
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()), "and proceeds once it is released")
}

func TestClosedStoreRefuses(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	require.NoError(t, s.Close())
	_, err := s.GetWorkflow(context.Background(), 1)
	require.ErrorIs(t, err, errClosed)
	require.NoError(t, db.PingContext(context.Background()), "Close leaves the application's pool open")
}

// TestMigrateFromVersion1: tables made by the first migration, holding a workflow, are
// brought to the current version: the workflow reads back without tags, and mailboxes, tags
// and bulk creates work. A second migration cut short after its statements ran (the version
// not recorded) is finished by the next Migrate.
func TestMigrateFromVersion1(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	ctx := context.Background()
	schema := newSchema(t, db)
	s, err := New(db, WithSchema(schema))
	require.NoError(t, err)

	// What a build of schema version 1 left behind.
	ms, err := migrations()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(ms), 2)
	r := s.replacer()
	_, err = db.ExecContext(ctx, "CREATE DATABASE `"+schema+"`")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, r.Replace(createVersions))
	require.NoError(t, err)
	for _, stmt := range statements(r.Replace(ms[0].SQL)) {
		_, err := db.ExecContext(ctx, stmt)
		require.NoError(t, err)
	}
	_, err = db.ExecContext(ctx, "INSERT INTO "+s.versions+" (version, name, applied_at) VALUES (1, ?, UTC_TIMESTAMP(6))", ms[0].Name)
	require.NoError(t, err)
	res, err := db.ExecContext(ctx, "INSERT INTO "+s.workflows+" (name, `key`, input, state, run_at, created_at, updated_at) VALUES ('old', 'k', '{}', 'idle', ?, ?, ?)",
		dbTime(at(0)), dbTime(at(0)), dbTime(at(0)))
	require.NoError(t, err)
	oldID, err := res.LastInsertId()
	require.NoError(t, err)

	_, err = s.GetWorkflow(ctx, oldID)
	require.ErrorIs(t, err, ErrNotMigrated, "this build refuses version 1 tables until migrated")
	require.NoError(t, s.Migrate(ctx))
	var version int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT MAX(version) FROM "+s.versions).Scan(&version))
	require.Equal(t, SchemaVersion(), version)

	old, err := s.GetWorkflow(ctx, oldID)
	require.NoError(t, err)
	require.Equal(t, "old", old.Name)
	require.Nil(t, old.Tags)
	_, created := send(t, s, oldID, "t", "k", `1`, at(time.Second))
	require.True(t, created)
	out, made, err := s.CreateWorkflows(ctx, []storage.NewWorkflow{
		{Name: "old", Key: "k", Now: at(0)},
		{Name: "new", Key: "k", Tags: map[string]string{"a": "b"}, Now: at(0)},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, made)
	require.Equal(t, old, out[0])
	require.Equal(t, map[string]string{"a": "b"}, out[1].Tags)

	// The second migration ran but its version was not recorded: Migrate runs it again.
	_, err = db.ExecContext(ctx, "DELETE FROM "+s.versions+" WHERE version = 2")
	require.NoError(t, err)
	again, err := New(db, WithSchema(schema))
	require.NoError(t, err)
	require.NoError(t, again.Migrate(ctx), "an applied ALTER TABLE counts as done")
	require.NoError(t, db.QueryRowContext(ctx, "SELECT MAX(version) FROM "+s.versions).Scan(&version))
	require.Equal(t, SchemaVersion(), version)
	require.Equal(t, 1, countMessages(t, again, oldID), "the messages were kept")
	got, err := again.GetWorkflow(ctx, out[1].ID)
	require.NoError(t, err)
	require.Equal(t, out[1], got)
}
