package storagetest

import (
	"fmt"
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
	require.ErrorIs(f.t, f.s.Heartbeat(f.ctx, l, time.Hour, now), want, "Heartbeat")
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

// testFenceExpired: once its lease has expired by the store's clock a run can write nothing,
// even when nobody took the workflow over and whatever time its requests carry, and the
// workflow is claimable by others.
func testFenceExpired(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("fence-expired")
	f.lapse(l, at(time.Second))
	before := f.get(w.ID)
	for _, now := range []time.Time{at(-time.Hour), at(2 * time.Second), at(time.Hour)} {
		staleWrites(f, l, now, storage.ErrLeaseLost)
	}
	requireNoStaleWrite(f, w.ID)
	requireLeaseUnchanged(t, before, f.get(w.ID))

	lb := f.claimOne(w, "worker-b", at(2*time.Second))
	require.Greater(t, lb.Token, l.Token)
}

// testFenceSkewedClock: a run whose requests carry a time far ahead of or behind the store's
// clock still writes while its lease is live by the store's clock (Now only stamps the
// records), and writes nothing once the lease has expired by it.
func testFenceSkewedClock(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	skews := []time.Duration{-24 * time.Hour, -time.Hour, time.Hour, 24 * time.Hour}
	w, l := f.start("fence-skew")
	for i, skew := range skews {
		now := at(skew)
		f.save(l, storage.Commit{Steps: []storage.Step{step(fmt.Sprint("s", i), nil)}, Now: now})
		_, err := f.s.SpawnBatch(f.ctx, l, storage.SpawnRequest{
			Branch:   "branch$b",
			Steps:    []storage.Step{branchStep("branch$b")},
			Children: kids("fence-skew.child", fmt.Sprint("k", i), 0, 2),
			Now:      now,
		})
		require.NoError(t, err, "SpawnBatch under a live lease at %v", now)
		require.Equal(t, storage.StateRunning, f.get(w.ID).State)
	}
	_, steps := f.load(w.ID)
	require.Len(t, steps, len(skews)+1, "every write under the live lease landed")

	// FinishRun and Release under live leases, at times far off the store's.
	for i, skew := range skews {
		now := at(skew)
		fw, fl := f.start(fmt.Sprint("fence-skew.finish", i))
		f.finish(fl, storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted, Output: []byte(`"ok"`)})
		require.Equal(t, storage.StateCompleted, f.get(fw.ID).State, "FinishRun at %v", now)
		rw, rl := f.start(fmt.Sprint("fence-skew.release", i))
		require.NoError(t, f.s.Release(f.ctx, rl, now), "Release at %v", now)
		require.Equal(t, storage.StateIdle, f.get(rw.ID).State, "Release at %v", now)
	}

	// Expired by the store's clock: no time the run claims to be at helps.
	e, le := f.start("fence-skew.expired")
	f.lapse(le, at(time.Second))
	before := f.get(e.ID)
	for _, skew := range skews {
		staleWrites(f, le, at(skew), storage.ErrLeaseLost)
	}
	requireNoStaleWrite(f, e.ID)
	requireLeaseUnchanged(t, before, f.get(e.ID))
}

// testFenceMessages: a refused write says why. A superseded lease's error names the
// workflow's current holder and token; an expired one's says that it expired; both still
// match ErrLeaseLost.
func testFenceMessages(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, la := f.start("fence-message")
	f.lapse(la, at(time.Second))
	expired := f.s.SaveSteps(f.ctx, la, storage.Commit{Now: at(2 * time.Second)})
	require.ErrorIs(t, expired, storage.ErrLeaseLost)
	require.Contains(t, expired.Error(), fmt.Sprintf("workflow %d", w.ID), "the error names the workflow")
	require.Contains(t, expired.Error(), "expired", "the error of an expired lease says so")

	lb := f.claimOne(w, "worker-b", at(2*time.Second))
	holder := fmt.Sprintf("workflow %d is now leased by %q (token %d)", w.ID, "worker-b", lb.Token)
	for what, err := range map[string]error{
		"SaveSteps": f.s.SaveSteps(f.ctx, la, storage.Commit{Now: at(3 * time.Second)}),
		"FinishRun": f.s.FinishRun(f.ctx, la, storage.Finish{Commit: storage.Commit{Now: at(3 * time.Second)}, State: storage.StateCompleted}),
		"Heartbeat": f.s.Heartbeat(f.ctx, la, ttl, at(3*time.Second)),
		"Release":   f.s.Release(f.ctx, la, at(3*time.Second)),
		"SpawnBatch": func() error {
			_, err := f.s.SpawnBatch(f.ctx, la, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Now: at(3 * time.Second)})
			return err
		}(),
	} {
		require.ErrorIs(t, err, storage.ErrLeaseLost, what)
		require.Contains(t, err.Error(), holder, "%s under a superseded lease names the current holder", what)
	}
	require.Equal(t, "worker-b", f.get(w.ID).LeaseOwner)
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
