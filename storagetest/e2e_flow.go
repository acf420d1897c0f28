package storagetest

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

// flowFanOut is the default size of the FlowFanOut case's fan-out (FlowFanOutSize).
const flowFanOut = 10_000

// testE2EFlowFanOut: a SpawnEach of n (10,000) children whose workflow has a concurrency limit of
// 5 and a rate limit drains at those limits across two workers of 8 slots each, while
// workflows without a flow started meanwhile finish long before it; the most children seen
// running at once is logged and must be exactly the limit.
func testE2EFlowFanOut(t *testing.T, factory Factory, n int) {
	store := factory(t)
	if _, ok := store.(storage.FlowController); !ok {
		t.Skipf("capability %s: the store does not implement storage.FlowController", FlowControl)
	}
	const limit, rate, per = 5, 2500, time.Second
	var running, most, runs atomic.Int64
	child := sdk.New("e2e.flow.child", func(c *sdk.Context, i int) (int, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		runs.Add(1)
		time.Sleep(time.Millisecond) // long enough that runs overlap
		return i, nil
	}, sdk.WithLimits(sdk.Limits{Concurrency: limit, Rate: rate, Per: per}))
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	parent := sdk.New("e2e.flow.parent", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "items", sdk.SliceSource(items), func(i int) (sdk.Child, error) { return sdk.NewChild(child, i), nil })
		}, sdk.ProbeInterval(20*time.Millisecond, 200*time.Millisecond)); err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return 0, err
		}
		sum := 0
		for res, err := range sdk.BranchResults[int](c, "b", 1000) {
			if err != nil {
				return 0, err
			}
			sum += res.Output
		}
		return sum, nil
	})
	free := sdk.New("e2e.flow.free", func(c *sdk.Context, i int) (int, error) { return i, nil })
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(parent, child, free))
	require.NoError(t, err)
	startWorkers(t, eng, 2, dispatch8()...)
	// Its own deadline: at a concurrency of 5 the fan-out takes tens of seconds on a SQL
	// backend (each child waits for a claim under the flow's lock), not the few the other
	// cases take.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	h, err := parent.Start(ctx, eng, "p", 0)
	require.NoError(t, err)

	// Once children are held back, workflows without a flow still go through.
	require.Eventually(t, func() bool { return runs.Load() >= 2*limit }, e2eTimeout, time.Millisecond)
	for i := range 20 {
		fh, err := free.Start(ctx, eng, fmt.Sprint(i), i)
		require.NoError(t, err)
		got, err := fh.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, i, got)
	}
	freeDone := runs.Load()

	sum, err := h.Result(ctx)
	require.NoError(t, err)
	took := time.Since(began)
	require.Equal(t, n*(n-1)/2, sum)
	require.EqualValues(t, n, runs.Load(), "every child ran once")
	t.Logf("%d children at concurrency %d and %d per %v: at most %d running at once, %v; 20 free workflows done after %d children",
		n, limit, rate, per, most.Load(), took.Round(time.Millisecond), freeDone)
	require.EqualValues(t, limit, most.Load(), "the concurrency limit held across both workers, and was reached")
	require.Less(t, freeDone, int64(n/2), "workflows without a flow were not held behind the fan-out")
	// The rate is a floor on the time: N claims at most rate per window take at least
	// (N/rate - 1) windows.
	require.GreaterOrEqual(t, took, time.Duration(n/rate-1)*per, "the rate limit held")
}
