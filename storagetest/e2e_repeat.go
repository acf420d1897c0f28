package storagetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
)

// testE2ERepeat: a short Repeat through dispatch runs each tick once, on the schedule
// (start + k·period, however late the worker is), then the code after it.
func testE2ERepeat(t *testing.T, factory Factory) {
	const period, n = 20 * time.Millisecond, 5
	var mu sync.Mutex
	var ticks []time.Time
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(ticks) }
	wf := sdk.New("e2e.repeat", func(c *sdk.Context, _ int) (int, error) {
		err := sdk.Repeat(c, "tick", sdk.Every(period), func(time.Time) bool { return count() >= n },
			func(_ context.Context, tick time.Time) error {
				mu.Lock()
				defer mu.Unlock()
				ticks = append(ticks, tick)
				return nil
			}, sdk.TickTimeout(time.Minute)) // a window wide enough that a slow worker skips nothing
		if err != nil {
			return 0, err
		}
		return count(), nil
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	startWorkers(t, eng, 1, dispatch8()...)
	ctx := resultCtx(t)
	h, err := wf.Start(ctx, eng, "k", 1)
	require.NoError(t, err)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, n, out)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, ticks, n)
	for i, tk := range ticks {
		require.True(t, tk.Equal(ticks[0].Add(time.Duration(i)*period)), "tick %d at %s drifted from %s", i, tk, ticks[0])
	}
}
