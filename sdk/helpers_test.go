package sdk_test

import (
	"context"
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

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// env is an engine over a fresh bbolt store with a fake clock, driven by hand: drain claims
// and executes every due workflow, so tests decide exactly when time passes.
type env struct {
	t     *testing.T
	store storage.Storage
	count *countingStore
	clock *sdk.FakeClock
	eng   *sdk.Engine
}

func newEnv(t *testing.T, opts ...sdk.Option) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "sdk.db"), bolt.WithNoSync())
	require.NoError(t, err)
	return newEnvOn(t, st, opts...)
}

// newEnvOn is newEnv over the given store, which it closes when the test ends.
func newEnvOn(t *testing.T, st storage.Storage, opts ...sdk.Option) *env {
	t.Helper()
	t.Cleanup(func() { _ = st.Close() })
	cs := &countingStore{Storage: st}
	clock := sdk.NewFakeClock(t0)
	eng, err := sdk.NewEngine(cs, append([]sdk.Option{sdk.WithClock(clock), sdk.WithLogger(quietLogger())}, opts...)...)
	require.NoError(t, err)
	return &env{t: t, store: st, count: cs, clock: clock, eng: eng}
}

// quietLogger discards every record.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// drain runs every workflow due now until none is, and returns how many runs it made.
func (e *env) drain() int {
	e.t.Helper()
	runs := 0
	for {
		claimed, err := e.count.Claim(context.Background(), storage.ClaimRequest{
			Owner: "test", Limit: 10, Names: e.eng.Names(), TTL: time.Minute, Now: e.clock.Now(),
		})
		require.NoError(e.t, err)
		if len(claimed) == 0 {
			return runs
		}
		for _, wf := range claimed {
			require.NoError(e.t, e.eng.Execute(context.Background(), wf))
			runs++
		}
		require.Less(e.t, runs, 10000, "workflows never settle")
	}
}

func (e *env) state(id int64) storage.Workflow {
	e.t.Helper()
	wf, err := e.store.GetWorkflow(context.Background(), id)
	require.NoError(e.t, err)
	return wf
}

func (e *env) errors(id int64) []storage.ErrorRecord {
	e.t.Helper()
	recs, err := e.store.ListErrors(context.Background(), id, 0)
	require.NoError(e.t, err)
	return recs
}

// countingStore counts the calls made to the wrapped store, by method.
type countingStore struct {
	storage.Storage
	mu                                     sync.Mutex
	loadsByID                              map[int64]int
	loads, saves, finishes, spawns, counts atomic.Int64
	cleanups, creates                      atomic.Int64
}

func (c *countingStore) CreateWorkflows(ctx context.Context, ws []storage.NewWorkflow) ([]storage.Workflow, []bool, error) {
	c.creates.Add(1)
	return c.Storage.CreateWorkflows(ctx, ws)
}

func (c *countingStore) DeleteFinished(ctx context.Context, r storage.CleanupRequest) (storage.CleanupResult, error) {
	c.cleanups.Add(1)
	return c.Storage.DeleteFinished(ctx, r)
}

func (c *countingStore) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	c.spawns.Add(1)
	return c.Storage.SpawnBatch(ctx, l, r)
}

func (c *countingStore) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	c.counts.Add(1)
	return c.Storage.CountChildren(ctx, q)
}

func (c *countingStore) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	c.loads.Add(1)
	c.ran(id)
	return c.Storage.Load(ctx, id)
}

// Claim counts a first claim (token 1) as a run of its workflow: the SDK runs it from the
// claimed row, without a Load.
func (c *countingStore) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	got, err := c.Storage.Claim(ctx, r)
	for _, w := range got {
		if w.LeaseToken == 1 {
			c.ran(w.ID)
		}
	}
	return got, err
}

func (c *countingStore) ran(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loadsByID == nil {
		c.loadsByID = map[int64]int{}
	}
	c.loadsByID[id]++
}

func (c *countingStore) SaveSteps(ctx context.Context, l storage.Lease, cm storage.Commit) error {
	c.saves.Add(1)
	return c.Storage.SaveSteps(ctx, l, cm)
}

func (c *countingStore) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	c.finishes.Add(1)
	return c.Storage.FinishRun(ctx, l, f)
}

var ctx = context.Background()

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loadsOf returns how many runs read the workflow with this id: its Loads (replays), and its
// first run, which starts from the claimed row.
func (c *countingStore) loadsOf(id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loadsByID[id]
}

// settle drains and advances the clock by step until the workflow is no longer idle or
// running, and returns how many clock steps it took.
func (e *env) settle(id int64, step time.Duration) int {
	e.t.Helper()
	for i := 0; i < 10000; i++ {
		e.drain()
		w := e.state(id)
		if w.State != storage.StateIdle && w.State != storage.StateRunning {
			return i
		}
		e.clock.Advance(step)
	}
	e.t.Fatal("workflow never settled")
	return 0
}
