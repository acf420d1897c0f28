package sdk_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// TestCleanupWorkflowDeletesOldFinishedWorkflowsOnSchedule: the system workflow deletes
// completed workflows older than their retention at its ticks, keeps failed ones (no
// retention given), and stays idle between ticks without ever deleting itself.
func TestCleanupWorkflowDeletesOldFinishedWorkflowsOnSchedule(t *testing.T) {
	t.Parallel()
	ok := sdk.New("retention.ok", func(c *sdk.Context, _ int) (int, error) { return 1, nil })
	bad := sdk.New("retention.bad", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.Permanent(errors.New("no"))
	})
	e := newEnv(t, sdk.WithWorkflows(ok, bad, sdk.CleanupWorkflow))
	var done []int64
	for _, key := range []string{"a", "b", "c"} {
		h, err := ok.Start(ctx, e.eng, key, 0)
		require.NoError(t, err)
		done = append(done, h.ID())
	}
	hb, err := bad.Start(ctx, e.eng, "x", 0)
	require.NoError(t, err)
	e.drain()

	hc, err := sdk.CleanupWorkflow.Start(ctx, e.eng, "retention", sdk.CleanupPolicy{Every: time.Hour, KeepCompleted: 2 * time.Hour})
	require.NoError(t, err)
	e.drain() // the first tick: nothing is old enough yet
	for _, id := range done {
		require.Equal(t, storage.StateCompleted, e.state(id).State)
	}
	for range 3 { // three more hourly ticks: the completed ones pass their two hours
		e.clock.Advance(time.Hour)
		e.drain()
	}
	for _, id := range done {
		_, err := e.store.GetWorkflow(context.Background(), id)
		require.ErrorIs(t, err, storage.ErrNotFound, "a completed workflow past its retention is deleted")
	}
	require.Equal(t, storage.StateFailed, e.state(hb.ID()).State, "failed workflows have no retention here: kept")
	w := e.state(hc.ID())
	require.Equal(t, storage.StateIdle, w.State, "the cleanup workflow waits for its next tick")
	require.Equal(t, storage.WaitRepeat, w.Wait.Kind)
}
