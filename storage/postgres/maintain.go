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

// Table maintenance. A large fan-out changes the workflows table faster than autovacuum's
// analyze may notice (or at all, where autovacuum is off); with statistics that still
// describe a small table the planner claims by sorting every due row instead of walking the
// runnable index, and each claim then costs time in proportion to the backlog. So the store
// refreshes the table's statistics itself (ANALYZE samples a bounded number of rows: tens of
// milliseconds) after its first analyzeFirst spawned children and then every analyzeEvery.
// The refresh never runs inside the spawn that triggered it: it runs in the background, one
// at a time, with its own timeout, and its failure is logged, since there is no caller to
// return it to and it only forgoes the refresh.

const (
	// analyzeFirst and analyzeEvery are how many spawned children make the store refresh the
	// planner's statistics of the workflows table: the first time (the table may never have
	// been analyzed), and every time after.
	analyzeFirst = 1_000
	analyzeEvery = 20_000
	// maintenanceTimeout bounds one refresh: the server cancels it then (statement_timeout),
	// and the client gives up maintenanceGrace later if the server does not answer.
	maintenanceTimeout = time.Minute
	maintenanceGrace   = time.Second
)

// maintainer runs the store's table maintenance. It starts a goroutine when a refresh is
// due and none runs; a refresh due while one runs is remembered, and triggers that arrive
// meanwhile coalesce into it. Close stops and waits for the goroutine.
type maintainer struct {
	s       *Store
	log     *slog.Logger
	timeout time.Duration // of one refresh; tests shorten it

	spawned  atomic.Int64 // children spawned since the last trigger
	analyzed atomic.Bool  // the first trigger happened

	stop   context.Context // ends when the store is closed
	cancel context.CancelFunc

	mu      sync.Mutex
	running bool // a goroutine runs refreshes
	pending bool // a trigger arrived while it ran: one more refresh is due
	closed  bool
	wg      sync.WaitGroup
}

func newMaintainer(s *Store, log *slog.Logger) *maintainer {
	stop, cancel := context.WithCancel(context.Background())
	return &maintainer{s: s, log: log, timeout: maintenanceTimeout, stop: stop, cancel: cancel}
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
	m.trigger()
}

// trigger starts a refresh in the background, or, when one is running, makes it run once
// more after it ends. After close it does nothing.
func (m *maintainer) trigger() {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
	case m.running:
		m.pending = true
	default:
		m.running = true
		m.wg.Add(1)
		go m.run()
	}
}

// run refreshes until no trigger is pending.
func (m *maintainer) run() {
	defer m.wg.Done()
	for {
		m.analyze()
		m.mu.Lock()
		if !m.pending || m.closed {
			m.running, m.pending = false, false
			m.mu.Unlock()
			return
		}
		m.pending = false
		m.mu.Unlock()
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
