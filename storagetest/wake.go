package storagetest

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

func (f *fixture) wake(id int64, when time.Time) bool {
	f.t.Helper()
	woken, err := f.s.Wake(f.ctx, id, when)
	require.NoError(f.t, err, "Wake %d at %v", id, when)
	return woken
}

// testWakeMovesEarlier: a wake moves an idle workflow's RunAt earlier, never later.
func testWakeMovesEarlier(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("timer", "k", at(time.Hour))
	require.True(t, f.wake(w.ID, at(10*time.Minute)), "waking an idle workflow")
	requireTime(t, at(10*time.Minute), f.get(w.ID).RunAt, "run at after an earlier wake")

	f.wake(w.ID, at(30*time.Minute))
	got := f.get(w.ID)
	requireTime(t, at(10*time.Minute), got.RunAt, "run at after a later wake")
	require.Equal(t, storage.StateIdle, got.State)

	f.requireNoClaim(at(10*time.Minute-time.Millisecond), "not due before the wake time")
	f.claimOne(w, "worker-a", at(10*time.Minute))
}

// testWakeCoalesces: many wakes of one workflow, even concurrent, make one runnable row at
// the earliest wake time, which one claim returns once.
func testWakeCoalesces(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("signal", "k", at(time.Hour))
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = f.s.Wake(f.ctx, w.ID, at(time.Duration(10-i)*time.Minute))
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	requireTime(t, at(3*time.Minute), f.get(w.ID).RunAt, "run at is the earliest of the wakes")

	got := f.claim("worker-a", at(20*time.Minute), 10)
	require.Equal(t, []int64{w.ID}, ids(got), "coalesced wakes give one claimable row")
	f.requireNoClaim(at(20*time.Minute), "the woken workflow is claimed once")
}

// testWakeDuringRun: a wake that arrives while the workflow runs is kept, so the run's finish
// leaves the workflow runnable no later than the wake time: no wake-up is lost.
func testWakeDuringRun(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, tc := range []struct {
		name  string
		state storage.State
		runAt time.Time
		want  time.Time
	}{
		{"wake-vs-far-timer", storage.StateIdle, at(24 * time.Hour), at(5 * time.Second)},
		{"wake-vs-signal", storage.StateIdle, time.Time{}, at(5 * time.Second)},
		{"wake-vs-earlier-timer", storage.StateIdle, at(2 * time.Second), at(2 * time.Second)},
		{"wake-vs-completed", storage.StateCompleted, time.Time{}, time.Time{}},
	} {
		w, l := f.start(tc.name)
		require.True(t, f.wake(w.ID, at(5*time.Second)), "%s: waking a running workflow", tc.name)
		f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(10 * time.Second)}, State: tc.state, RunAt: tc.runAt})
		got := f.get(w.ID)
		require.Equal(t, tc.state, got.State, tc.name)
		requireTime(t, tc.want, got.RunAt, tc.name+": run at after the finish")
		if tc.want.IsZero() {
			f.requireNoClaim(at(365*24*time.Hour), tc.name+": a final workflow ignores the wake", w.Name)
			continue
		}
		lb := f.claimOne(w, "worker-b", at(10*time.Second))
		require.Greater(t, lb.Token, l.Token, tc.name)
	}
}

// testWakeDuringRunNotReclaimed: a wake during a run does not free the workflow for another
// worker while the lease is valid, and the run may still write.
func testWakeDuringRunNotReclaimed(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("busy")
	before := f.get(w.ID)
	f.wake(w.ID, at(5*time.Second))
	f.requireNoClaim(at(10*time.Second), "the workflow is leased; the wake waits for the run to end")
	requireLeaseUnchanged(t, before, f.get(w.ID))
	f.save(l, storage.Commit{Steps: []storage.Step{step("still-mine", nil)}, Now: at(11 * time.Second)})
}

// testWakeNotCarriedOver: a wake is used up by the run it causes or the run it arrives in; a
// later run that waits for a signal is not woken by it again.
func testWakeNotCarriedOver(t *testing.T, factory Factory) {
	f := newFixture(t, factory)

	// Woken during run 1; run 2 starts because of it and then waits for a signal.
	w, l := f.start("during")
	f.wake(w.ID, at(5*time.Second))
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(10 * time.Second)}, State: storage.StateIdle})
	l2 := f.claimOne(w, "worker-a", at(10*time.Second))
	f.finish(l2, storage.Finish{Commit: storage.Commit{Now: at(20 * time.Second)}, State: storage.StateIdle})
	requireTime(t, time.Time{}, f.get(w.ID).RunAt, "run at after run 2, which saw no wake")
	f.requireNoClaim(at(365*24*time.Hour), "the wake from run 1 was used by run 2", w.Name)

	// Woken during run 1, which dies; the run that takes over waits for a signal.
	u, lu := f.start("crashed")
	f.wake(u.ID, at(5*time.Second))
	f.lapse(lu, at(6*time.Second))
	lu2 := f.claimOne(u, "worker-b", at(7*time.Second))
	f.finish(lu2, storage.Finish{Commit: storage.Commit{Now: at(8 * time.Second)}, State: storage.StateIdle})
	requireTime(t, time.Time{}, f.get(u.ID).RunAt, "run at after the takeover run, which started after the wake was due")
	f.requireNoClaim(at(365*24*time.Hour), "the wake was used by the takeover run", u.Name)

	// Woken while idle; the run it causes waits for a signal.
	v := f.create("before", "k", at(time.Hour))
	f.wake(v.ID, at(time.Minute))
	lv := f.claimOne(v, "worker-a", at(time.Minute))
	f.finish(lv, storage.Finish{Commit: storage.Commit{Now: at(time.Minute + time.Second)}, State: storage.StateIdle})
	requireTime(t, time.Time{}, f.get(v.ID).RunAt, "run at after a run that saw no wake")
	f.requireNoClaim(at(365*24*time.Hour), "the wake was used by the run it caused", v.Name)
}

// testWakeFinalOrStalled: final and stalled workflows are not woken and not changed.
func testWakeFinalOrStalled(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, state := range []storage.State{storage.StateCompleted, storage.StateFailed, storage.StateCancelled, storage.StateStalled} {
		w := f.runTo("wake-"+string(state), state, at(time.Second))
		require.False(t, f.wake(w.ID, at(time.Minute)), "Wake of a %s workflow reports not woken", state)
		got := f.get(w.ID)
		require.Equal(t, state, got.State)
		requireTime(t, time.Time{}, got.RunAt, "run at of a "+string(state)+" workflow after a wake")
	}
	f.requireNoClaim(at(365*24*time.Hour), "no final or stalled workflow is runnable")
}

// testWakeNotFound: waking an unknown workflow is ErrNotFound.
func testWakeNotFound(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("timer", "k", at(time.Hour))
	_, err := f.s.Wake(f.ctx, w.ID+1_000_000, at(0))
	require.ErrorIs(t, err, storage.ErrNotFound)
	requireTime(t, at(time.Hour), f.get(w.ID).RunAt, "other workflows are untouched")
}
