package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testLeaseTakeover: once a lease expires another worker takes the workflow with a greater
// token, and from then on every write of the old lease is refused and changes nothing, even
// when the old worker's clock says its lease is still valid.
func testLeaseTakeover(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, la := f.start("takeover")
	f.save(la, storage.Commit{Steps: []storage.Step{step("one", []byte("1"))}, Values: []byte(`{"by":"a"}`), Now: at(10 * time.Second)})

	takeover := la.Until.Add(time.Second)
	lb := f.claimOne(w, "worker-b", takeover)
	require.Greater(t, lb.Token, la.Token, "the new lease has a greater token")
	require.Equal(t, "worker-b", lb.Owner)
	requireTime(t, takeover.Add(ttl), lb.Until, "new lease until")
	before, stepsBefore := f.load(w.ID)

	// The old worker believes it is at 20s (a paused process) and then at 40s.
	for _, now := range []time.Time{at(20 * time.Second), takeover.Add(time.Second)} {
		c := storage.Commit{Steps: []storage.Step{step("two", []byte("2"))}, Values: []byte(`{"by":"stale"}`), Errors: []storage.ErrorRecord{{Message: "stale"}}, Now: now}
		require.ErrorIs(t, f.s.SaveSteps(f.ctx, la, c), storage.ErrLeaseLost, "SaveSteps of the old lease at %v", now)
		require.ErrorIs(t, f.s.FinishRun(f.ctx, la, storage.Finish{Commit: c, State: storage.StateCompleted, Output: []byte(`"stale"`)}), storage.ErrLeaseLost, "FinishRun of the old lease at %v", now)
		require.ErrorIs(t, f.s.Heartbeat(f.ctx, la, now.Add(time.Hour), now), storage.ErrLeaseLost, "Heartbeat of the old lease at %v", now)
		require.ErrorIs(t, f.s.Release(f.ctx, la, now), storage.ErrLeaseLost, "Release of the old lease at %v", now)
	}

	after, stepsAfter := f.load(w.ID)
	requireLeaseUnchanged(t, before, after)
	require.Equal(t, "worker-b", after.LeaseOwner)
	require.Empty(t, after.Output, "the old lease wrote an output")
	requireJSON(t, []byte(`{"by":"a"}`), after.Values, "values after refused writes")
	require.Empty(t, after.LastError, "the old lease wrote an error record")
	require.Equal(t, stepsBefore, stepsAfter, "the old lease wrote steps")
	errs, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	require.Empty(t, errs, "the old lease wrote an error record")

	// The new owner carries on.
	f.save(lb, storage.Commit{Steps: []storage.Step{step("two", []byte("b"))}, Now: takeover.Add(2 * time.Second)})
	f.finish(lb, storage.Finish{Commit: storage.Commit{Now: takeover.Add(3 * time.Second)}, State: storage.StateCompleted, Output: []byte(`"b"`)})
	done, steps := f.load(w.ID)
	require.Equal(t, storage.StateCompleted, done.State)
	requireBytes(t, []byte(`"b"`), done.Output, "output of the new owner")
	require.Len(t, steps, 2)
}

// testHeartbeatExtends: a heartbeat moves the lease (and RunAt) to the new expiry, so a claim
// at the old expiry does not take the workflow and the run may still write.
func testHeartbeatExtends(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("heartbeat")
	extended := at(60 * time.Second)
	require.NoError(t, f.s.Heartbeat(f.ctx, l, extended, at(20*time.Second)))

	got := f.get(w.ID)
	requireTime(t, extended, got.LeaseUntil, "lease until after the heartbeat")
	requireTime(t, extended, got.RunAt, "run at after the heartbeat")
	require.Equal(t, l.Token, got.LeaseToken, "a heartbeat keeps the token")
	require.Equal(t, storage.StateRunning, got.State)

	f.requireNoClaim(l.Until.Add(time.Second), "the heartbeat extended the lease")
	// The store's lease decides, not the Until the worker remembers.
	f.save(l, storage.Commit{Steps: []storage.Step{step("late", nil)}, Now: at(45 * time.Second)})
	require.NoError(t, f.s.Heartbeat(f.ctx, l, at(90*time.Second), at(50*time.Second)), "a second heartbeat")

	lb := f.claimOne(w, "worker-b", at(91*time.Second))
	require.Greater(t, lb.Token, l.Token)
}

// testHeartbeatAfterExpiry: a lease that expired cannot be revived by a heartbeat, even when
// nobody took the workflow over.
func testHeartbeatAfterExpiry(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("late-heartbeat")
	before := f.get(w.ID)
	late := l.Until.Add(time.Second)
	require.ErrorIs(t, f.s.Heartbeat(f.ctx, l, late.Add(time.Minute), late), storage.ErrLeaseLost)
	requireLeaseUnchanged(t, before, f.get(w.ID))
	lb := f.claimOne(w, "worker-b", late)
	require.Greater(t, lb.Token, l.Token)
}

// testRelease: a released workflow keeps its progress, becomes idle and is claimable at once
// by another worker; the released lease can write nothing more.
func testRelease(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("release")
	f.save(l, storage.Commit{Steps: []storage.Step{step("one", []byte("1"))}, Values: []byte(`{"n":1}`), Now: at(5 * time.Second)})
	now := at(10 * time.Second)
	require.NoError(t, f.s.Release(f.ctx, l, now))

	got, steps := f.load(w.ID)
	require.Equal(t, storage.StateIdle, got.State)
	require.False(t, got.RunAt.IsZero(), "a released workflow is runnable")
	require.False(t, got.RunAt.After(now), "a released workflow is runnable at once, RunAt %v after %v", got.RunAt, now)
	require.Len(t, steps, 1, "release keeps the steps")
	requireJSON(t, []byte(`{"n":1}`), got.Values, "release keeps the values")
	require.Equal(t, w.Attempt, got.Attempt)

	require.ErrorIs(t, f.s.SaveSteps(f.ctx, l, storage.Commit{Steps: []storage.Step{step("two", nil)}, Now: now}), storage.ErrLeaseLost, "write after release")
	require.ErrorIs(t, f.s.Release(f.ctx, l, now), storage.ErrLeaseLost, "second release")

	lb := f.claimOne(w, "worker-b", now)
	require.Greater(t, lb.Token, l.Token)
	_, steps = f.load(w.ID)
	require.Len(t, steps, 1)
}
