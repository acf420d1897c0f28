package storagetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// runEndToEnd runs real workflows through sdk and dispatch on stores made by factory: the
// promises users rely on (steps run once, crashes lose nothing, one runner per workflow),
// proven on the backend itself.
func runEndToEnd(t *testing.T, factory Factory, o options) {
	t.Run("e2e", func(t *testing.T) {
		cases := []storageCase{
			{"CompletesWorkflows", testE2ECompletes},
			{"ExclusiveAcrossWorkers", testE2EExclusive},
			{"SkewedClocksExclusive", testE2ESkewedClocks},
			{"ShutdownMidRunResumes", testE2EShutdownResumes},
			{"ExpiredLeaseTakenOver", testE2EExpiredLease},
			{"OneLoadPerRun", testE2EOneLoadPerRun},
			{"SignalWakesContinueIf", testE2ESignal},
			{"UnknownNameUntouched", testE2EUnknownName},
			{"CleanupWhileRunning", testE2ECleanupWhileRunning},
			{"Repeat", testE2ERepeat},
			{"FlowFanOut", func(t *testing.T, factory Factory) { testE2EFlowFanOut(t, factory, o.flowFanOut) }},
		}
		cases = append(cases, branchCases()...)
		cases = append(cases, messageCases()...)
		for _, c := range append(cases, traceCases()...) {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t, factory)
			})
		}
	})
}

// e2eTimeout bounds every wait of the end-to-end cases; it is a deadline, not a measurement.
const e2eTimeout = 60 * time.Second

// startWorkers runs n workers over eng until the test ends and waits for them to stop.
func startWorkers(t *testing.T, eng *sdk.Engine, n int, opts ...dispatch.Option) []*dispatch.Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	workers := make([]*dispatch.Worker, n)
	for i := range workers {
		w, err := dispatch.New(eng, append([]dispatch.Option{dispatch.PollInterval(5*time.Millisecond, 50*time.Millisecond)}, opts...)...)
		require.NoError(t, err)
		workers[i] = w
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return workers
}

func resultCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	t.Cleanup(cancel)
	return ctx
}

// counter counts executions per name.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) inc(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
	return c.n[name]
}

func (c *counter) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

