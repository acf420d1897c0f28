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
)

// skewedClock is the real clock shifted by skew: an engine on a host whose clock is wrong.
// Its timers run in real time.
type skewedClock struct{ skew time.Duration }

func (c skewedClock) Now() time.Time                         { return time.Now().Add(c.skew) }
func (c skewedClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// testE2ESkewedClocks: two workers over one store whose engines' clocks are an hour apart
// never run one workflow at once. Every workflow is started by the engine whose clock is
// right, so both workers see it due; to the worker an hour ahead, a workflow the other one
// holds looks due as well (its RunAt is by the holder's clock), so only the store's clock
// keeps it off. Leases are short and real, and each run outlasts its lease, so heartbeats
// must keep them; a sleep between the steps hands workflows from one worker to the other.
func testE2ESkewedClocks(t *testing.T, factory Factory) {
	const (
		workflows = 24
		steps     = 12
		stepTime  = 60 * time.Millisecond // the run after the sleep is longer than the lease
		leaseTTL  = 500 * time.Millisecond
		beat      = 25 * time.Millisecond
	)
	var (
		inFlight sync.Map // workflow key -> *atomic.Int32
		overlaps atomic.Int32
		first    atomic.Pointer[string] // describes the first overlap
	)
	mark := func(key, step string) {
		v, _ := inFlight.LoadOrStore(key, new(atomic.Int32))
		n := v.(*atomic.Int32)
		if n.Add(1) > 1 {
			overlaps.Add(1)
			what := fmt.Sprintf("workflow %s ran step %s while another step of it was running", key, step)
			first.CompareAndSwap(nil, &what)
		}
		time.Sleep(stepTime) // the step's work
		n.Add(-1)
	}
	wf := sdk.New("e2e.skew", func(c *sdk.Context, in int) (int, error) {
		for i := range steps {
			if i == 2 {
				if err := sdk.Sleep(c, "pause", 10*time.Millisecond); err != nil {
					return 0, err
				}
			}
			name := fmt.Sprint("s", i)
			if _, err := sdk.Step(c, name, func(context.Context) (int, error) { mark(c.Key(), name); return i, nil }); err != nil {
				return 0, err
			}
		}
		return in, nil
	})
	store := factory(t)
	behind, err := sdk.NewEngine(store, sdk.WithWorkflows(wf))
	require.NoError(t, err)
	ahead, err := sdk.NewEngine(store, sdk.WithWorkflows(wf), sdk.WithClock(skewedClock{time.Hour}))
	require.NoError(t, err)
	opts := []dispatch.Option{
		dispatch.Concurrency(4), dispatch.LeaseTTL(leaseTTL), dispatch.HeartbeatEvery(beat),
		dispatch.PollInterval(time.Millisecond, 10*time.Millisecond),
	}
	startWorkers(t, behind, 1, opts...)
	startWorkers(t, ahead, 1, opts...)

	ctx := resultCtx(t)
	handles := make([]*sdk.Handle[int], workflows)
	for i := range handles {
		handles[i], err = wf.Start(ctx, behind, fmt.Sprintf("s%d", i), i)
		require.NoError(t, err)
	}
	for i, h := range handles {
		out, err := h.Result(ctx)
		require.NoError(t, err, "workflow %s", h.Key())
		require.Equal(t, i, out)
	}
	if n := overlaps.Load(); n > 0 {
		t.Fatalf("two workers ran one workflow at the same time, %d times; first: %s", n, *first.Load())
	}
}
