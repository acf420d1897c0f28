package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// GroupFinisher is storage.GroupFinisher: many runs' final writes in one transaction. Its
// cases are the GroupFinish* cases.
const GroupFinisher Capability = "GroupFinisher"

// groupFinisher returns the fixture's store as a storage.GroupFinisher, or skips the case.
func (f *fixture) groupFinisher() storage.GroupFinisher {
	g, ok := f.s.(storage.GroupFinisher)
	if !ok {
		f.t.Skipf("capability %s: the store does not implement storage.GroupFinisher", GroupFinisher)
	}
	return g
}

// testGroupFinishEach: each end of a FinishRuns is written or refused on its own, exactly as
// FinishRun would: completed, suspended and failed runs are written; a superseded lease, a
// cancelled workflow and a bad finish are refused with FinishRun's errors and change nothing,
// and do not hold the others back.
func testGroupFinishEach(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	g := f.groupFinisher()
	now := at(10 * time.Second)
	done, ldone := f.start("group.done")
	later, llater := f.start("group.later")
	failed, lfailed := f.start("group.failed")
	stale, lstale := f.start("group.stale")
	cancelled, lcancelled := f.start("group.cancelled")
	bad, lbad := f.start("group.bad")
	require.NoError(t, f.s.Cancel(f.ctx, cancelled.ID, now))
	wrong := lstale
	wrong.Token++ // a lease that was never the workflow's

	wake := at(5 * time.Minute)
	errs, err := g.FinishRuns(f.ctx, []storage.RunEnd{
		{Lease: ldone, Finish: storage.Finish{Commit: storage.Commit{Steps: []storage.Step{step("s", []byte("1"))}, Now: now}, State: storage.StateCompleted, Output: []byte(`"ok"`)}},
		{Lease: llater, Finish: storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateIdle, RunAt: wake, Wait: storage.Wait{Kind: storage.WaitSleep, Step: "sleep$nap"}}},
		{Lease: lfailed, Finish: storage.Finish{Commit: storage.Commit{Errors: []storage.ErrorRecord{{Attempt: 1, Message: "boom"}}, Now: now}, State: storage.StateFailed, Attempt: 1}},
		{Lease: wrong, Finish: storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted}},
		{Lease: lcancelled, Finish: storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted}},
		{Lease: lbad, Finish: storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateRunning}},
	})
	require.NoError(t, err)
	require.Len(t, errs, 6)
	require.NoError(t, errs[0], "completed")
	require.NoError(t, errs[1], "suspended")
	require.NoError(t, errs[2], "failed")
	require.ErrorIs(t, errs[3], storage.ErrLeaseLost, "a lease that is not the workflow's")
	require.ErrorIs(t, errs[4], storage.ErrCancelled, "a cancelled workflow")
	require.ErrorIs(t, errs[5], storage.ErrInvalid, "a finish to state running")

	got, steps := f.load(done.ID)
	require.Equal(t, storage.StateCompleted, got.State)
	requireBytes(t, []byte(`"ok"`), got.Output, "output")
	requireTime(t, now, got.FinishedAt, "finished at")
	require.Len(t, steps, 1)
	require.True(t, got.LeaseUntil.IsZero(), "the lease is released")

	got = f.get(later.ID)
	require.Equal(t, storage.StateIdle, got.State)
	requireTime(t, wake, got.RunAt, "run at of the suspended run")
	require.Equal(t, storage.WaitSleep, got.Wait.Kind)
	f.requireNoClaim(wake.Add(-time.Second), "a suspended run is not due before its time", later.Name)

	got = f.get(failed.ID)
	require.Equal(t, storage.StateFailed, got.State)
	require.Equal(t, "boom", got.LastError)

	got = f.get(stale.ID)
	require.Equal(t, storage.StateRunning, got.State, "a refused end changes nothing")
	require.Equal(t, lstale.Token, got.LeaseToken)
	require.Equal(t, storage.StateCancelled, f.get(cancelled.ID).State)
	got = f.get(bad.ID)
	require.Equal(t, storage.StateRunning, got.State, "a bad end changes nothing")
	require.Equal(t, lbad.Token, got.LeaseToken)
}

// testGroupFinishKeptWake: a wake received during a run makes the suspended run runnable no
// later than the wake, as FinishRun does.
func testGroupFinishKeptWake(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	g := f.groupFinisher()
	w, l := f.start("group.wake")
	woke := at(20 * time.Second)
	ok, err := f.s.Wake(f.ctx, w.ID, woke)
	require.NoError(t, err)
	require.True(t, ok)
	errs, err := g.FinishRuns(f.ctx, []storage.RunEnd{{Lease: l, Finish: storage.Finish{
		Commit: storage.Commit{Now: at(10 * time.Second)}, State: storage.StateIdle, Wait: storage.Wait{Kind: storage.WaitSignal, Step: "continue$x"},
	}}})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	requireTime(t, woke, f.get(w.ID).RunAt, "the kept wake")
}

// testGroupFinishDuplicate: two ends for one workflow refuse the whole call and write nothing.
func testGroupFinishDuplicate(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	g := f.groupFinisher()
	w, l := f.start("group.dup")
	end := storage.RunEnd{Lease: l, Finish: storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateCompleted}}
	errs, err := g.FinishRuns(f.ctx, []storage.RunEnd{end, end})
	require.ErrorIs(t, err, storage.ErrInvalid)
	require.Nil(t, errs)
	require.Equal(t, storage.StateRunning, f.get(w.ID).State, "nothing was written")
	errs, err = g.FinishRuns(f.ctx, nil)
	require.NoError(t, err, "no ends is no work")
	require.Empty(t, errs)
}

// testGroupFinishClosed: after Close, FinishRuns fails as a whole with ErrClosed.
func testGroupFinishClosed(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	g := f.groupFinisher()
	_, l := f.start("group.closed")
	require.NoError(t, f.s.Close())
	_, err := g.FinishRuns(f.ctx, []storage.RunEnd{{Lease: l, Finish: storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateCompleted}}})
	require.ErrorIs(t, err, storage.ErrClosed)
}