func testE2ECompletes(t *testing.T, factory Factory) {
	var runs counter
	wf := sdk.New("e2e.complete", func(c *sdk.Context, in int) (int, error) {
		a, err := sdk.Step(c, "a", func(context.Context) (int, error) { runs.inc(fmt.Sprint(c.Key(), "/a")); return in * 2, nil })
		if err != nil {
			return 0, err
		}
		if err := sdk.Set(c, "a", a); err != nil {
			return 0, err
		}
		if err := sdk.Sleep(c, "pause", 20*time.Millisecond); err != nil {
			return 0, err
		}
		saved, _, err := sdk.Get[int](c, "a")
		if err != nil {
			return 0, err
		}
		return sdk.Step(c, "b", func(context.Context) (int, error) { runs.inc(fmt.Sprint(c.Key(), "/b")); return saved + 1, nil })
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	startWorkers(t, eng, 2, dispatch.Concurrency(4))
	ctx := resultCtx(t)
	const n = 40
	handles := make([]*sdk.Handle[int], n)
	for i := range handles {
		handles[i], err = wf.Start(ctx, eng, fmt.Sprintf("w%d", i), i)
		require.NoError(t, err)
	}
	for i, h := range handles {
		out, err := h.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 2*i+1, out)
		require.Equal(t, 1, runs.get(h.Key()+"/a"), "step a of %s ran more than once", h.Key())
		require.Equal(t, 1, runs.get(h.Key()+"/b"), "step b of %s ran more than once", h.Key())
	}
}

func testE2EExclusive(t *testing.T, factory Factory) {
	var inFlight sync.Map // key -> *atomic.Int32
	var overlaps atomic.Int32
	var runs counter
	mark := func(key, step string) {
		v, _ := inFlight.LoadOrStore(key, new(atomic.Int32))
		n := v.(*atomic.Int32)
		if n.Add(1) > 1 {
			overlaps.Add(1)
		}
		runs.inc(key + "/" + step)
		time.Sleep(time.Millisecond) // widen the window a second runner would need
		n.Add(-1)
	}
	wf := sdk.New("e2e.exclusive", func(c *sdk.Context, _ int) (int, error) {
		for _, s := range []string{"one", "two", "three"} {
			if _, err := sdk.Step(c, s, func(context.Context) (int, error) { mark(c.Key(), s); return 1, nil }); err != nil {
				return 0, err
			}
		}
		return 3, nil
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	startWorkers(t, eng, 4, dispatch.Concurrency(4))
	ctx := resultCtx(t)
	var handles []*sdk.Handle[int]
	for i := range 100 {
		h, err := wf.Start(ctx, eng, fmt.Sprintf("x%d", i), i)
		require.NoError(t, err)
		handles = append(handles, h)
	}
	for _, h := range handles {
		_, err := h.Result(ctx)
		require.NoError(t, err)
		for _, s := range []string{"one", "two", "three"} {
			require.Equal(t, 1, runs.get(h.Key()+"/"+s), "step %s of %s", s, h.Key())
		}
	}
	require.Zero(t, overlaps.Load(), "two workers ran one workflow at the same time")
}

func testE2EShutdownResumes(t *testing.T, factory Factory) {
	var runs counter
	entered := make(chan struct{}, 1)
	wf := sdk.New("e2e.shutdown", func(c *sdk.Context, _ int) (string, error) {
		if _, err := sdk.Step(c, "first", func(context.Context) (int, error) { runs.inc("first"); return 1, nil }); err != nil {
			return "", err
		}
		return sdk.Step(c, "second", func(ctx context.Context) (string, error) {
			if runs.inc("second") == 1 {
				entered <- struct{}{}
				<-ctx.Done() // the worker is killed while this step runs
				return "", ctx.Err()
			}
			return "done", nil
		})
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	ctx := resultCtx(t)
	h, err := wf.Start(ctx, eng, "k", 1)
	require.NoError(t, err)

	killWorkerWhen(ctx, t, eng, entered, "the step never started")
	w, err := eng.Get(ctx, h.ID())
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, w.State, "a worker that shuts down mid-run gives the workflow back")

	startWorkers(t, eng, 1)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "done", out)
	require.Equal(t, 1, runs.get("first"), "a committed step is not repeated")
	require.Equal(t, 2, runs.get("second"), "only the interrupted step runs again")
}

// killWorkerWhen runs one worker over eng until entered receives (a step has begun), then
// shuts it down at once, as a kill would, and waits for it to stop. It fails t with never if
// ctx ends first.
func killWorkerWhen(ctx context.Context, t *testing.T, eng *sdk.Engine, entered <-chan struct{}, never string) {
	t.Helper()
	w, err := dispatch.New(eng, dispatch.ShutdownTimeout(10*time.Millisecond), dispatch.PollInterval(5*time.Millisecond, 20*time.Millisecond))
	require.NoError(t, err)
	runCtx, kill := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(runCtx) }()
	select {
	case <-entered:
	case <-ctx.Done():
		kill()
		<-stopped
		t.Fatal(never)
	}
	kill()
	require.NoError(t, <-stopped)
}

func testE2EExpiredLease(t *testing.T, factory Factory) {
	var runs counter
	wf := sdk.New("e2e.lease", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "only", func(context.Context) (int, error) { return runs.inc("only"), nil })
	})
	store := factory(t)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(wf))
	require.NoError(t, err)
	ctx := resultCtx(t)
	h, err := wf.Start(ctx, eng, "k", 1)
	require.NoError(t, err)
	// A worker claims it and dies: it never heartbeats or finishes.
	dead, err := store.Claim(ctx, storage.ClaimRequest{Owner: "dead-worker", Limit: 1, TTL: 300 * time.Millisecond, Now: time.Now()})
	require.NoError(t, err)
	require.Len(t, dead, 1)

	startWorkers(t, eng, 1)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, out)
	// The dead worker's lease cannot write anything now (fencing).
	err = store.FinishRun(ctx, dead[0].Lease(), storage.Finish{State: storage.StateFailed, Commit: storage.Commit{Now: time.Now()}})
	require.ErrorIs(t, err, storage.ErrLeaseLost)
	w, err := eng.Get(ctx, h.ID())
	require.NoError(t, err)
	require.Equal(t, storage.StateCompleted, w.State)
}

