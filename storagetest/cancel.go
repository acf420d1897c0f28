package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testCancelIdle: a cancelled idle workflow is final, has no RunAt and is never claimed.
func testCancelIdle(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("cancel-me", "k", at(0))
	now := at(5 * time.Second)
	require.NoError(t, f.s.Cancel(f.ctx, w.ID, now))
	got := f.get(w.ID)
	require.Equal(t, storage.StateCancelled, got.State)
	requireTime(t, time.Time{}, got.RunAt, "run at of a cancelled workflow")
	requireTime(t, now, got.FinishedAt, "finished at of a cancelled workflow (a final state)")
	f.requireNoClaim(now, "a cancelled workflow is not runnable")
	f.requireNoClaim(at(365*24*time.Hour), "a cancelled workflow never runs")
}

// testCancelStalled: a stalled workflow is not final, so an operator can cancel it.
func testCancelStalled(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, _ := f.stall("stalled")
	require.NoError(t, f.s.Cancel(f.ctx, w.ID, at(time.Minute)))
	require.Equal(t, storage.StateCancelled, f.get(w.ID).State)
	_, err := f.s.Retry(f.ctx, w.ID, storage.RetryRequest{Now: at(2 * time.Minute)})
	require.ErrorIs(t, err, storage.ErrWrongState, "a cancelled workflow cannot be retried")
}

// testCancelFinal: a final workflow cannot be cancelled and is left as it was.
func testCancelFinal(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, state := range []storage.State{storage.StateCompleted, storage.StateFailed, storage.StateCancelled} {
		w := f.runTo("final-"+string(state), state, at(time.Second))
		require.ErrorIs(t, f.s.Cancel(f.ctx, w.ID, at(time.Minute)), storage.ErrWrongState, "Cancel of a %s workflow", state)
		got := f.get(w.ID)
		require.Equal(t, state, got.State)
		requireTime(t, w.FinishedAt, got.FinishedAt, "finished at of a "+string(state)+" workflow after a refused Cancel")
	}
	require.ErrorIs(t, f.s.Cancel(f.ctx, 1_000_000_000, at(time.Minute)), storage.ErrNotFound, "Cancel of an unknown workflow")
}

// testCancelDuringRun: cancelling a running workflow takes the run's write rights away at
// once, and the workflow is not claimed again when the lease runs out.
func testCancelDuringRun(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("running")
	f.save(l, storage.Commit{Steps: []storage.Step{step("before-cancel", []byte("1"))}, Now: at(time.Second)})
	// A short last heartbeat, so the lease runs out by the store's clock below. Whether it
	// still holds at the cancel or not, the writes after it are refused as cancelled.
	require.NoError(t, f.s.Heartbeat(f.ctx, l, shortTTL, at(2*time.Second)))
	require.NoError(t, f.s.Cancel(f.ctx, w.ID, at(5*time.Second)))

	c := storage.Commit{Steps: []storage.Step{step("after-cancel", []byte("2"))}, Now: at(6 * time.Second)}
	require.ErrorIs(t, f.s.SaveSteps(f.ctx, l, c), storage.ErrCancelled)
	require.ErrorIs(t, f.s.FinishRun(f.ctx, l, storage.Finish{Commit: c, State: storage.StateCompleted, Output: []byte(`"late"`)}), storage.ErrCancelled)

	got, steps := f.load(w.ID)
	require.Equal(t, storage.StateCancelled, got.State)
	require.Empty(t, got.Output)
	requireTime(t, time.Time{}, got.RunAt, "run at of a cancelled workflow")
	require.Len(t, steps, 1, "steps committed before the cancel stay, none after")
	require.Equal(t, "before-cancel", steps[0].Name)

	f.awaitStoreClock(shortTTL)
	f.requireNoClaim(at(ttl+time.Second), "a cancelled workflow is not taken over when its lease expires")
	res, err := f.s.DeleteFinished(f.ctx, storage.CleanupRequest{Before: at(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 1, res.Deleted, "a cancelled workflow is finished and can be cleaned up")
}
