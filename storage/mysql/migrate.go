package mysql

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

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

// statements splits a migration into its statements: each ends with a semicolon at the end
// of a line. Comment lines never end one, and chunks of only comments are dropped.
func statements(script string) []string {
	var (
		out []string
		cur strings.Builder
	)
	flush := func() {
		stmt := strings.TrimSpace(cur.String())
		cur.Reset()
		for _, line := range strings.Split(stmt, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
				out = append(out, stmt)
				return
			}
		}
	}
	for _, line := range strings.SplitAfter(script, "\n") {
		cur.WriteString(line)
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(l, "--") && strings.HasSuffix(l, ";") {
			flush()
		}
	}
	flush()
	return out
}

// lockPoll is how long one GET_LOCK waits before Migrate checks its context again.
const lockPoll = 2 // seconds

// Migrate creates or upgrades the tables to this build's schema version, applying the
// embedded migrations that the <prefix>schema_version table does not record yet (and
// creating the database named by WithSchema if it does not exist). It is idempotent, and
// safe when several processes call it at once: they serialise on a named lock (GET_LOCK)
// derived from the database and prefix, held on one connection for the whole upgrade.
//
// A database whose recorded version is newer than this build gives an error wrapping
// ErrSchemaTooNew and is left untouched. MySQL commits each DDL statement by itself, so a
// migration cut short (a lost connection) is not rolled back; its statements are
// repeatable, and the next Migrate finishes it.
func (s *Store) Migrate(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	defer conn.Close()

	if s.schema != "" {
		// Created only when missing, so a user without the CREATE privilege can migrate a
		// database made for it.
		var found int
		err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?", s.schema).Scan(&found)
		if err == nil && found == 0 {
			_, err = conn.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+s.schema+"` CHARACTER SET utf8mb4")
		}
		if err != nil {
			return fmt.Errorf("mysql: migrate: create database %s: %w", s.schema, err)
		}
	}
	database := s.schema
	if database == "" {
		var name sql.NullString
		if err := conn.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&name); err != nil {
			return fmt.Errorf("mysql: migrate: %w", err)
		}
		if !name.Valid || name.String == "" {
			return fmt.Errorf("mysql: migrate: the connection has no default database: name one in the DSN or use WithSchema")
		}
		database = name.String
	}

	key := lockKey(database, s.prefix)
	if err := getLock(ctx, conn, key); err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	defer func() {
		// The lock is the connection's: releasing it must not depend on ctx, and closing the
		// connection would release it anyway.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(rctx, "DO RELEASE_LOCK(?)", key)
	}()

	r := s.replacer()
	if _, err := conn.ExecContext(ctx, r.Replace(createVersions)); err != nil {
		return fmt.Errorf("mysql: migrate: create %s: %w", s.versions, err)
	}
	var current int
	if err := conn.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+s.versions).Scan(&current); err != nil {
		return fmt.Errorf("mysql: migrate: read %s: %w", s.versions, err)
	}
	if err := sqlmigrate.CheckNewer(s.versions, current, len(ms)); err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	for _, m := range ms[current:] {
		for i, stmt := range statements(r.Replace(m.SQL)) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil && !alreadyApplied(stmt, err) {
				return fmt.Errorf("mysql: migrate: %s statement %d: %w", m.Name, i+1, err)
			}
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO "+s.versions+" (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6))", m.Version, m.Name); err != nil {
			return fmt.Errorf("mysql: migrate: record %s: %w", m.Name, err)
		}
	}
	s.migrated.Store(true)
	// The store starts with the flows as they are, so its first claim need not load them.
	if err := s.reloadFlows(ctx); err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	return nil
}

// alreadyApplied reports whether err says that the ALTER TABLE stmt had been applied before:
// it adds a column or an index that exists. One ALTER TABLE is atomic, so a migration cut
// short after it and run again goes on past it. (MySQL has no ADD COLUMN IF NOT EXISTS.)
func alreadyApplied(stmt string, err error) bool {
	var my *gomysql.MySQLError
	if !errors.As(err, &my) || (my.Number != erDupFieldName && my.Number != erDupKeyName) {
		return false
	}
	return strings.HasPrefix(strings.ToUpper(strings.TrimLeft(uncomment(stmt), " \t\n")), "ALTER TABLE")
}

// uncomment drops the comment lines of a statement.
func uncomment(stmt string) string {
	var b strings.Builder
	for _, line := range strings.Split(stmt, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// createVersions is the table that records applied migrations; it exists before any of them.
const createVersions = `CREATE TABLE IF NOT EXISTS {{versions}} (
    version    INT            NOT NULL,
    name       VARBINARY(255) NOT NULL,
    applied_at DATETIME(6)    NOT NULL,
    PRIMARY KEY (version)
) ENGINE = InnoDB`

// lockKey names the GET_LOCK of one database and prefix. Lock names are global to the server
// and at most 64 characters, so it is a digest.
func lockKey(database, prefix string) string {
	sum := sha256.Sum256([]byte(database + "\x00" + prefix))
	return "chronoforge.migrate." + hex.EncodeToString(sum[:])[:40]
}

// getLock takes the named lock on conn, waiting for other processes as long as ctx allows.
func getLock(ctx context.Context, conn *sql.Conn, key string) error {
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", key, lockPoll).Scan(&got); err != nil {
			return fmt.Errorf("take lock %s: %w", key, err)
		}
		if got.Valid && got.Int64 == 1 {
			return nil
		}
		if !got.Valid {
			return fmt.Errorf("take lock %s: GET_LOCK failed", key)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("take lock %s: %w", key, err)
		}
	}
}

// ready returns ctx's error if it is done, and checks, once per store, that the tables are at
// this build's version, so a missing or mismatched schema gives a clear error instead of a
// confusing one from some statement.
func (s *Store) ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	if s.migrated.Load() {
		return nil
	}
	var current int
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		return s.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+s.versions).Scan(&current)
	})
	var my *gomysql.MySQLError
	if errors.As(err, &my) && (my.Number == erNoSuchTable || my.Number == erBadDB) {
		return fmt.Errorf("mysql: %w", sqlmigrate.Missing(s.versions))
	}
	if err != nil {
		return fmt.Errorf("mysql: read the schema version: %w", err)
	}
	if err := sqlmigrate.Check(s.versions, current, SchemaVersion()); err != nil {
		return fmt.Errorf("mysql: %w", err)
	}
	s.migrated.Store(true)
	return nil
}