// loadCounter counts Load calls.
type loadCounter struct {
	storage.Storage
	loads atomic.Int64
}

func (l *loadCounter) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	l.loads.Add(1)
	return l.Storage.Load(ctx, id)
}

func testE2EOneLoadPerRun(t *testing.T, factory Factory) {
	const steps = 100
	wf := sdk.New("e2e.load", func(c *sdk.Context, _ int) (int, error) {
		for i := range steps {
			if _, err := sdk.Step(c, fmt.Sprint("s", i), func(context.Context) (int, error) { return i, nil }); err != nil {
				return 0, err
			}
		}
		if err := sdk.Sleep(c, "pause", 10*time.Millisecond); err != nil {
			return 0, err
		}
		return steps, nil
	})
	store := &loadCounter{Storage: factory(t)}
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(wf))
	require.NoError(t, err)
	startWorkers(t, eng, 1)
	ctx := resultCtx(t)
	h, err := wf.Start(ctx, eng, "k", 1)
	require.NoError(t, err)
	_, err = h.Result(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, store.loads.Load(), "two runs (before and after the sleep): the first runs from its claim "+
		"(token 1: nothing stored to load), the second loads once, however many steps")
}

func testE2ESignal(t *testing.T, factory Factory) {
	var approved atomic.Bool
	wf := sdk.New("e2e.signal", func(c *sdk.Context, _ int) (string, error) {
		if err := sdk.ContinueIf(c, "approved", func(context.Context) (bool, error) { return approved.Load(), nil }); err != nil {
			return "", err
		}
		return "approved", nil
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	startWorkers(t, eng, 1)
	ctx := resultCtx(t)
	h, err := wf.Start(ctx, eng, "k", 1)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		w, err := eng.Get(ctx, h.ID())
		return err == nil && w.State == storage.StateIdle && w.Wait.Kind == "signal"
	}, e2eTimeout, 5*time.Millisecond)
	approved.Store(true)
	require.NoError(t, h.Signal(ctx))
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "approved", out)
}

func testE2EUnknownName(t *testing.T, factory Factory) {
	store := factory(t)
	ctx := resultCtx(t)
	now := time.Now()
	stranger, _, err := store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "e2e.nobody.knows", Key: "k", Input: []byte(`1`), RunAt: now, Now: now})
	require.NoError(t, err)
	known := sdk.New("e2e.known", func(c *sdk.Context, in int) (int, error) { return in, nil })
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(known))
	require.NoError(t, err)
	workers := startWorkers(t, eng, 1)
	h, err := known.Start(ctx, eng, "k", 7)
	require.NoError(t, err)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, out)
	require.Eventually(t, func() bool { return workers[0].Stats().UnknownWorkflows > 0 }, e2eTimeout, 5*time.Millisecond,
		"the worker reports workflows it cannot run")
	got, err := store.GetWorkflow(ctx, stranger.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, got.State, "a workflow no worker knows is left untouched, not failed")
	require.Equal(t, stranger.RunAt, got.RunAt)
	require.Zero(t, got.LeaseToken)
}

// dispatch8 is the worker shape of the fan-out cases: 8 slots, fast idle polling.
func dispatch8() []dispatch.Option {
	return []dispatch.Option{dispatch.Concurrency(8), dispatch.PollInterval(time.Millisecond, 10*time.Millisecond)}
}
