package mysql

import (
	"context"
	"database/sql/driver"
	"sync"
	"sync/atomic"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"
)

// counts counts what a pool sends to the server, at the database/sql driver seam. It can
// also break a connection at a chosen statement, to play a network failure.
type counts struct {
	exec, query, prepare, begin, commit, rollback atomic.Int64
	mu                                            sync.Mutex
	log                                           []string

	// seq numbers statements (and commits); at statement dropAt the connection is closed,
	// before it is sent, or after it was applied when dropAfter is set.
	seq       atomic.Int64
	dropAt    atomic.Int64
	dropAfter atomic.Bool
	drops     atomic.Int64

	// deadlocks is how many of the next execs fail with InnoDB's deadlock error, unsent.
	deadlocks atomic.Int64
}

// deadlock reports whether the current exec is to fail with a deadlock, and counts it.
func (c *counts) deadlock() bool {
	for {
		n := c.deadlocks.Load()
		if n <= 0 {
			return false
		}
		if c.deadlocks.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// dropConnection arranges for the connection to break at the n-th statement from now.
func (c *counts) dropConnection(n int64, after bool) {
	c.dropAfter.Store(after)
	c.dropAt.Store(c.seq.Load() + n)
}

// fault reports whether the current statement is the one to break the connection at, and
// whether that happens after it was applied.
func (c *counts) fault() (drop, after bool) {
	n := c.seq.Add(1)
	if n != c.dropAt.Load() {
		return false, false
	}
	c.drops.Add(1)
	return true, c.dropAfter.Load()
}

// snapshot is a copy of the counters.
type snapshot struct{ Exec, Query, Prepare, Begin, Commit, Rollback int64 }

func (c *counts) snap() snapshot {
	return snapshot{c.exec.Load(), c.query.Load(), c.prepare.Load(), c.begin.Load(), c.commit.Load(), c.rollback.Load()}
}

// Statements is the number of statements sent (a prepare counts as one).
func (s snapshot) Statements() int64 { return s.Exec + s.Query + s.Prepare }

func (s snapshot) minus(o snapshot) snapshot {
	return snapshot{s.Exec - o.Exec, s.Query - o.Query, s.Prepare - o.Prepare, s.Begin - o.Begin, s.Commit - o.Commit, s.Rollback - o.Rollback}
}

func (c *counts) record(kind, query string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(query) > 160 {
		query = query[:160] + "..."
	}
	c.log = append(c.log, kind+": "+query)
}

// since returns the statements logged after the first n, for failure messages.
func (c *counts) since(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log[min(n, len(c.log)):]...)
}

func (c *counts) logLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.log)
}

// countingConnector wraps the driver's connector; its connections count what they send.
type countingConnector struct {
	driver.Connector
	c *counts
}

func (cc countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := cc.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: cc.c}, nil
}

// countingConn forwards every optional interface the go-sql-driver connection implements,
// counting statements, prepares and transactions.
type countingConn struct {
	driver.Conn
	c      *counts
	broken atomic.Bool
}

// drop closes the real connection, as a network failure would: the server rolls back its
// transaction. It returns what the driver returns then: driver.ErrBadConn when the failure
// was seen before anything was sent, gomysql.ErrInvalidConn when the request was sent and
// the reply lost.
func (cc *countingConn) drop(sent bool) error {
	cc.broken.Store(true)
	_ = cc.Conn.Close()
	if !sent {
		return driver.ErrBadConn
	}
	return gomysql.ErrInvalidConn
}

var (
	_ driver.ExecerContext      = (*countingConn)(nil)
	_ driver.QueryerContext     = (*countingConn)(nil)
	_ driver.ConnPrepareContext = (*countingConn)(nil)
	_ driver.ConnBeginTx        = (*countingConn)(nil)
	_ driver.Pinger             = (*countingConn)(nil)
	_ driver.SessionResetter    = (*countingConn)(nil)
	_ driver.Validator          = (*countingConn)(nil)
	_ driver.NamedValueChecker  = (*countingConn)(nil)
)

func (cc *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if cc.broken.Load() {
		return nil, driver.ErrBadConn
	}
	if cc.c.deadlock() {
		return nil, &gomysql.MySQLError{Number: erLockDeadlock, Message: "Deadlock found when trying to get lock (injected)"}
	}
	drop, after := cc.c.fault()
	if drop && !after {
		return nil, cc.drop(false)
	}
	res, err := cc.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	if drop {
		cc.c.exec.Add(1)
		cc.c.record("exec, then the connection broke", query)
		return nil, cc.drop(true)
	}
	if err != driver.ErrSkip { // skipped: database/sql prepares instead, counted there
		cc.c.exec.Add(1)
		cc.c.record("exec", query)
	}
	return res, err
}

func (cc *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if cc.broken.Load() {
		return nil, driver.ErrBadConn
	}
	if drop, _ := cc.c.fault(); drop {
		return nil, cc.drop(false)
	}
	rows, err := cc.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	if err != driver.ErrSkip {
		cc.c.query.Add(1)
		cc.c.record("query", query)
	}
	return rows, err
}

func (cc *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	cc.c.prepare.Add(1)
	cc.c.record("prepare", query)
	return cc.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (cc *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if cc.broken.Load() {
		return nil, driver.ErrBadConn
	}
	tx, err := cc.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	cc.c.begin.Add(1)
	return countingTx{Tx: tx, conn: cc}, nil
}

func (cc *countingConn) Ping(ctx context.Context) error {
	return cc.Conn.(driver.Pinger).Ping(ctx)
}

func (cc *countingConn) ResetSession(ctx context.Context) error {
	if cc.broken.Load() {
		return driver.ErrBadConn
	}
	return cc.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (cc *countingConn) IsValid() bool {
	return !cc.broken.Load() && cc.Conn.(driver.Validator).IsValid()
}

func (cc *countingConn) Close() error {
	if cc.broken.Load() {
		return nil
	}
	return cc.Conn.Close()
}

func (cc *countingConn) CheckNamedValue(v *driver.NamedValue) error {
	return cc.Conn.(driver.NamedValueChecker).CheckNamedValue(v)
}

type countingTx struct {
	driver.Tx
	conn *countingConn
}

func (t countingTx) Commit() error {
	t.conn.c.commit.Add(1)
	if t.conn.broken.Load() {
		return driver.ErrBadConn
	}
	drop, after := t.conn.c.fault()
	if drop && !after {
		return t.conn.drop(false)
	}
	err := t.Tx.Commit()
	if drop {
		return t.conn.drop(true)
	}
	return err
}

func (t countingTx) Rollback() error {
	t.conn.c.rollback.Add(1)
	if t.conn.broken.Load() {
		return driver.ErrBadConn
	}
	return t.Tx.Rollback()
}

// countingStore returns a migrated store in a fresh database over a pool of its own whose
// statements are counted.
func countingStore(t testing.TB) (*Store, *counts) {
	t.Helper()
	cfg := serverConfig(t)
	c, err := gomysql.NewConnector(cfg)
	require.NoError(t, err)
	n := &counts{}
	db := openConnector(countingConnector{Connector: c, c: n}, 4)
	s := newStore(t, db)
	// The flow cache loaded by Migrate is kept: a reload is one query at most once per
	// flowReload, which would land in a measurement now and then (TestFlowCacheReload).
	s.reloadEvery = 0
	return s, n
}
