// Package postgres is the PostgreSQL chronoforge backend: a storage.Storage over a pgx pool
// the application owns, for many workers in many processes.
//
// Every unit of the contract is one SQL statement, so one round trip and one (implicit)
// transaction: a fenced write checks the lease and writes the workflow row, its step records
// and its error records together in data-modifying CTEs; Load reads the workflow and its
// steps in one UNION ALL query; Claim leases a batch with one UPDATE over a
// FOR UPDATE SKIP LOCKED subquery; SpawnBatch inserts a whole batch of children from arrays.
// Work that becomes runnable is announced with pg_notify in the same statement, and Listen
// turns those notifications into wake-ups for workers (see Store.Listen).
//
// The tables (named with a prefix, "chrono_" by default, optionally in a schema of their own)
// are created by Migrate from versioned migrations embedded in the binary:
//
//	<prefix>workflows       the queue entry and the workflow's state, one row per workflow
//	<prefix>steps           step records, unique by (workflow_id, name)
//	<prefix>errors          error records
//	<prefix>messages        workflows' mailboxes (SendMessage, ConsumeMessage)
//	<prefix>flows           stored flows (PutFlow) with their rate windows
//	<prefix>flow_names      the (flow key, workflow name) pairs workflows were created with
//	<prefix>schema_version  the migrations applied
//
// Times are stored as timestamptz, with PostgreSQL's microsecond precision: a time passed in
// comes back truncated to the microsecond. A lease's expiry is the server's now() plus the
// TTL, set and checked inside the claiming, heartbeating and fenced statements themselves
// (see the fence condition for why now() and not clock_timestamp()), so leases run by the
// database's clock and no worker's. Text needs a UTF8 database; error messages and
// other free text are stored with invalid UTF-8 and NUL bytes replaced.
//
// # Table maintenance
//
// After its first 1,000 spawned children, and then every 20,000, a store refreshes the
// planner's statistics of the workflows table (ANALYZE), so that claims keep walking the
// runnable index while a fan-out grows the table faster than autovacuum analyzes it. Where
// autovacuum is off for the table, the store also vacuums it after every 20,000 rows it
// claimed (WithVacuumEvery): each claimed row leaves a dead entry at the front of the
// runnable index, which every later claim walks over until a VACUUM removes it, so without
// one a claim costs time in proportion to the rows claimed before it. Neither task runs
// inside the call that made it due: they run in the background, one at a time per store
// (triggers that arrive meanwhile coalesce into one more run), bounded by a statement_timeout
// (one minute for ANALYZE, ten for VACUUM), and Close stops them and waits. A failure only
// forgoes that run: it is logged as a warning (see WithLogger), not returned.
//
// # Flow control
//
// The store implements storage.FlowController. A workflow's flow key is its flow column; the
// runnable index holds only the rows without one, and the governed rows have an index of
// their own by (flow, name, run_at, id), so a flow's held-back backlog is never walked by
// the claims of other workflows, and a claim reads a limited flow's rows only as far as its
// room. The flows table holds the stored flows, each with the times of its claims in the
// current rate window, and the flow_names table every (flow, name) pair a workflow was
// created with (written by the creating statement), from which a claim learns the flow keys
// of its names. A claim of names without flows is the claim as before flow control; one with
// flows of priority only is one statement too; one with a limited flow locks its flows and
// claims in a second statement, both pipelined (after a setting of their plans) in one round
// trip and one implicit transaction, which makes the limits exact across processes (see
// flow.go). Claims assume
// the READ COMMITTED isolation level, PostgreSQL's default, under which each statement of a
// transaction takes a new snapshot.
//
// Two limits of the design: a run counts against its flow's concurrency while its run_at
// (the claimer's now plus the TTL) is after the claiming caller's now, so a run claimed by a
// worker whose clock ran more than its TTL behind is not counted; and a limit set while a
// claim of the flow's workflows runs on the fast path (which saw no limit) applies from the
// claims after it, so those few runs may exceed it.
//
// # Operator queries
//
// The store implements storage.Inspector with one statement per call, over indexes it
// already has: CountStates walks the primary key backwards from the newest ID, BranchCounts
// reads the children index (parent step, state, id) with a LIMIT per state, and Backlog
// walks the runnable index (run_at, id) from the oldest due row. ListWorkflows pages in
// both directions on the primary key (or the children index). A listing by key prefix
// compares the key's first characters with the prefix, which is bytewise under any
// collation; the unique (name, key) index finds the name's keys, but a range on key would
// be bytewise only under the C collation, so its cost grows with the keys of that name
// (for a name holding most of the table, the planner reads the table). No index was added
// for it: every index of the workflows table takes an entry on each of the non-HOT
// updates a workflow goes through (claim, finish), which would tax every run to speed up
// an operator's listing.
package postgres

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/storage"
)

