package dispatch

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func TestNewRejectsInvalidOptions(t *testing.T) {
	t.Parallel()
	wf := sdk.New("noop", func(*sdk.Context, int) (int, error) { return 0, nil })
	eng := newEngine(t, openStore(t), newClock(), wf)
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"zero concurrency", []Option{Concurrency(0)}, "Concurrency"},
		{"zero batch", []Option{BatchSize(0)}, "BatchSize"},
		{"batch over MaxClaim", []Option{BatchSize(storage.MaxClaim + 1)}, "BatchSize"},
		{"zero ttl", []Option{LeaseTTL(0)}, "LeaseTTL"},
		{"negative heartbeat", []Option{HeartbeatEvery(-time.Second)}, "HeartbeatEvery"},
		{"heartbeat not under ttl", []Option{LeaseTTL(time.Second), HeartbeatEvery(time.Second)}, "HeartbeatEvery"},
		{"heartbeat over default ttl", []Option{HeartbeatEvery(time.Minute)}, "HeartbeatEvery"},
		{"ttl too short to heartbeat", []Option{LeaseTTL(2)}, "LeaseTTL"},
		{"poll min zero", []Option{PollInterval(0, time.Second)}, "PollInterval"},
		{"poll max under min", []Option{PollInterval(time.Second, time.Millisecond)}, "PollInterval"},
		{"negative shutdown", []Option{ShutdownTimeout(-1)}, "ShutdownTimeout"},
		{"empty owner", []Option{Owner("")}, "Owner"},
		{"long owner", []Option{Owner(string(make([]byte, storage.MaxOwnerLen+1)))}, "Owner"},
		{"zero unknown check", []Option{UnknownCheckEvery(0)}, "UnknownCheckEvery"},
		{"nil option", []Option{nil}, "nil option"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(eng, tc.opts...)
			require.ErrorIs(t, err, storage.ErrInvalid)
			require.Contains(t, err.Error(), tc.want)
		})
	}

	_, err := New(nil)
	require.ErrorIs(t, err, storage.ErrInvalid)
	_, err = New(newEngine(t, openStore(t), newClock()))
	require.ErrorIs(t, err, storage.ErrInvalid, "an engine without workflows would claim every name")

	w, err := New(eng, LeaseTTL(time.Minute), ShutdownTimeout(0))
	require.NoError(t, err)
	require.Equal(t, 20*time.Second, w.cfg.heartbeat, "heartbeat defaults to a third of the TTL")
	require.Equal(t, DefaultConcurrency, w.cfg.batch, "batch defaults to the concurrency")
	require.Zero(t, w.cfg.shutdownTimeout)
	require.NotEmpty(t, w.Owner())
	require.LessOrEqual(t, len(w.Owner()), storage.MaxOwnerLen)
}

func TestStartedWorkflowRunsAndReturnsItsResult(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	greet := sdk.New("greet", func(c *sdk.Context, name string) (string, error) {
		return sdk.Step(c, "compose", func(context.Context) (string, error) { return "hello, " + name, nil })
	})
	eng := newEngine(t, store, clock, greet)
	w := newWorker(t, eng)
	r := run(t, w)

	h, err := greet.Start(bg, eng, "k1", "ada")
	require.NoError(t, err)
	require.Equal(t, "hello, ada", result(t, h))

	require.NoError(t, r.stop(t))
	s := w.Stats()
	require.EqualValues(t, 1, s.Claimed)
	require.EqualValues(t, 1, s.Finished)
	require.Zero(t, s.RunErrors)
	require.Zero(t, s.Running)
}

func TestConcurrencyIsNeverExceeded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		prefetch []Option
		held     int64 // workflows claimed while three runs block: the slots and the prefetch
	}{
		{"default: no prefetch", nil, 3},
		{"prefetch 3", []Option{Prefetch(3)}, 6},
		{"prefetch 5", []Option{Prefetch(5)}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := openStore(t)
			clock := newClock()
			var g maxGauge
			gate := make(chan struct{})
			wf := sdk.New("busy", func(c *sdk.Context, in int) (int, error) {
				return sdk.Step(c, "work", func(context.Context) (int, error) {
					g.inc()
					defer g.dec()
					<-gate
					return in, nil
				})
			})
			eng := newEngine(t, store, clock, wf)
			// A batch larger than the slots: a claim must still never take more than the free
			// slots and the prefetch room.
			w := newWorker(t, eng, append([]Option{Concurrency(3), BatchSize(10)}, tc.prefetch...)...)
			run(t, w)

			var hs []*sdk.Handle[int]
			for i := range 12 {
				h, err := wf.Start(bg, eng, fmt.Sprint(i), i)
				require.NoError(t, err)
				hs = append(hs, h)
			}
			eventually(t, func() bool { return g.cur.Load() == 3 && w.Stats().Claimed == tc.held }, "three runs in flight, the rest claimed ahead")
			time.Sleep(20 * time.Millisecond) // a claim beyond the room would show by now
			require.EqualValues(t, tc.held, w.Stats().Claimed, "no workflow claimed beyond the free slots and the prefetch room")
			require.EqualValues(t, 3, w.Stats().Running, "claimed-ahead workflows wait: they are not running")
			close(gate)
			for i, h := range hs {
				require.Equal(t, i, result(t, h))
			}
			require.EqualValues(t, 3, g.max.Load(), "never more than Concurrency runs at once")
			require.EqualValues(t, 12, w.Stats().Claimed)
		})
	}
}

