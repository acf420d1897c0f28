package storagetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// testE2EMergeWakeNoProbe: a parent parked on its merge resumes after its last child though
// the engine's clock never moves, so its merge probe (default interval) never comes due: the
// workers that finish the children wake it. Two workers share the children, so the last ones
// may finish on different workers at once. At 1 child and at 300.
func testE2EMergeWakeNoProbe(t *testing.T, factory Factory) {
	for _, n := range []int{1, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			gate := make(chan struct{})
			child := sdk.New("e2e.wake.child", func(c *sdk.Context, in int) (int, error) {
				return sdk.Step(c, "work", func(ctx context.Context) (int, error) {
					select {
					case <-gate:
						return in, nil
					case <-ctx.Done():
						return 0, ctx.Err()
					}
				})
			})
			parent := sdk.New("e2e.wake.parent", func(c *sdk.Context, n int) (int, error) {
				items := make([]int, n)
				for i := range items {
					items[i] = i
				}
				if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
					return sdk.SpawnEach(b, "each", sdk.SliceSource(items), func(i int) (sdk.Child, error) { return sdk.NewChild(child, i), nil })
				}); err != nil {
					return 0, err
				}
				if err := sdk.Merge(c, "b"); err != nil {
					return 0, err
				}
				sum := 0
				for res, err := range sdk.BranchResults[int](c, "b", 100) {
					if err != nil {
						return 0, err
					}
					sum += res.Output
				}
				return sum, nil
			})
			// Near the real time, whole milliseconds: every backend stores these times exactly.
			clock := sdk.NewFakeClock(time.Now().UTC().Truncate(time.Millisecond))
			store := factory(t)
			eng, err := sdk.NewEngine(store, sdk.WithWorkflows(parent, child), sdk.WithClock(clock))
			require.NoError(t, err)
			workers := startWorkers(t, eng, 2, dispatch.Concurrency(8))
			ctx := resultCtx(t)
			h, err := parent.Start(ctx, eng, "p", n)
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				w, err := eng.Get(ctx, h.ID())
				return err == nil && w.State == storage.StateIdle && w.Wait.Kind == storage.WaitMerge
			}, e2eTimeout, time.Millisecond, "the parent parks on its merge")
			before := clock.Now()
			w, err := eng.Get(ctx, h.ID())
			require.NoError(t, err)
			require.True(t, w.RunAt.After(before), "the merge probe is due later (%v), and the clock will not get there", w.RunAt)

			close(gate)
			sum, err := h.Result(ctx)
			require.NoError(t, err)
			require.Equal(t, n*(n-1)/2, sum)
			require.Equal(t, before, clock.Now(), "no time passed: the probe never fired")
			// The flusher counts its wakes after the call returned, which may be after the
			// woken parent already completed.
			require.Eventually(t, func() bool {
				var woken int64
				for _, w := range workers {
					woken += w.Stats().MergeWakes
				}
				return woken > 0
			}, e2eTimeout, time.Millisecond, "a worker woke the parent")
		})
	}
}
