package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/mysql"
)

// TestMySQL runs every command against MySQL (MariaDB) through --store mysql:DSN, in a fresh
// database, as TestBolt and TestPostgres do.
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
	exercise(t, backendCase{
		flags: []string{"--store", "mysql:" + dsn, "--schema", database, "--prefix", "cli_"},
		open: func(t *testing.T) storage.Storage {
			s, err := mysql.New(db, mysql.WithSchema(database), mysql.WithTablePrefix("cli_"))
			require.NoError(t, err)
			return s
		},
	})
}