func TestManyWorkersRunEachWorkflowOnceAndNeverTogether(t *testing.T) {
	t.Parallel()
	const n, workers = 100, 4
	store := openStore(t)
	var inflight [n]atomic.Int64
	var overlaps atomic.Int64
	var steps [n][3]atomic.Int64
	item := sdk.New("item", func(c *sdk.Context, i int) (int, error) {
		if inflight[i].Add(1) != 1 {
			overlaps.Add(1)
		}
		defer inflight[i].Add(-1)
		step := func(k int) func(context.Context) (int, error) {
			return func(context.Context) (int, error) { steps[i][k].Add(1); return i * 10, nil }
		}
		a, err := sdk.Step(c, "one", step(0))
		if err != nil {
			return 0, err
		}
		if _, err := sdk.Step(c, "two", step(1)); err != nil {
			return 0, err
		}
		// A run boundary: the rest runs in a second claim, likely by another worker.
		if err := sdk.Sleep(c, "nap", time.Millisecond); err != nil {
			return 0, err
		}
		b, err := sdk.Step(c, "three", step(2))
		return a + b, err
	})

	var engines []*sdk.Engine
	var ws []*Worker
	for i := range workers {
		eng := newEngine(t, store, sdk.SystemClock{}, item) // one engine per "process"
		w := newWorker(t, eng, Concurrency(4), PollInterval(time.Millisecond, 10*time.Millisecond), Owner(fmt.Sprintf("w%d", i)))
		run(t, w)
		engines = append(engines, eng)
		ws = append(ws, w)
	}
	var hs []*sdk.Handle[int]
	for i := range n {
		h, err := item.Start(bg, engines[i%workers], fmt.Sprint(i), i)
		require.NoError(t, err)
		hs = append(hs, h)
	}
	for i, h := range hs {
		require.Equal(t, i*20, result(t, h))
	}
	require.Zero(t, overlaps.Load(), "a workflow ran on two workers at once")
	for i := range n {
		for k := range 3 {
			require.EqualValues(t, 1, steps[i][k].Load(), "workflow %d step %d", i, k)
		}
	}
	var claimed, finished int64
	for _, w := range ws {
		s := w.Stats()
		require.Zero(t, s.RunErrors)
		require.Zero(t, s.HeartbeatsLost)
		claimed += s.Claimed
		finished += s.Finished
	}
	require.EqualValues(t, 2*n, claimed, "each workflow is claimed once per run, two runs each")
	eventually(t, func() bool {
		var f int64
		for _, w := range ws {
			f += w.Stats().Finished
		}
		return f == 2*n
	}, "every claimed run finishes")
}

func TestRunTwiceAtOnceIsRefused(t *testing.T) {
	t.Parallel()
	wf := sdk.New("noop", func(*sdk.Context, int) (int, error) { return 0, nil })
	w := newWorker(t, newEngine(t, openStore(t), newClock(), wf))
	r := run(t, w)
	eventually(t, w.running.Load, "Run started")
	require.ErrorIs(t, w.Run(bg), ErrRunning)
	require.NoError(t, r.stop(t))

	// After it returned, Run may be called again.
	ctx, cancel := context.WithCancel(bg)
	cancel()
	require.NoError(t, w.Run(ctx))
}

// Workflows claimed ahead are given back at once when the worker stops, not after their
// lease's TTL: the run in flight gets the graceful wait, the waiting ones are released.
func TestPrefetchedWorkflowsAreReleasedOnStop(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	entered, gate := make(chan struct{}, 1), make(chan struct{})
	wf := sdk.New("queued", func(c *sdk.Context, in int) (int, error) {
		return sdk.Step(c, "work", func(context.Context) (int, error) {
			if in == 0 {
				entered <- struct{}{}
				<-gate
			}
			return in, nil
		})
	})
	eng := newEngine(t, store, clock, wf)
	w := newWorker(t, eng, Concurrency(1), Prefetch(2), LeaseTTL(time.Hour))
	h0, err := wf.Start(bg, eng, "0", 0)
	require.NoError(t, err)
	r := run(t, w)
	<-entered
	var queued []*sdk.Handle[int]
	for i := 1; i <= 2; i++ {
		h, err := wf.Start(bg, eng, fmt.Sprint(i), i)
		require.NoError(t, err)
		queued = append(queued, h)
	}
	eventually(t, func() bool { return w.Stats().Claimed == 3 }, "two workflows claimed ahead")

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop(t) }()
	for _, h := range queued {
		eventually(t, func() bool {
			d, err := h.Describe(bg)
			return err == nil && d.State == sdk.StateIdle && d.LeaseUntil.IsZero()
		}, "a claimed-ahead workflow is released at once, its lease (an hour) not waited out")
	}
	close(gate)
	require.NoError(t, <-stopped)
	require.Equal(t, 0, result(t, h0))
	d, err := queued[0].Describe(bg)
	require.NoError(t, err)
	require.Equal(t, sdk.StateIdle, d.State, "released, never run")
}
