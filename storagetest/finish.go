package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testFinishCompleted: a completed run stores its output and last steps, clears RunAt, sets
// FinishedAt and is never claimed again.
func testFinishCompleted(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("complete")
	now := at(10 * time.Second)
	output := payload(64, 9)
	f.finish(l, storage.Finish{
		Commit: storage.Commit{Steps: []storage.Step{step("last", []byte("x"))}, Values: []byte(`{"done":true}`), Now: now},
		State:  storage.StateCompleted,
		Output: output,
	})

	got, steps := f.load(w.ID)
	require.Equal(t, storage.StateCompleted, got.State)
	requireBytes(t, output, got.Output, "output")
	requireTime(t, time.Time{}, got.RunAt, "run at of a completed workflow")
	requireTime(t, now, got.FinishedAt, "finished at (the finish's Now)")
	requireJSON(t, []byte(`{"done":true}`), got.Values, "values written by the finish")
	require.Len(t, steps, 1, "steps written by the finish")
	f.requireNoClaim(now, "a completed workflow is released, not runnable")
	f.requireNoClaim(at(24*time.Hour), "a completed workflow never runs again")
}

// testFinishFailed: a failed run records its attempt count and error and is final.
func testFinishFailed(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("fail")
	now := at(10 * time.Second)
	f.finish(l, storage.Finish{
		Commit:  storage.Commit{Errors: []storage.ErrorRecord{{Attempt: 3, Type: "*errors.errorString", Message: "card declined"}}, Now: now},
		State:   storage.StateFailed,
		Attempt: 3,
	})
	got := f.get(w.ID)
	require.Equal(t, storage.StateFailed, got.State)
	require.Equal(t, 3, got.Attempt)
	require.Equal(t, "card declined", got.LastError)
	requireTime(t, time.Time{}, got.RunAt, "run at of a failed workflow")
	requireTime(t, now, got.FinishedAt, "finished at")
	f.requireNoClaim(at(24*time.Hour), "a failed workflow never runs again by itself")
}

// testFinishIdleLater: a run that suspends until later is claimable at that time and not
// before, with its wait and attempt stored.
func testFinishIdleLater(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("sleep")
	wake := at(5 * time.Minute)
	wait := storage.Wait{Kind: "sleep", Step: "sleep$nap"}
	f.finish(l, storage.Finish{
		Commit:  storage.Commit{Steps: []storage.Step{{Name: "sleep$nap", State: storage.StepPending, Meta: []byte(`{"until":"5m"}`)}}, Now: at(10 * time.Second)},
		State:   storage.StateIdle,
		RunAt:   wake,
		Wait:    wait,
		Attempt: 1,
	})

	got := f.get(w.ID)
	require.Equal(t, storage.StateIdle, got.State)
	requireTime(t, wake, got.RunAt, "run at of a suspended workflow")
	require.Equal(t, wait, got.Wait)
	require.Equal(t, 1, got.Attempt)
	requireTime(t, time.Time{}, got.FinishedAt, "finished at of a suspended workflow")
	f.requireNoClaim(at(ttl+time.Second), "the finish moved RunAt past the claim's")
	f.requireNoClaim(wake.Add(-time.Millisecond), "not due yet")
	lb := f.claimOne(w, "worker-b", wake)
	require.Greater(t, lb.Token, l.Token)
}

// testFinishIdleNoRunAt: a run that suspends without a RunAt (a signal wait) is never claimed
// until it is woken.
func testFinishIdleNoRunAt(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("signal")
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(10 * time.Second)}, State: storage.StateIdle, Wait: storage.Wait{Kind: "signal", Step: "approve"}})

	got := f.get(w.ID)
	require.Equal(t, storage.StateIdle, got.State)
	requireTime(t, time.Time{}, got.RunAt, "run at of a workflow waiting for a signal")
	f.requireNoClaim(at(365*24*time.Hour), "a workflow waiting for a signal runs only when woken")

	woken, err := f.s.Wake(f.ctx, w.ID, at(time.Hour))
	require.NoError(t, err)
	require.True(t, woken)
	f.claimOne(w, "worker-b", at(time.Hour))
}

// testFinishStalled: a stalled workflow waits for an operator: it is never claimed.
func testFinishStalled(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("stall")
	f.finish(l, storage.Finish{
		Commit: storage.Commit{
			Steps:  []storage.Step{{Name: "charge", State: storage.StepFailed, Attempts: 5, LastError: "declined"}},
			Errors: []storage.ErrorRecord{{Step: "charge", Attempt: 5, Message: "declined"}},
			Now:    at(10 * time.Second),
		},
		State: storage.StateStalled,
	})
	got, steps := f.load(w.ID)
	require.Equal(t, storage.StateStalled, got.State)
	requireTime(t, time.Time{}, got.RunAt, "run at of a stalled workflow")
	require.Equal(t, "declined", got.LastError)
	require.Len(t, steps, 1)
	require.Equal(t, storage.StepFailed, steps[0].State)
	f.requireNoClaim(at(365*24*time.Hour), "a stalled workflow waits for an operator")
}

// testFinishInvalidState: a run cannot finish as running, cancelled or an unknown state; the
// refused finish writes nothing and the lease stays usable.
func testFinishInvalidState(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("bad-finish")
	before := f.get(w.ID)
	for _, state := range []storage.State{storage.StateRunning, storage.StateCancelled, "", "paused"} {
		err := f.s.FinishRun(f.ctx, l, storage.Finish{
			Commit: storage.Commit{Steps: []storage.Step{step("x", nil)}, Values: []byte(`{"x":1}`), Now: at(time.Second)},
			State:  state,
			Output: []byte(`"x"`),
		})
		require.ErrorIs(t, err, storage.ErrInvalid, "finish in state %q", state)
	}
	after, steps := f.load(w.ID)
	requireLeaseUnchanged(t, before, after)
	require.Empty(t, steps)
	require.Empty(t, after.Values)
	require.Empty(t, after.Output)
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateCompleted})
}
