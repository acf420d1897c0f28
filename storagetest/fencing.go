package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// staleWrites tries every write a run can make under l at now and requires each to fail
// with want. Each write carries a step, values, an error record and an output, so the caller
// can check that none of them landed.
func staleWrites(f *fixture, l storage.Lease, now time.Time, want error) {
	f.t.Helper()
	c := storage.Commit{
		Steps:  []storage.Step{step("stale", []byte("stale"))},
		Values: []byte(`{"stale":true}`),
		Errors: []storage.ErrorRecord{{Step: "stale", Message: "stale"}},
		Now:    now,
	}
	require.ErrorIs(f.t, f.s.SaveSteps(f.ctx, l, c), want, "SaveSteps")
	for _, state := range []storage.State{storage.StateCompleted, storage.StateIdle, storage.StateFailed, storage.StateStalled} {
		fin := storage.Finish{Commit: c, State: state, Output: []byte(`"stale"`), RunAt: now, Attempt: 9}
		require.ErrorIs(f.t, f.s.FinishRun(f.ctx, l, fin), want, "FinishRun(%s)", state)
	}
	require.ErrorIs(f.t, f.s.Heartbeat(f.ctx, l, now.Add(time.Hour), now), want, "Heartbeat")
	require.ErrorIs(f.t, f.s.Release(f.ctx, l, now), want, "Release")
}

// requireNoStaleWrite requires that nothing staleWrites tried landed on workflow id.
func requireNoStaleWrite(f *fixture, id int64) {
	f.t.Helper()
	w, steps := f.load(id)
	for _, s := range steps {
		require.NotEqual(f.t, "stale", s.Name, "a refused write stored a step")
	}
	require.NotContains(f.t, string(w.Values), "stale", "a refused write stored values")
	require.Empty(f.t, w.Output, "a refused write stored an output")
	require.NotEqual(f.t, 9, w.Attempt, "a refused write stored an attempt")
	require.Empty(f.t, w.LastError, "a refused write stored an error record")
	errs, err := f.s.ListErrors(f.ctx, id, 0)
	require.NoError(f.t, err)
	require.Empty(f.t, errs, "a refused write stored an error record")
}

// testFenceWrongToken: writes with a token that is not the stored one are refused.
func testFenceWrongToken(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("fence-token")
	before := f.get(w.ID)
	for _, token := range []int64{l.Token - 1, l.Token + 1} {
		bad := l
		bad.Token = token
		staleWrites(f, bad, at(time.Second), storage.ErrLeaseLost)
	}
	requireNoStaleWrite(f, w.ID)
	requireLeaseUnchanged(t, before, f.get(w.ID))

	f.save(l, storage.Commit{Steps: []storage.Step{step("good", nil)}, Now: at(2 * time.Second)})
	_, steps := f.load(w.ID)
	require.Len(t, steps, 1, "the right token still writes")
}

// testFenceExpired: once its lease has expired a run can write nothing, even when nobody
// took the workflow over, and the workflow is claimable by others.
func testFenceExpired(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("fence-expired")
	before := f.get(w.ID)
	late := l.Until.Add(time.Second)
	staleWrites(f, l, late, storage.ErrLeaseLost)
	requireNoStaleWrite(f, w.ID)
	requireLeaseUnchanged(t, before, f.get(w.ID))

	lb := f.claimOne(w, "worker-b", late)
	require.Greater(t, lb.Token, l.Token)
}

// testFenceCancelled: a run whose workflow was cancelled can write nothing and gets
// ErrCancelled, even while its lease has not expired.
func testFenceCancelled(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("fence-cancelled")
	require.NoError(t, f.s.Cancel(f.ctx, w.ID, at(5*time.Second)))
	staleWrites(f, l, at(10*time.Second), storage.ErrCancelled)
	requireNoStaleWrite(f, w.ID)
	got := f.get(w.ID)
	require.Equal(t, storage.StateCancelled, got.State, "refused writes must not move a cancelled workflow")
	requireTime(t, time.Time{}, got.RunAt, "run at of a cancelled workflow")
}

// testFenceFinished: a run that finished cannot write again with the same lease.
func testFenceFinished(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, state := range []storage.State{storage.StateIdle, storage.StateCompleted, storage.StateFailed, storage.StateStalled} {
		w, l := f.start("fence-finished-" + string(state))
		fin := storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: state}
		if state == storage.StateIdle {
			fin.RunAt = at(time.Hour)
		}
		f.finish(l, fin)
		before := f.get(w.ID)
		staleWrites(f, l, at(2*time.Second), storage.ErrLeaseLost)
		requireNoStaleWrite(f, w.ID)
		after := f.get(w.ID)
		require.Equal(t, state, after.State, "a refused write moved a %s workflow", state)
		requireTime(t, before.RunAt, after.RunAt, "run at after refused writes")
	}
}
