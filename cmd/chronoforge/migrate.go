package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/chronoforge/chronoforge/storage/mysql"
	"github.com/chronoforge/chronoforge/storage/postgres"
)

// migrateResult is the output of migrate.
type migrateResult struct {
	Backend string `json:"backend"`
	// Current is the schema version the store records (0: not migrated); Known is this
	// build's. Both are 0 for bbolt, which migrates itself on open.
	Current  int    `json:"current_version"`
	Known    int    `json:"known_version"`
	Status   string `json:"status"`
	Migrated bool   `json:"migrated"`
}

// runMigrate runs the backend's Migrate, or with --status reads the schema version only.
func runMigrate(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	status := fs.Bool("status", false, "print the schema status without changing anything")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *status && strings.HasPrefix(c.globals.store, "bolt:") {
		path := strings.TrimPrefix(c.globals.store, "bolt:")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			res := migrateResult{Backend: "bolt", Status: "bbolt file " + path + " does not exist: 'chronoforge migrate' creates it"}
			if c.json() {
				return c.emit(res)
			}
			fmt.Fprintln(c.stdout, res.Status)
			return nil
		}
	}
	if err := c.open(ctx, !*status); err != nil {
		return err
	}
	res := migrateResult{Backend: c.kind}
	switch c.kind {
	case "bolt":
		res.Status = "bbolt needs no migration: its buckets are created and upgraded when the file is opened"
		res.Migrated = !*status
	case "postgres", "mysql":
		if !*status {
			m := c.store.(interface{ Migrate(context.Context) error })
			if err := m.Migrate(ctx); err != nil {
				return err
			}
			res.Migrated = true
		}
		res.Current, res.Known, err = c.schemaVersion(ctx)
		if err != nil {
			return err
		}
		switch {
		case res.Current == 0:
			res.Status = "not migrated: run 'chronoforge migrate'"
		case res.Current < res.Known:
			res.Status = fmt.Sprintf("behind: %d migration(s) to apply; run 'chronoforge migrate'", res.Known-res.Current)
		case res.Current > res.Known:
			res.Status = "newer than this build: upgrade chronoforge"
		default:
			res.Status = "up to date"
		}
	}
	if c.json() {
		return c.emit(res)
	}
	if res.Migrated && c.kind != "bolt" {
		fmt.Fprintln(c.stdout, "migrated")
	}
	if c.kind != "bolt" {
		fmt.Fprintf(c.stdout, "schema version %d of %d: %s\n", res.Current, res.Known, res.Status)
	} else {
		fmt.Fprintln(c.stdout, res.Status)
	}
	return nil
}

// schemaVersion reads the version recorded in the store's schema_version table (0 when the
// table or schema does not exist) and this build's version, writing nothing.
func (c *cli) schemaVersion(ctx context.Context) (current, known int, err error) {
	switch c.kind {
	case "postgres":
		s := c.store.(*postgres.Store)
		table := `"` + s.TablePrefix() + `schema_version"`
		if s.Schema() != "" {
			table = `"` + s.Schema() + `".` + table
		}
		err = c.pgPool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+table).Scan(&current)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") {
			err = nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("postgres: read the schema version: %w", err)
		}
		return current, postgres.SchemaVersion(), nil
	default:
		s := c.store.(*mysql.Store)
		table := "`" + s.TablePrefix() + "schema_version`"
		if s.Schema() != "" {
			table = "`" + s.Schema() + "`." + table
		}
		err = c.sqlDB.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+table).Scan(&current)
		var me *gomysql.MySQLError
		if errors.As(err, &me) && (me.Number == 1146 || me.Number == 1049) { // no such table, no such database
			err = nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("mysql: read the schema version: %w", err)
		}
		return current, mysql.SchemaVersion(), nil
	}
}
