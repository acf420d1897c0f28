package storagetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testClaimDueInRunAtOrder: a claim takes only idle workflows that are due (RunAt <= Now), in
// RunAt order whatever the order of creation.
func testClaimDueInRunAtOrder(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	c := f.create("job", "c", at(30*time.Second))
	b := f.create("job", "b", at(0))
	future := f.create("job", "future", at(2*time.Minute))
	a := f.create("job", "a", at(-2*time.Minute))
	d := f.create("job", "d", at(-time.Minute))

	got, err := f.s.Claim(f.ctx, storage.ClaimRequest{Owner: "w", Limit: 10, TTL: time.Hour, Now: at(30 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, []int64{a.ID, d.ID, b.ID, c.ID}, ids(got), "due workflows in RunAt order, RunAt == Now included")

	f.requireNoClaim(at(2*time.Minute-time.Millisecond), "the last workflow is not due yet")
	got = f.claim("w", at(2*time.Minute), 10)
	require.Equal(t, []int64{future.ID}, ids(got), "a workflow is due when RunAt == Now")
}

// testClaimLimit: a claim takes at most Limit workflows, the earliest due first.
func testClaimLimit(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	var want []int64
	for i := range 10 {
		want = append(want, f.create("job", fmt.Sprintf("k%02d", i), at(time.Duration(i)*time.Second)).ID)
	}
	now := at(time.Minute)
	var got []int64
	for _, limit := range []int{3, 3, 10} {
		batch := f.claim("w", now, limit)
		require.LessOrEqual(t, len(batch), limit, "claim returned more than its limit")
		got = append(got, ids(batch)...)
	}
	require.Equal(t, want, got, "batches of 3, 3 and the rest, earliest RunAt first")
	f.requireNoClaim(now, "everything is leased")
}

// testClaimNames: a claim with Names takes only workflows with those names.
func testClaimNames(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	byName := map[string][]int64{}
	for _, name := range []string{"alpha", "beta", "gamma"} {
		for i := range 2 {
			byName[name] = append(byName[name], f.create(name, fmt.Sprint(i), at(0)).ID)
		}
	}
	require.Empty(t, f.claim("w", at(0), 10, "delta"), "no workflow has that name")
	got := f.claim("w", at(0), 10, "alpha", "gamma")
	require.ElementsMatch(t, append(byName["alpha"], byName["gamma"]...), ids(got))
	for _, w := range got {
		require.Contains(t, []string{"alpha", "gamma"}, w.Name)
	}
	require.ElementsMatch(t, byName["beta"], ids(f.claim("w", at(0), 10)), "an unfiltered claim takes the rest")
}

// testClaimSetsLease: a claimed workflow comes back running, leased to the owner with RunAt
// at Now+TTL by the caller's clock and a lease expiry by the store's, and its token grows
// with every claim. A lease taken for a short TTL expires by itself and the workflow is
// taken over.
func testClaimSetsLease(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("job", "k", at(0))
	now := at(10 * time.Second)
	got := f.claim("worker-a", now, 1)
	require.Len(t, got, 1)
	c := got[0]
	require.Equal(t, w.ID, c.ID)
	require.Equal(t, storage.StateRunning, c.State)
	require.Equal(t, "worker-a", c.LeaseOwner)
	require.False(t, c.LeaseUntil.IsZero(), "a claimed workflow has a lease expiry")
	requireTime(t, now.Add(ttl), c.RunAt, "run at of a leased workflow (the claim's Now plus the TTL)")
	require.Zero(t, w.LeaseToken, "a workflow never claimed has token 0")
	require.EqualValues(t, 1, c.LeaseToken, "a first claim returns token 1 (the SDK runs it without a load)")
	requireBytes(t, w.Input, c.Input, "input of the claimed workflow")
	require.Equal(t, w.Name, c.Name)
	require.Equal(t, w.Key, c.Key)

	stored := f.get(w.ID)
	require.Equal(t, storage.StateRunning, stored.State)
	require.Equal(t, "worker-a", stored.LeaseOwner)
	require.Equal(t, c.LeaseToken, stored.LeaseToken)
	requireTime(t, c.LeaseUntil, stored.LeaseUntil, "stored lease until")
	requireTime(t, c.RunAt, stored.RunAt, "stored run at")

	// A release and a new claim raise the token again; so does a takeover once a lease of a
	// short TTL has expired by the store's clock.
	require.NoError(t, f.s.Release(f.ctx, c.Lease(), now.Add(time.Second)))
	got, err := f.s.Claim(f.ctx, storage.ClaimRequest{Owner: "worker-b", Limit: 1, TTL: shortTTL, Now: now.Add(time.Second)})
	require.NoError(t, err)
	require.Equal(t, []int64{w.ID}, ids(got), "a released workflow is claimable at once")
	l2 := got[0].Lease()
	require.Equal(t, c.LeaseToken+1, l2.Token, "a release and a new claim raise the token by one")
	requireTime(t, now.Add(time.Second+shortTTL), got[0].RunAt, "run at of a short lease")
	l3 := f.takeOver(w, "worker-c", now.Add(time.Second+shortTTL))
	require.Greater(t, l3.Token, l2.Token, "token after a takeover")
	require.Equal(t, "worker-c", l3.Owner)
	require.ErrorIs(t, f.s.SaveSteps(f.ctx, l2, storage.Commit{Now: now.Add(2 * time.Second)}), storage.ErrLeaseLost, "the expired lease after the takeover")
}

// testClaimSkewedClockAhead: a claim whose Now runs far ahead of the store sees a leased
// workflow as due, but does not take it while its lease is live by the store's clock; one
// whose Now runs behind does not even see it due. The expiry a claim gives does not follow its
// Now, and once the lease has expired by the store's clock the caller ahead takes it.
func testClaimSkewedClockAhead(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("skew", "k", at(0))
	l := f.claimOne(w, "worker-a", at(0))
	before := f.get(w.ID)
	for _, d := range []time.Duration{ttl, time.Hour, 24 * time.Hour, 365 * 24 * time.Hour} {
		f.requireNoClaim(at(d), fmt.Sprintf("a caller %v ahead must not take a live lease", d))
	}
	f.requireNoClaim(at(-time.Hour), "a caller an hour behind: not due")
	requireLeaseUnchanged(t, before, f.get(w.ID))
	require.NoError(t, f.s.SaveSteps(f.ctx, l, storage.Commit{Steps: []storage.Step{step("mine", nil)}, Now: at(time.Second)}), "the holder still writes")

	// Two claims whose Now are an hour apart get RunAt an hour apart, and leases that expire
	// by the store's clock: about together, not an hour apart.
	x := f.create("skew.x", "k", at(0))
	y := f.create("skew.y", "k", at(0))
	cx := f.claim("worker-x", at(0), 1, x.Name)
	cy := f.claim("worker-y", at(time.Hour), 1, y.Name)
	require.Len(t, cx, 1)
	require.Len(t, cy, 1)
	requireTime(t, at(ttl), cx[0].RunAt, "run at of a claim at 0")
	requireTime(t, at(time.Hour+ttl), cy[0].RunAt, "run at of a claim an hour ahead")
	gap := cy[0].LeaseUntil.Sub(cx[0].LeaseUntil)
	require.Less(t, gap.Abs(), 10*time.Minute, "lease expiries follow the store's clock, not the claims' Now: %v and %v", cx[0].LeaseUntil, cy[0].LeaseUntil)

	// Expired by the store's clock: the caller behind still finds it not due (its RunAt is by
	// the holder's clock), the caller ahead takes it.
	f.lapse(l, at(2*time.Second))
	f.requireNoClaim(at(-time.Hour), "a caller an hour behind: still not due", w.Name)
	lb := f.claimOne(w, "worker-b", at(time.Hour))
	require.Greater(t, lb.Token, l.Token)
	require.ErrorIs(t, f.s.SaveSteps(f.ctx, l, storage.Commit{Now: at(3 * time.Second)}), storage.ErrLeaseLost, "the old holder after the takeover")
}

// testClaimHeldNotReclaimed: a leased workflow is not claimed again while its lease is valid.
func testClaimHeldNotReclaimed(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("job", "k", at(0))
	l := f.claimOne(w, "worker-a", at(0))
	for _, d := range []time.Duration{0, time.Second, ttl - time.Second} {
		f.requireNoClaim(at(d), fmt.Sprintf("the lease taken at 0 is valid at %v", d))
	}
	stored := f.get(w.ID)
	require.Equal(t, l.Token, stored.LeaseToken, "failed claims must not touch the lease")
	require.Equal(t, "worker-a", stored.LeaseOwner)
}

// testClaimExclusiveConcurrent: many workers claiming batches at once take every due workflow
// exactly once.
func testClaimExclusiveConcurrent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const workflows, workers, batch = 200, 8, 7
	for i := range workflows {
		f.create("job", fmt.Sprintf("k%03d", i), at(time.Duration(i%13)*time.Millisecond))
	}

	var (
		mu      sync.Mutex
		claimed = map[int64]string{}
		total   int // rows returned, duplicates included: past workflows, stop
		dupes   []string
		errs    []error
	)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		owner := fmt.Sprintf("worker-%d", i)
		wg.Go(func() {
			<-start
			for {
				got, err := f.s.Claim(f.ctx, storage.ClaimRequest{Owner: owner, Limit: batch, TTL: time.Minute, Now: at(time.Second)})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				total += len(got)
				done := total >= workflows
				for _, w := range got {
					if prev, ok := claimed[w.ID]; ok {
						dupes = append(dupes, fmt.Sprintf("workflow %d claimed by %s and %s", w.ID, prev, owner))
					}
					claimed[w.ID] = owner
					if w.LeaseOwner != owner {
						errs = append(errs, fmt.Errorf("workflow %d claimed by %s carries owner %q", w.ID, owner, w.LeaseOwner))
					}
				}
				if len(got) > batch {
					errs = append(errs, fmt.Errorf("claim returned %d workflows, more than its limit %d", len(got), batch))
				}
				mu.Unlock()
				if err != nil || len(got) == 0 || done {
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()

	require.Empty(t, errs)
	require.Empty(t, dupes, "no workflow may be claimed twice while its lease is valid")
	require.Len(t, claimed, workflows, "every due workflow is claimed")
	f.requireNoClaim(at(time.Second), "every workflow is leased")
	for id, owner := range claimed {
		w := f.get(id)
		require.Equal(t, storage.StateRunning, w.State)
		require.Equal(t, owner, w.LeaseOwner, "stored owner of workflow %d is the worker that got it", id)
	}
}
