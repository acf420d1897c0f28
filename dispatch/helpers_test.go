package dispatch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	bg = context.Background()
	t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

// waitFor is how long a test waits (real time) for something that should happen promptly.
const waitFor = 20 * time.Second

func openStore(t *testing.T) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), bolt.WithNoSync())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// newEngine builds an engine over store; each engine stands for one process.
func newEngine(t *testing.T, store storage.Storage, clock sdk.Clock, defs ...sdk.Definition) *sdk.Engine {
	t.Helper()
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(defs...), sdk.WithClock(clock), sdk.WithLogger(discard))
	require.NoError(t, err)
	return eng
}

// running is a Worker whose Run goroutine the test owns.
type running struct {
	w      *Worker
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// run starts w.Run in a goroutine; the worker is stopped at the latest when the test ends
// (before the store closes, as cleanups run in reverse order).
func run(t *testing.T, w *Worker) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(bg)
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop(t) })
	return r
}

// stop cancels Run's context and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(waitFor):
			r.err = errors.New("Run did not return after its context was cancelled")
			t.Error(r.err)
		}
	})
	return r.err
}

func newWorker(t *testing.T, eng *sdk.Engine, opts ...Option) *Worker {
	t.Helper()
	// A short default shutdown timeout keeps a failing test from hanging on a blocked step.
	w, err := New(eng, append([]Option{ShutdownTimeout(5 * time.Second)}, opts...)...)
	require.NoError(t, err)
	return w
}

func result[Out any](t *testing.T, h *sdk.Handle[Out]) Out {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, waitFor)
	defer cancel()
	out, err := h.Result(ctx)
	require.NoError(t, err)
	return out
}

func stored(t *testing.T, store storage.Storage, id int64) storage.Workflow {
	t.Helper()
	wf, err := store.GetWorkflow(bg, id)
	require.NoError(t, err)
	return wf
}

// eventually waits for cond, checking often; it never asserts on how long that took.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventuallyf(t, cond, waitFor, time.Millisecond, msg, args...)
}

// recClock is a FakeClock that records the duration of every After call, in order, so tests
// can see what the worker waits for (a poll backoff, a heartbeat) and know it is parked.
type recClock struct {
	*sdk.FakeClock
	mu     sync.Mutex
	afters []time.Duration
}

func newClock() *recClock { return &recClock{FakeClock: sdk.NewFakeClock(t0)} }

func (c *recClock) After(d time.Duration) <-chan time.Time {
	ch := c.FakeClock.After(d) // registered before it is recorded: a recorded wait is armed
	c.mu.Lock()
	c.afters = append(c.afters, d)
	c.mu.Unlock()
	return ch
}

// count reports how many After calls asked for exactly d.
func (c *recClock) count(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.afters {
		if a == d {
			n++
		}
	}
	return n
}

// waits returns the durations of After calls no longer than max, in order.
func (c *recClock) waits(max time.Duration) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, a := range c.afters {
		if a <= max {
			out = append(out, a)
		}
	}
	return out
}

// flakyStore fails the first fail claims, like a database that is restarting, and counts
// every Claim call.
type flakyStore struct {
	storage.Storage
	fail   atomic.Int64
	claims atomic.Int64
}

var errDatabaseDown = errors.New("connection refused: database restarting")

func (s *flakyStore) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	s.claims.Add(1)
	if s.fail.Add(-1) >= 0 {
		return nil, errDatabaseDown
	}
	return s.Storage.Claim(ctx, r)
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// maxGauge tracks a current count and the highest it ever reached.
type maxGauge struct{ cur, max atomic.Int64 }

func (g *maxGauge) inc() {
	n := g.cur.Add(1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (g *maxGauge) dec() { g.cur.Add(-1) }

// faultyStore fails the next failFinish FinishRun calls and failBeat Heartbeat calls with an
// error that is neither a lost lease nor a cancellation: a database blip. It counts the
// Heartbeat calls that reached the store and succeeded.
type faultyStore struct {
	storage.Storage
	failFinish, failBeat atomic.Int64
	beats                atomic.Int64
}

func (s *faultyStore) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	if s.failFinish.Add(-1) >= 0 {
		return errDatabaseDown
	}
	return s.Storage.FinishRun(ctx, l, f)
}

func (s *faultyStore) Heartbeat(ctx context.Context, l storage.Lease, ttl time.Duration, now time.Time) error {
	if s.failBeat.Add(-1) >= 0 {
		return errDatabaseDown
	}
	err := s.Storage.Heartbeat(ctx, l, ttl, now)
	if err == nil {
		s.beats.Add(1)
	}
	return err
}

// skewedClock is the real clock shifted by skew: a host whose clock is wrong. Its timers
// run in real time.
type skewedClock struct{ skew time.Duration }

func (c skewedClock) Now() time.Time                         { return time.Now().Add(c.skew) }
func (c skewedClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
