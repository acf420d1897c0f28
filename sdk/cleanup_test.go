package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// TestCleanup: Cleanup deletes final workflows older than their state's cutoff, in batches,
// counts them per state, skips a state with a zero cutoff and never touches idle or stalled
// workflows.
func TestCleanup(t *testing.T) {
	t.Parallel()
	ok := sdk.New("cleanup.ok", func(c *sdk.Context, in int) (int, error) { return in, nil })
	fails := sdk.New("cleanup.fails", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.Permanent(errors.New("no"))
	})
	sleeps := sdk.New("cleanup.sleeps", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.Sleep(c, "nap", 24*time.Hour)
	})
	stalls := sdk.New("cleanup.stalls", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "bad", func(context.Context) (int, error) { return 0, sdk.Permanent(errors.New("bad")) })
	})
	e := newEnv(t, sdk.WithWorkflows(ok, fails, sleeps, stalls))
	start := func(key string, starts ...func(string) (int64, error)) []int64 {
		var ids []int64
		for i, s := range starts {
			id, err := s(fmt.Sprint(key, i))
			require.NoError(t, err)
			ids = append(ids, id)
		}
		e.drain()
		return ids
	}
	startOf := func(wf *sdk.Workflow[int, int]) func(string) (int64, error) {
		return func(key string) (int64, error) {
			h, err := wf.Start(ctx, e.eng, key, 1)
			if err != nil {
				return 0, err
			}
			return h.ID(), nil
		}
	}
	oldDone := start("old", startOf(ok), startOf(ok), startOf(ok))
	oldFailed := start("old", startOf(fails), startOf(fails))
	oldCancelled := start("old", startOf(sleeps))
	require.NoError(t, e.eng.Cancel(ctx, oldCancelled[0]))
	oldStalled := start("old", startOf(stalls))
	require.Equal(t, storage.StateStalled, e.state(oldStalled[0]).State)
	e.clock.Advance(time.Hour)
	newDone := start("new", startOf(ok))
	idle := start("new", startOf(sleeps))

	cutoff := t0.Add(30 * time.Minute)
	res, err := e.eng.Cleanup(ctx, sdk.CleanupOptions{CompletedBefore: cutoff, CancelledBefore: cutoff, BatchSize: 2})
	require.NoError(t, err)
	require.Equal(t, sdk.CleanupResult{Completed: 3, Cancelled: 1}, res, "failed has no cutoff")
	require.Equal(t, int64(3), e.count.cleanups.Load(), "completed: a full batch of 2 and one of 1; cancelled: one of 1")
	for _, id := range append(oldDone, oldCancelled...) {
		_, err := e.store.GetWorkflow(ctx, id)
		require.ErrorIs(t, err, storage.ErrNotFound, "workflow %d", id)
	}
	for _, id := range oldFailed {
		require.Equal(t, storage.StateFailed, e.state(id).State, "failed workflows are kept without a cutoff")
	}

	far := t0.Add(100 * 24 * time.Hour)
	res, err = e.eng.Cleanup(ctx, sdk.CleanupOptions{CompletedBefore: far, FailedBefore: far, CancelledBefore: far})
	require.NoError(t, err)
	require.Equal(t, 3, res.Total())
	require.Equal(t, sdk.CleanupResult{Completed: 1, Failed: 2}, res)
	_, err = e.store.GetWorkflow(ctx, newDone[0])
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.Equal(t, storage.StateStalled, e.state(oldStalled[0]).State, "an old stalled workflow is never deleted")
	require.Equal(t, storage.StateIdle, e.state(idle[0]).State, "an idle workflow is never deleted")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = e.eng.Cleanup(cancelled, sdk.CleanupOptions{CompletedBefore: far})
	require.ErrorIs(t, err, context.Canceled)
}
