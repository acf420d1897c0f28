package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/chronoforge/chronoforge/internal/sqlmigrate"
	"github.com/chronoforge/chronoforge/storage"
)

// Errors about the database schema, shared by the SQL backends: each is the same value as
// its namesake in package storage, so errors.Is matches either name.
var (
	// ErrSchemaTooNew is storage.ErrSchemaTooNew: the tables were migrated by a newer build
	// than this one, which could not keep them consistent. Upgrade the binary.
	ErrSchemaTooNew = storage.ErrSchemaTooNew
	// ErrNotMigrated is storage.ErrNotMigrated: the tables do not exist or are older than
	// this build. Call Migrate.
	ErrNotMigrated = storage.ErrNotMigrated
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations returns the embedded migrations in version order.
func migrations() ([]sqlmigrate.Migration, error) {
	return sqlmigrate.Load(migrationFiles, "migrations")
}

// SchemaVersion is the schema version this build migrates to and works with.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// Migrate creates the schema (with WithSchema) and the tables, or upgrades them to this
// build's version, in one transaction. It is idempotent, and safe when several processes
// call it at once: they take turns on a transaction-scoped advisory lock derived from the
// schema and prefix, and each applies only the migrations not yet recorded in the
// <prefix>schema_version table. A database migrated by a newer build gives an error wrapping
// ErrSchemaTooNew and is left untouched.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	err = retry(ctx, idempotent, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.migrate(ctx, tx, ms) })
	})
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: %w", s.versions, err)
	}
	s.migrated.Store(true)
	return nil
}

func (s *Store) migrate(ctx context.Context, tx pgx.Tx, ms []sqlmigrate.Migration) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	if s.schema != "" {
		// Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
		// database even when the schema exists.
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", s.schema).Scan(&exists); err != nil {
			return fmt.Errorf("look for schema %q: %w", s.schema, err)
		}
		if !exists {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA "`+s.schema+`"`); err != nil {
				return fmt.Errorf("create schema %q: %w", s.schema, err)
			}
		}
	}
	create := `CREATE TABLE IF NOT EXISTS ` + s.versions + ` (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`
	if _, err := tx.Exec(ctx, create); err != nil {
		return fmt.Errorf("create the version table: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+s.versions).Scan(&current); err != nil {
		return fmt.Errorf("read the schema version: %w", err)
	}
	if err := sqlmigrate.CheckNewer(s.versions, current, len(ms)); err != nil {
		return err
	}
	r := s.replacer()
	for _, m := range ms[current:] {
		if _, err := tx.Exec(ctx, r.Replace(m.SQL)); err != nil {
			return fmt.Errorf("apply %s: %w", m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+s.versions+` (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			return fmt.Errorf("record %s: %w", m.Name, err)
		}
	}
	return nil
}

// ready checks, once per store, that the tables are at this build's version, so a missing or
// mismatched schema gives a clear error instead of a confusing one from some statement.
func (s *Store) ready(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("postgres: %w", storage.ErrClosed)
	}
	if s.migrated.Load() {
		return nil
	}
	var current int
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+s.versions).Scan(&current)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined table or schema
		return fmt.Errorf("postgres: %w", sqlmigrate.Missing(s.versions))
	}
	if err != nil {
		return fmt.Errorf("postgres: read the schema version: %w", err)
	}
	if err := sqlmigrate.Check(s.versions, current, SchemaVersion()); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	s.migrated.Store(true)
	return nil
}
