package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/mysql"
)

// TestMySQL opens MySQL (MariaDB) through --store mysql:DSN in a fresh database: migrate,
// show, retry and stats, which fails with the clear operator-queries error for as long as
// the MySQL store does not implement storage.Inspector.
func TestMySQL(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("CHRONOFORGE_MYSQL_DSN")
	if dsn == "" {
		if os.Getenv("CHRONOFORGE_REQUIRE_DB") != "" {
			t.Fatal("CHRONOFORGE_REQUIRE_DB is set but CHRONOFORGE_MYSQL_DSN is not")
		}
		t.Skip("CHRONOFORGE_MYSQL_DSN is not set")
	}
	cfg, err := driver.ParseDSN(dsn)
	require.NoError(t, err)
	cfg.ParseTime = true
	connector, err := driver.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(connector)
	t.Cleanup(func() { _ = db.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	database := "chrono_cli_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+database+"`"); err != nil {
			t.Errorf("drop database %s: %v", database, err)
		}
	})
	g := []string{"--store", "mysql:" + dsn, "--schema", database, "--prefix", "cli_"}
	args := func(a ...string) []string { return append(append([]string{}, g...), a...) }

	var mig migrateResult
	ok(t, &mig, args("migrate", "--status")...)
	require.Equal(t, 0, mig.Current)
	ok(t, &mig, args("migrate")...)
	require.Equal(t, mig.Known, mig.Current)
	require.Equal(t, "up to date", mig.Status)

	s, err := mysql.New(db, mysql.WithSchema(database), mysql.WithTablePrefix("cli_"))
	require.NoError(t, err)
	sd := seed(t, s)

	var sh showResult
	ok(t, &sh, args("show", "stuck/k-stuck")...)
	require.Equal(t, storage.StateStalled, sh.State)
	require.Len(t, sh.Errors, 1)
	var a actionResult
	ok(t, &a, args("retry", fmt.Sprint(sd.stalled))...)
	require.Equal(t, 1, a.Done)
	w, err := s.GetWorkflow(context.Background(), sd.stalled)
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, w.State)
	fails(t, 1, "workflow 999999", args("show", "999999")...)

	if _, isInspector := any(s).(storage.Inspector); !isInspector {
		fails(t, 1, "the mysql store does not support operator queries (storage.Inspector)", args("stats")...)
		fails(t, 1, "the mysql store does not support operator queries", args("children", fmt.Sprint(sd.parent))...)
	} else {
		var st statsResult
		ok(t, &st, args("stats")...)
		require.Equal(t, 11, st.Counted)
	}
}
