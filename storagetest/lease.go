package storagetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testLeaseTakeover: once a lease expires by the store's clock another worker takes the
// workflow with a greater token, and from then on every write of the old lease is refused and
// changes nothing, whatever time the old worker's requests carry.
func testLeaseTakeover(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, la := f.start("takeover")
	f.save(la, storage.Commit{Steps: []storage.Step{step("one", []byte("1"))}, Values: []byte(`{"by":"a"}`), Now: at(10 * time.Second)})

	f.lapse(la, at(10*time.Second))
	takeover := at(40 * time.Second)
	lb := f.claimOne(w, "worker-b", takeover)
	require.Greater(t, lb.Token, la.Token, "the new lease has a greater token")
	require.Equal(t, "worker-b", lb.Owner)
	before, stepsBefore := f.load(w.ID)
	requireTime(t, takeover.Add(ttl), before.RunAt, "run at of the new lease")

	// The old worker believes it is at 20s (a paused process), at 41s, and a day later.
	for _, now := range []time.Time{at(20 * time.Second), takeover.Add(time.Second), at(24 * time.Hour)} {
		c := storage.Commit{Steps: []storage.Step{step("two", []byte("2"))}, Values: []byte(`{"by":"stale"}`), Errors: []storage.ErrorRecord{{Message: "stale"}}, Now: now}
		require.ErrorIs(t, f.s.SaveSteps(f.ctx, la, c), storage.ErrLeaseLost, "SaveSteps of the old lease at %v", now)
		require.ErrorIs(t, f.s.FinishRun(f.ctx, la, storage.Finish{Commit: c, State: storage.StateCompleted, Output: []byte(`"stale"`)}), storage.ErrLeaseLost, "FinishRun of the old lease at %v", now)
		require.ErrorIs(t, f.s.Heartbeat(f.ctx, la, time.Hour, now), storage.ErrLeaseLost, "Heartbeat of the old lease at %v", now)
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

// testHeartbeatExtends: a heartbeat moves the lease's expiry to the store's clock plus its
// TTL and RunAt to its now plus the TTL, keeping the token, so the run may still write; a
// heartbeat with a short TTL shortens the lease, which then expires.
func testHeartbeatExtends(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("heartbeat")
	require.NoError(t, f.s.Heartbeat(f.ctx, l, time.Hour, at(20*time.Second)))

	hb := f.get(w.ID)
	require.GreaterOrEqual(t, hb.LeaseUntil.Sub(l.Until), time.Hour-ttl-time.Second,
		"a heartbeat of an hour moves the expiry about an hour past the claim's of %v: %v, claimed until %v", ttl, hb.LeaseUntil, l.Until)
	requireTime(t, at(20*time.Second+time.Hour), hb.RunAt, "run at after the heartbeat (its now plus the TTL)")
	require.Equal(t, l.Token, hb.LeaseToken, "a heartbeat keeps the token")
	require.Equal(t, storage.StateRunning, hb.State)
	require.Equal(t, "worker-a", hb.LeaseOwner)

	f.requireNoClaim(at(2*time.Hour), "the heartbeat extended the lease")
	// The store's lease decides, not the Until the worker remembers.
	f.save(l, storage.Commit{Steps: []storage.Step{step("late", nil)}, Now: at(45 * time.Second)})
	require.NoError(t, f.s.Heartbeat(f.ctx, l, time.Hour, at(50*time.Second)), "a second heartbeat")

	// A last heartbeat with a short TTL shortens the lease; it then expires.
	f.lapse(l, at(60*time.Second))
	requireTime(t, at(60*time.Second+shortTTL), f.get(w.ID).RunAt, "run at after a short heartbeat")
	lb := f.claimOne(w, "worker-b", at(61*time.Second))
	require.Greater(t, lb.Token, l.Token)
}

// testHeartbeatAfterExpiry: a lease that expired by the store's clock cannot be revived by a
// heartbeat, even when nobody took the workflow over and whatever now the heartbeat carries.
func testHeartbeatAfterExpiry(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("late-heartbeat")
	f.lapse(l, at(time.Second))
	before := f.get(w.ID)
	for _, now := range []time.Time{at(-time.Hour), at(2 * time.Second), at(time.Hour)} {
		require.ErrorIs(t, f.s.Heartbeat(f.ctx, l, time.Hour, now), storage.ErrLeaseLost, "Heartbeat of an expired lease at %v", now)
	}
	requireLeaseUnchanged(t, before, f.get(w.ID))
	lb := f.claimOne(w, "worker-b", at(2*time.Second))
	require.Greater(t, lb.Token, l.Token)
}

// testHeartbeatSkewedClock: the holder of a live lease heartbeats whatever its clock says,
// far ahead or far behind the store's: the store's clock sets the expiry, the heartbeat's now
// only RunAt. A heartbeat that left RunAt in the past (a holder behind) does not make the
// workflow claimable while the lease is live; once it expired by the store's clock, no now
// revives it.
func testHeartbeatSkewedClock(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("skewed-heartbeat")
	for _, skew := range []time.Duration{24 * time.Hour, -24 * time.Hour, time.Hour, -time.Hour} {
		now := at(skew)
		require.NoError(t, f.s.Heartbeat(f.ctx, l, ttl, now), "Heartbeat of a live lease at %v", now)
		got := f.get(w.ID)
		requireTime(t, now.Add(ttl), got.RunAt, fmt.Sprintf("run at after a heartbeat at %v", now))
		require.Less(t, got.LeaseUntil.Sub(l.Until).Abs(), 10*time.Minute, "the lease's expiry follows the store's clock, not the heartbeat's now %v: %v, claimed until %v", now, got.LeaseUntil, l.Until)
	}
	// The last heartbeat, an hour behind, left RunAt long past for everyone else.
	f.requireNoClaim(at(0), "the lease is live, though RunAt is past")
	f.requireNoClaim(at(24*time.Hour), "the lease is live, though RunAt is past")
	f.save(l, storage.Commit{Steps: []storage.Step{step("still-mine", nil)}, Now: at(time.Second)})

	f.lapse(l, at(-time.Hour))
	before := f.get(w.ID)
	for _, now := range []time.Time{at(-24 * time.Hour), at(0), at(24 * time.Hour)} {
		require.ErrorIs(t, f.s.Heartbeat(f.ctx, l, ttl, now), storage.ErrLeaseLost, "Heartbeat of an expired lease at %v", now)
	}
	requireLeaseUnchanged(t, before, f.get(w.ID))
	lb := f.claimOne(w, "worker-b", at(0))
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
