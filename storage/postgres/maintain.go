package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Table maintenance. A large fan-out changes the workflows table faster than autovacuum may
// notice (or at all, where autovacuum is off), in two ways that make each claim cost time in
// proportion to the fan-out, so the store does the maintenance itself:
//
//   - Statistics. With statistics that still describe a small table the planner claims by
//     sorting every due row instead of walking the runnable index. The store refreshes them
//     (ANALYZE samples a bounded number of rows: tens of milliseconds) after its first
//     analyzeFirst spawned children and then every analyzeEvery.
//   - Dead index entries. A claimed row leaves its entry at the front of the runnable index
//     (a claim changes indexed columns, so it is never a HOT update), and every later claim
//     walks over those entries until VACUUM removes them: after 200,000 claims, a claim read
//     1,000 index pages and took 8 ms where it takes 0.2 ms on a vacuumed table, and a
//     fan-out of 1,000,000 slowed from 1,200 to 900 children a second. Where autovacuum is off
//     for the table, the store vacuums it after every vacuumEvery rows it claimed (about a
//     second on a table of 1,000,000 rows). Where autovacuum is on, it is left to autovacuum.
//
// Neither runs inside the call that triggered it: they run in the background, one at a time,
// with a timeout, and a failure is logged, since there is no caller to return it to and it
// only forgoes that refresh.

const (
	// analyzeFirst and analyzeEvery are how many spawned children make the store refresh the
	// planner's statistics of the workflows table: the first time (the table may never have
	// been analyzed), and every time after.
	analyzeFirst = 1_000
	analyzeEvery = 20_000
	// DefaultVacuumEvery is how many claimed rows make the store vacuum the workflows table
	// where autovacuum is off for it (see WithVacuumEvery).
	DefaultVacuumEvery = 20_000
	// maintenanceTimeout bounds one ANALYZE, vacuumTimeout one VACUUM: the server cancels it
	// then (statement_timeout), and the client gives up maintenanceGrace later if the server
	// does not answer.
	maintenanceTimeout = time.Minute
	vacuumTimeout      = 10 * time.Minute
	maintenanceGrace   = time.Second
)

// job is a set of maintenance tasks.
type job uint8

const (
	jobAnalyze job = 1 << iota // refresh the planner's statistics
	jobVacuum                  // vacuum, unless autovacuum does
)

// maintainer runs the store's table maintenance. It starts a goroutine when a task is due
// and none runs; a task due while one runs is remembered, and triggers that arrive meanwhile
// coalesce into it. Close stops and waits for the goroutine.
type maintainer struct {
	s           *Store
	log         *slog.Logger
	timeout     time.Duration // of one ANALYZE; tests shorten it
	vacuumEvery int64         // claimed rows between vacuums; 0: never

	// autovacuum reports whether autovacuum covers the workflows table; tests replace it.
	autovacuum func(ctx context.Context) (bool, error)

	spawned  atomic.Int64 // children spawned since the last analyze trigger
	analyzed atomic.Bool  // the first analyze trigger happened
	claimed  atomic.Int64 // rows claimed since the last vacuum trigger

	stop   context.Context // ends when the store is closed
	cancel context.CancelFunc

	mu      sync.Mutex
	running bool // a goroutine runs tasks
	pending job  // tasks due that it has not started
	closed  bool
	wg      sync.WaitGroup
}

func newMaintainer(s *Store, log *slog.Logger, vacuumEvery int) *maintainer {
	stop, cancel := context.WithCancel(context.Background())
	m := &maintainer{s: s, log: log, timeout: maintenanceTimeout, vacuumEvery: int64(vacuumEvery), stop: stop, cancel: cancel}
	m.autovacuum = m.autovacuumOn
	return m
}

// childrenSpawned counts n children a spawn inserted and triggers a refresh when they make
// analyzeFirst (the first time) or analyzeEvery since the last trigger. It never blocks.
func (m *maintainer) childrenSpawned(n int) {
	if n == 0 {
		return
	}
	total := m.spawned.Add(int64(n))
	threshold := int64(analyzeEvery)
	if !m.analyzed.Load() {
		threshold = analyzeFirst
	}
	if total < threshold || !m.spawned.CompareAndSwap(total, 0) {
		return
	}
	m.analyzed.Store(true)
	m.trigger(jobAnalyze)
}

// rowsClaimed counts n rows a claim took and triggers a vacuum when they make vacuumEvery
// since the last trigger. It never blocks.
func (m *maintainer) rowsClaimed(n int) {
	if n == 0 || m.vacuumEvery <= 0 {
		return
	}
	total := m.claimed.Add(int64(n))
	if total < m.vacuumEvery || !m.claimed.CompareAndSwap(total, 0) {
		return
	}
	m.trigger(jobVacuum)
}

