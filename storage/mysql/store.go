package mysql

import (
	"database/sql"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

var (
	_ storage.Storage        = (*Store)(nil)
	_ storage.FlowController = (*Store)(nil)
)

// DefaultTablePrefix is the prefix of the table names unless WithTablePrefix sets another.
const DefaultTablePrefix = "chrono_"

// identifier is what a schema name or table prefix may be: it is spliced into SQL, so only
// lower-case letters, digits and underscores, short enough that every derived name (tables,
// foreign keys) fits in MySQL's 64 characters.
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}$`)

// errClosed is returned by every method called after Close.
var errClosed = fmt.Errorf("mysql: %w", storage.ErrClosed)

// Store is a storage.Storage in MySQL 8.0+ or MariaDB 10.6+. It is safe for concurrent use
// by many goroutines, and any number of processes may use the same tables at once.
type Store struct {
	db     *sql.DB
	schema string // empty: the connection's default database
	prefix string

	workflows, steps, errors, messages, versions string // quoted, qualified table names
	flows, flowNames                             string
	q                                            queries

	// cache is what the store knows of the stored flows and of the (name, flow key) pairs,
	// which decides how Claim runs (see flowCache); reloadEvery is how often Claim reloads it
	// from the tables, at most (0: only once, for tests that count statements).
	cache       flowCache
	reloadEvery time.Duration

	// migrated is set once the schema version was found current (by Migrate or the first
	// call); until then every call checks it first.
	migrated atomic.Bool
	closed   atomic.Bool
}

type config struct {
	schema string
	prefix string
}

// Option configures New.
type Option func(*config) error

// WithSchema puts the tables in the named database (MySQL calls a schema a database)
// instead of the connection's default database; Migrate creates it if needed. The name must
// match ^[a-z_][a-z0-9_]{0,40}$; anything else makes New return an error wrapping
// storage.ErrInvalid.
func WithSchema(name string) Option {
	return func(c *config) error {
		if !identifier.MatchString(name) {
			return fmt.Errorf("%w: mysql: schema name %q must match %s", storage.ErrInvalid, name, identifier)
		}
		c.schema = name
		return nil
	}
}

// WithTablePrefix sets the prefix of the table names (default "chrono_"), so several
// independent stores can share one database. The prefix must match
// ^[a-z_][a-z0-9_]{0,40}$; anything else makes New return an error wrapping
// storage.ErrInvalid.
func WithTablePrefix(prefix string) Option {
	return func(c *config) error {
		if !identifier.MatchString(prefix) {
			return fmt.Errorf("%w: mysql: table prefix %q must match %s", storage.ErrInvalid, prefix, identifier)
		}
		c.prefix = prefix
		return nil
	}
}

// New returns a store over db, which the application opened with the
// github.com/go-sql-driver/mysql driver and keeps owning: Close leaves it open. New does not
// touch the database; call Migrate once (at deploy or start-up) before using the store. New
// returns an error wrapping storage.ErrInvalid for a nil db or an invalid option.
//
// The DSN needs nothing special (see the package documentation): parseTime and loc may be
// set either way. interpolateParams=true is recommended, since without it the driver makes
// each statement with arguments a prepare, an execute and a close.
func New(db *sql.DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: mysql: nil *sql.DB", storage.ErrInvalid)
	}
	c := config{prefix: DefaultTablePrefix}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: mysql: nil option", storage.ErrInvalid)
		}
		if err := opt(&c); err != nil {
			return nil, err
		}
	}
	s := &Store{db: db, schema: c.schema, prefix: c.prefix}
	s.workflows = s.table("workflows")
	s.steps = s.table("steps")
	s.errors = s.table("errors")
	s.messages = s.table("messages")
	s.versions = s.table("schema_version")
	s.flows = s.table("flows")
	s.flowNames = s.table("flow_names")
	s.reloadEvery = flowReload
	s.q = newQueries(s.replacer())
	return s, nil
}

// table returns the quoted, qualified name of one of the store's tables. Both parts were
// validated as identifiers, so quoting cannot be escaped.
func (s *Store) table(name string) string {
	t := "`" + s.prefix + name + "`"
	if s.schema != "" {
		t = "`" + s.schema + "`." + t
	}
	return t
}

// replacer fills the table-name placeholders of queries and migrations.
func (s *Store) replacer() *strings.Replacer {
	return strings.NewReplacer(
		"{{workflows}}", s.workflows,
		"{{steps}}", s.steps,
		"{{errors}}", s.errors,
		"{{messages}}", s.messages,
		"{{versions}}", s.versions,
		"{{flows}}", s.flows,
		"{{flow_names}}", s.flowNames,
		"{{prefix}}", s.prefix,
	)
}

// Schema returns the database the tables live in, or "" for the connection's default.
func (s *Store) Schema() string { return s.schema }

// TablePrefix returns the prefix of the table names.
func (s *Store) TablePrefix() string { return s.prefix }

// Close marks the store closed; later calls return an error. It leaves the *sql.DB open,
// since the application owns it.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}