var (
	_ storage.Storage        = (*Store)(nil)
	_ storage.Notifier       = (*Store)(nil)
	_ storage.GroupFinisher  = (*Store)(nil)
	_ storage.Inspector      = (*Store)(nil)
	_ storage.FlowController = (*Store)(nil)
)

// DefaultTablePrefix is the prefix of the table names unless WithTablePrefix sets another.
const DefaultTablePrefix = "chrono_"

// identifier is what a schema name or table prefix may be: it is spliced into SQL, so only
// lower-case letters, digits and underscores, short enough that every derived name fits in
// PostgreSQL's 63 bytes.
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}$`)

// Store is a storage.Storage in PostgreSQL. It is safe for concurrent use by many goroutines,
// and any number of processes may use the same tables at once.
type Store struct {
	pool   *pgxpool.Pool
	schema string // empty: the connection's search_path decides
	prefix string

	workflows, steps, errors, messages, versions string // quoted, schema-qualified table names
	flows, flowNames                             string
	channel                                      string // the NOTIFY channel of these tables
	lockKey                                      int64  // the advisory lock Migrate holds
	q                                            queries

	// tiers caches, per set of claimed names, which claim path their last claim found they
	// need: it picks Claim's statements, never what they claim.
	tiers tierCache

	// migrated is set once the schema version was found current (by Migrate or the first
	// call); until then every call checks it first.
	migrated atomic.Bool
	closed   atomic.Bool // set by Close; every method then returns storage.ErrClosed

	listen listener
	maint  *maintainer
}

type config struct {
	schema      string
	prefix      string
	logger      *slog.Logger
	vacuumEvery int
}

// Option configures New.
type Option func(*config) error

// WithSchema puts the tables in the named schema (Migrate creates it if needed) instead of
// the first schema of the connection's search_path. The name must match
// ^[a-z_][a-z0-9_]{0,40}$; anything else makes New return an error wrapping
// storage.ErrInvalid.
func WithSchema(name string) Option {
	return func(c *config) error {
		if !identifier.MatchString(name) {
			return fmt.Errorf("%w: postgres: schema name %q must match %s", storage.ErrInvalid, name, identifier)
		}
		c.schema = name
		return nil
	}
}

// WithTablePrefix sets the prefix of the table, index and constraint names (default
// "chrono_"), so that several independent stores can share a schema. It must match
// ^[a-z_][a-z0-9_]{0,40}$; anything else makes New return an error wrapping storage.ErrInvalid.
func WithTablePrefix(prefix string) Option {
	return func(c *config) error {
		if !identifier.MatchString(prefix) {
			return fmt.Errorf("%w: postgres: table prefix %q must match %s", storage.ErrInvalid, prefix, identifier)
		}
		c.prefix = prefix
		return nil
	}
}

// WithLogger sets the logger of the store's background work (default slog.Default()): table
// maintenance logs its failures there as warnings. A nil logger makes New return an error
// wrapping storage.ErrInvalid.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: postgres: nil logger", storage.ErrInvalid)
		}
		c.logger = l
		return nil
	}
}

// WithVacuumEvery sets how many rows this store claims between its vacuums of the workflows
// table (default DefaultVacuumEvery), which it runs only where autovacuum is off for the
// table; 0 turns them off. A negative n makes New return an error wrapping storage.ErrInvalid.
// See the package documentation (Table maintenance) for why.
func WithVacuumEvery(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("%w: postgres: vacuum interval %d claimed rows must not be negative", storage.ErrInvalid, n)
		}
		c.vacuumEvery = n
		return nil
	}
}

// New returns a store over pool. It does not touch the database: call Migrate once (at
// deployment or start-up) to create or upgrade the tables. The application owns pool; Close
// leaves it open. New returns an error wrapping storage.ErrInvalid for a nil pool or an
// invalid option.
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: postgres: nil pool", storage.ErrInvalid)
	}
	cfg := config{prefix: DefaultTablePrefix, logger: slog.Default(), vacuumEvery: DefaultVacuumEvery}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: postgres: nil option", storage.ErrInvalid)
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	s := &Store{pool: pool, schema: cfg.schema, prefix: cfg.prefix}
	s.workflows = s.table("workflows")
	s.steps = s.table("steps")
	s.errors = s.table("errors")
	s.messages = s.table("messages")
	s.versions = s.table("schema_version")
	s.flows = s.table("flows")
	s.flowNames = s.table("flow_names")
	s.channel = channelName(cfg.schema, cfg.prefix)
	s.lockKey = lockKey(cfg.schema, cfg.prefix)
	s.q = buildQueries(s)
	s.listen.s = s
	s.maint = newMaintainer(s, cfg.logger, cfg.vacuumEvery)
	return s, nil
}

// table returns the quoted, qualified name of one of the store's tables. The parts were
// validated as identifiers, so quoting cannot be escaped.
func (s *Store) table(name string) string {
	t := `"` + s.prefix + name + `"`
	if s.schema != "" {
		return `"` + s.schema + `".` + t
	}
	return t
}

// channelName is the NOTIFY channel of one schema and prefix. Channel names are identifiers
// of at most 63 bytes; a long schema and prefix are replaced by a hash of them.
func channelName(schema, prefix string) string {
	name := prefix + "wake"
	if schema != "" {
		name = schema + "_" + name
	}
	if len(name) <= 63 {
		return name
	}
	h := fnv.New64a()
	h.Write([]byte(schema + "." + prefix))
	return fmt.Sprintf("chrono_wake_%016x", h.Sum64())
}

// lockKey is the advisory lock key of Migrate for one schema and prefix.
func lockKey(schema, prefix string) int64 {
	h := fnv.New64a()
	h.Write([]byte("chronoforge.migrate:" + schema + "." + prefix))
	return int64(h.Sum64())
}

// Schema returns the schema of the tables, or "" when the search_path decides.
func (s *Store) Schema() string { return s.schema }

// TablePrefix returns the prefix of the table names.
func (s *Store) TablePrefix() string { return s.prefix }

// Channel returns the NOTIFY channel on which the store announces runnable work.
func (s *Store) Channel() string { return s.channel }

// Close stops the store's listener (closing every channel Listen returned) and its table
// maintenance, and waits for both. It leaves the pool open: the application owns it. Every
// method called after Close returns an error wrapping storage.ErrClosed; a second Close
// returns nil.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.listen.close()
	s.maint.close()
	return nil
}

// replacer fills the table-name placeholders of the SQL text in this package.
func (s *Store) replacer() *strings.Replacer {
	schemaDot := ""
	if s.schema != "" {
		schemaDot = `"` + s.schema + `".`
	}
	return strings.NewReplacer(
		"{{workflows}}", s.workflows,
		"{{steps}}", s.steps,
		"{{errors}}", s.errors,
		"{{messages}}", s.messages,
		"{{schema_version}}", s.versions,
		"{{flows}}", s.flows,
		"{{flow_names}}", s.flowNames,
		"{{schema.}}", schemaDot,
		"{{prefix}}", s.prefix,
		"{{channel}}", "'"+s.channel+"'",
	)
}
