package main

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
	"github.com/chronoforge/chronoforge/storage/mysql"
	"github.com/chronoforge/chronoforge/storage/postgres"
)

// connectTimeout bounds opening a store and reaching its server.
const connectTimeout = 10 * time.Second

// cli is one invocation: its flags, its outputs and the store it opened.
type cli struct {
	name, summary  string
	globals        globals
	stdout, stderr io.Writer

	store   storage.Storage
	kind    string // bolt, postgres or mysql
	pgPool  *pgxpool.Pool
	sqlDB   *sql.DB
	closers []func()
}

// close releases the store.
func (c *cli) close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// storeSpec is a parsed --store: its kind and where the store is.
type storeSpec struct {
	kind  string // bolt, postgres or mysql
	path  string // bolt
	pg    *pgxpool.Config
	mysql sqldriver.Connector
}

// parseStore parses the value of --store (and checks --schema and --prefix against it)
// without opening anything; every error is a usage error that names the flag, and shows no
// part of the value but its scheme (the text before the first colon), so no password.
func parseStore(spec, schema, prefix string) (storeSpec, error) {
	if spec == "" {
		return storeSpec{}, usagef("no store: give --store bolt:PATH, postgres:DSN or mysql:DSN, or set CHRONOFORGE_STORE")
	}
	kind, addr, ok := strings.Cut(spec, ":")
	if !ok || addr == "" {
		// Not the value itself: a DSN without its scheme may hold a password.
		return storeSpec{}, usagef("--store has no scheme or no address: want bolt:PATH, postgres:DSN or mysql:DSN")
	}
	switch kind {
	case "bolt":
		if schema != "" || prefix != "" {
			return storeSpec{}, usagef("--schema and --prefix apply to postgres and mysql, not bolt")
		}
		return storeSpec{kind: kind, path: addr}, nil
	case "postgres", "postgresql":
		dsn := addr
		if strings.HasPrefix(addr, "//") {
			dsn = spec // postgres://... is itself a URL
		}
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return storeSpec{}, usagef("--store: bad postgres DSN: %v", redactErr(err))
		}
		return storeSpec{kind: "postgres", pg: cfg}, nil
	case "mysql":
		cfg, err := driver.ParseDSN(addr)
		if err != nil {
			return storeSpec{}, usagef("--store: bad mysql DSN: %v", err)
		}
		cfg.ParseTime = true
		cfg.InterpolateParams = true
		connector, err := driver.NewConnector(cfg)
		if err != nil {
			return storeSpec{}, usagef("--store: bad mysql DSN: %v", err)
		}
		return storeSpec{kind: kind, mysql: connector}, nil
	}
	return storeSpec{}, usagef("--store: unknown scheme %q (want bolt, postgres or mysql)", kind)
}

// open opens the store named by --store. create allows a bbolt file that does not exist yet
// (migrate); every other command wants an existing file, so a mistyped path is an error
// rather than a new empty store.
func (c *cli) open(ctx context.Context, create bool) error {
	spec, err := parseStore(c.globals.store, c.globals.schema, c.globals.prefix)
	if err != nil {
		return err
	}
	c.kind = spec.kind
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	switch spec.kind {
	case "bolt":
		if !create {
			if _, err := os.Stat(spec.path); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("bolt file %s does not exist (run 'chronoforge migrate' to create it)", spec.path)
				}
				return fmt.Errorf("bolt file %s: %w", spec.path, err)
			}
		}
		s, err := bolt.Open(spec.path, bolt.WithTimeout(2*time.Second))
		if err != nil {
			return err
		}
		c.store = s
		c.closers = append(c.closers, func() { _ = s.Close() })
	case "postgres":
		pool, err := pgxpool.NewWithConfig(ctx, spec.pg)
		if err != nil {
			return fmt.Errorf("postgres: %v", redactErr(err))
		}
		c.closers = append(c.closers, pool.Close)
		if err := pool.Ping(ctx); err != nil {
			return fmt.Errorf("postgres: cannot reach the server: %v", redactErr(err))
		}
		var opts []postgres.Option
		if c.globals.schema != "" {
			opts = append(opts, postgres.WithSchema(c.globals.schema))
		}
		if c.globals.prefix != "" {
			opts = append(opts, postgres.WithTablePrefix(c.globals.prefix))
		}
		s, err := postgres.New(pool, opts...)
		if err != nil {
			return usagef("%v", err)
		}
		c.pgPool = pool
		c.store = s
		c.closers = append(c.closers, func() { _ = s.Close() })
	case "mysql":
		db := sql.OpenDB(spec.mysql)
		c.closers = append(c.closers, func() { _ = db.Close() })
		if err := db.PingContext(ctx); err != nil {
			return fmt.Errorf("mysql: cannot reach the server: %v", err)
		}
		var opts []mysql.Option
		if c.globals.schema != "" {
			opts = append(opts, mysql.WithSchema(c.globals.schema))
		}
		if c.globals.prefix != "" {
			opts = append(opts, mysql.WithTablePrefix(c.globals.prefix))
		}
		s, err := mysql.New(db, opts...)
		if err != nil {
			return usagef("%v", err)
		}
		c.sqlDB = db
		c.store = s
		c.closers = append(c.closers, func() { _ = s.Close() })
	}
	return nil
}

// engine returns an engine over the store for the operator calls (Retry, Signal, Cancel):
// they need no registered workflows.
func (c *cli) engine() (*sdk.Engine, error) {
	return sdk.NewEngine(c.store)
}

// inspector returns the store's operator queries, or a clear error when it has none.
func (c *cli) inspector() (storage.Inspector, error) {
	in, ok := c.store.(storage.Inspector)
	if !ok {
		return nil, fmt.Errorf("the %s store does not support operator queries (storage.Inspector)", c.kind)
	}
	return in, nil
}

// json reports whether -o json was asked for.
func (c *cli) json() bool { return c.globals.output == "json" }

// emit writes v as one JSON document.
func (c *cli) emit(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table returns a tab writer over stdout; flush it when done.
func (c *cli) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
}

// redactErr keeps a pgx error's message and drops a DSN it may quote.
func redactErr(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) && pe.Unwrap() != nil {
		return "cannot parse the connection string: " + pe.Unwrap().Error()
	}
	return err.Error()
}
