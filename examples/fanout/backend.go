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

// backends opens each storage backend by name: dsn is the backend's address (a file for
// bbolt; empty picks a temporary one).
var backends = map[string]func(ctx context.Context, dsn string) (storage.Storage, func(), error){
	"bolt": func(ctx context.Context, dsn string) (storage.Storage, func(), error) {
		cleanup := func() {}
		if dsn == "" {
			dir, err := os.MkdirTemp("", "chronoforge-fanout-")
			if err != nil {
				return nil, nil, err
			}
			dsn = filepath.Join(dir, "fanout.db")
			cleanup = func() { os.RemoveAll(dir) }
		}
		s, err := bolt.Open(dsn)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return s, func() { s.Close(); cleanup() }, nil
	},
	"postgres": func(ctx context.Context, dsn string) (storage.Storage, func(), error) {
		pool, err := pgxpool.New(ctx, orEnv(dsn, "CHRONOFORGE_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
		if err != nil {
			return nil, nil, err
		}
		s, err := postgres.New(pool, postgres.WithTablePrefix("fanout_"))
		if err == nil {
			err = s.Migrate(ctx)
		}
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return s, func() { s.Close(); pool.Close() }, nil
	},
	"mysql": func(ctx context.Context, dsn string) (storage.Storage, func(), error) {
		cfg, err := driver.ParseDSN(orEnv(dsn, "CHRONOFORGE_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"))
		if err != nil {
			return nil, nil, err
		}
		cfg.InterpolateParams = true // one round trip per statement
		connector, err := driver.NewConnector(cfg)
		if err != nil {
			return nil, nil, err
		}
		db := sql.OpenDB(connector)
		db.SetMaxOpenConns(16)
		s, err := mysql.New(db, mysql.WithTablePrefix("fanout_"))
		if err == nil {
			err = s.Migrate(ctx)
		}
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		return s, func() { s.Close(); db.Close() }, nil
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

func openBackend(ctx context.Context, name, dsn string) (storage.Storage, func(), error) {
	open, ok := backends[name]
	if !ok {
		return nil, nil, fmt.Errorf("unknown backend %q (have %s)", name, backendNames())
	}
	return open(ctx, dsn)
}