// trigger makes the tasks j due: it starts a goroutine to run them, or, when one is running,
// leaves them for it to run after its current task. After close it does nothing.
func (m *maintainer) trigger(j job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.pending |= j
	if !m.running {
		m.running = true
		m.wg.Add(1)
		go m.run()
	}
}

// run runs the due tasks until none is pending: a vacuum before an analyze, whose
// statistics it then reflects.
func (m *maintainer) run() {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		j := m.pending
		m.pending = 0
		if j == 0 || m.closed {
			m.running = false
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		if j&jobVacuum != 0 {
			m.vacuum()
		}
		if j&jobAnalyze != 0 {
			m.analyze()
		}
	}
}

// analyze runs ANALYZE on the workflows table, in a transaction whose statement_timeout is
// the maintainer's timeout, and logs the outcome: a failure as a warning, success at debug
// level. Nothing is logged when the store was closed meanwhile.
func (m *maintainer) analyze() {
	ctx, cancel := context.WithTimeout(m.stop, m.timeout+maintenanceGrace)
	defer cancel()
	start := time.Now()
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, m.s.pool, func(tx pgx.Tx) error {
			// A lock held elsewhere (a long DDL) must not keep a connection waiting for ever.
			ms := max(m.timeout.Milliseconds(), 1)
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", ms)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "ANALYZE "+m.s.workflows)
			return err
		})
	})
	switch {
	case m.stop.Err() != nil:
	case err != nil:
		m.log.Warn("postgres: table maintenance failed: the planner's statistics were not refreshed",
			"table", m.s.workflows, "timeout", m.timeout, "error", err)
	default:
		m.log.Debug("postgres: table maintenance: refreshed the planner's statistics",
			"table", m.s.workflows, "duration", time.Since(start))
	}
}

// autovacuumOn reports whether autovacuum covers the workflows table: it is on for the
// server and not turned off for the table (autovacuum_enabled = false).
func (m *maintainer) autovacuumOn(ctx context.Context) (bool, error) {
	var on bool
	err := m.s.pool.QueryRow(ctx, `SELECT current_setting('autovacuum')::bool AND coalesce((
		SELECT option_value::bool FROM pg_class c, pg_options_to_table(c.reloptions)
		WHERE c.oid = $1::text::regclass AND option_name = 'autovacuum_enabled'), true)`, m.s.workflows).Scan(&on)
	return on, err
}

// vacuum runs VACUUM on the workflows table where autovacuum does not, and logs the outcome
// as analyze does. VACUUM cannot run in a transaction, so its statement_timeout is set on
// the connection for the statement and reset after it; a connection that cannot be reset is
// closed rather than returned to the pool. INDEX_CLEANUP ON makes it clean the indexes even
// when few heap pages have dead entries (the runnable index is what needs it); SKIP_LOCKED
// skips it when another VACUUM or a DDL holds the table.
func (m *maintainer) vacuum() {
	timeout := vacuumTimeout
	if m.timeout < maintenanceTimeout {
		timeout = m.timeout // tests shorten both
	}
	ctx, cancel := context.WithTimeout(m.stop, timeout+maintenanceGrace)
	defer cancel()
	start := time.Now()
	on, err := m.autovacuum(ctx)
	if err == nil && on {
		m.log.Debug("postgres: table maintenance: autovacuum is on for the table; left to it", "table", m.s.workflows)
		return
	}
	if err == nil {
		err = m.vacuumOnce(ctx, timeout)
	}
	switch {
	case m.stop.Err() != nil:
	case err != nil:
		m.log.Warn("postgres: table maintenance failed: the table was not vacuumed",
			"table", m.s.workflows, "timeout", timeout, "error", err)
	default:
		m.log.Debug("postgres: table maintenance: vacuumed the table",
			"table", m.s.workflows, "duration", time.Since(start))
	}
}

// vacuumOnce runs the VACUUM statement on a connection of its own with the timeout.
func (m *maintainer) vacuumOnce(ctx context.Context, timeout time.Duration) error {
	conn, err := m.s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		reset, cancel := context.WithTimeout(context.Background(), maintenanceGrace)
		defer cancel()
		if _, err := conn.Exec(reset, "RESET statement_timeout"); err != nil {
			_ = conn.Conn().Close(reset)
		}
		conn.Release()
	}()
	ms := max(timeout.Milliseconds(), 1)
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET statement_timeout = %d", ms)); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "VACUUM (INDEX_CLEANUP ON, SKIP_LOCKED) "+m.s.workflows)
	return err
}

// close stops a running refresh and waits for its goroutine; later triggers do nothing. The
// client abandons the statement at once; the server ends it by its statement_timeout at the
// latest.
func (m *maintainer) close() {
	m.mu.Lock()
	m.closed = true
	m.cancel()
	m.mu.Unlock()
	m.wg.Wait()
}
