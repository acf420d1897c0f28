package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	driver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
	"github.com/chronoforge/chronoforge/storage/mysql"
	"github.com/chronoforge/chronoforge/storage/postgres"
)

// opened is a storage backend ready for the example: size reports the bytes its data takes
// on disk (tables and indexes, or the bbolt file), close releases it.
type opened struct {
	store storage.Storage
	size  func(ctx context.Context) (int64, error)
	close func()
}

// pgVacuumEvery is the -pg-vacuum-every flag: postgres.WithVacuumEvery.
var pgVacuumEvery = postgres.DefaultVacuumEvery

// backends opens each storage backend by name: dsn is the backend's address (a file for
// bbolt; empty picks a temporary one).
var backends = map[string]func(ctx context.Context, dsn string) (opened, error){
	"bolt": func(ctx context.Context, dsn string) (opened, error) {
		cleanup := func() {}
		if dsn == "" {
			dir, err := os.MkdirTemp("", "chronoforge-fanout-")
			if err != nil {
				return opened{}, err
			}
			dsn = filepath.Join(dir, "fanout.db")
			cleanup = func() { os.RemoveAll(dir) }
		}
		s, err := bolt.Open(dsn)
		if err != nil {
			cleanup()
			return opened{}, err
		}
		size := func(context.Context) (int64, error) {
			fi, err := os.Stat(dsn)
			if err != nil {
				return 0, err
			}
			return fi.Size(), nil
		}
		return opened{s, size, func() { s.Close(); cleanup() }}, nil
	},
	"postgres": func(ctx context.Context, dsn string) (opened, error) {
		pool, err := pgxpool.New(ctx, orEnv(dsn, "CHRONOFORGE_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
		if err != nil {
			return opened{}, err
		}
		s, err := postgres.New(pool, postgres.WithTablePrefix("fanout_"), postgres.WithVacuumEvery(pgVacuumEvery))
		if err == nil {
			err = s.Migrate(ctx)
		}
		if err != nil {
			pool.Close()
			return opened{}, err
		}
		size := func(ctx context.Context) (int64, error) {
			var n int64
			err := pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
				FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'fanout\_%'`).Scan(&n)
			return n, err
		}
		return opened{s, size, func() { s.Close(); pool.Close() }}, nil
	},
	"mysql": func(ctx context.Context, dsn string) (opened, error) {
		cfg, err := driver.ParseDSN(orEnv(dsn, "CHRONOFORGE_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"))
		if err != nil {
			return opened{}, err
		}
		cfg.InterpolateParams = true // one round trip per statement
		connector, err := driver.NewConnector(cfg)
		if err != nil {
			return opened{}, err
		}
		db := sql.OpenDB(connector)
		db.SetMaxOpenConns(16)
		s, err := mysql.New(db, mysql.WithTablePrefix("fanout_"))
		if err == nil {
			err = s.Migrate(ctx)
		}
		if err != nil {
			db.Close()
			return opened{}, err
		}
		size := func(ctx context.Context) (int64, error) {
			// information_schema's figures are InnoDB's estimates, refreshed by ANALYZE.
			var n int64
			err := db.QueryRowContext(ctx, `SELECT coalesce(sum(data_length + index_length), 0)
				FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'fanout\_%'`).Scan(&n)
			return n, err
		}
		return opened{s, size, func() { s.Close(); db.Close() }}, nil
	},
}

// orEnv returns dsn, else the environment variable, else def.
func orEnv(dsn, env, def string) string {
	if dsn != "" {
		return dsn
	}
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

func backendNames() string {
	var names []string
	for n := range backends {
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

func openBackend(ctx context.Context, name, dsn string) (opened, error) {
	open, ok := backends[name]
	if !ok {
		return opened{}, fmt.Errorf("unknown backend %q (have %s)", name, backendNames())
	}
	return open(ctx, dsn)
}
