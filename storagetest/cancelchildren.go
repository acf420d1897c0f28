package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// CancelChildren: cancelling a branch's unfinished children in bulk, level by level.

func (f *fixture) cancelChildren(stepIDs []int64, limit int, now time.Time) storage.CancelChildrenResult {
	f.t.Helper()
	res, err := f.s.CancelChildren(f.ctx, storage.CancelChildrenRequest{StepIDs: stepIDs, Limit: limit, Now: now})
	require.NoError(f.t, err, "CancelChildren of steps %v, limit %d", stepIDs, limit)
	require.True(f.t, slices.IsSorted(res.Cancelled), "Cancelled in ID order: %v", res.Cancelled)
	require.True(f.t, slices.IsSorted(res.BranchStepIDs), "BranchStepIDs in ID order: %v", res.BranchStepIDs)
	require.LessOrEqual(f.t, len(res.Cancelled), limit, "cancelled more than the limit")
	return res
}

// requireCancelledAt requires that every workflow of ids is cancelled as Cancel leaves one:
// no RunAt, no wait, FinishedAt and UpdatedAt at now.
func (f *fixture) requireCancelledAt(ids []int64, now time.Time) {
	f.t.Helper()
	for _, id := range ids {
		w := f.get(id)
		require.Equal(f.t, storage.StateCancelled, w.State, "workflow %d (%q)", id, w.Key)
		requireTime(f.t, time.Time{}, w.RunAt, fmt.Sprintf("RunAt of cancelled child %q", w.Key))
		require.Empty(f.t, w.Wait.Kind, "wait of cancelled child %q", w.Key)
		requireTime(f.t, now, w.FinishedAt, fmt.Sprintf("FinishedAt of cancelled child %q", w.Key))
		requireTime(f.t, now, w.UpdatedAt, fmt.Sprintf("UpdatedAt of cancelled child %q", w.Key))
	}
}

// testCancelChildrenUnfinished: of two branches' children, exactly the idle (timer or no
// RunAt), running and stalled ones are cancelled, as Cancel cancels one; completed, failed
// and cancelled children, and another parent's children, are left as they were.
func testCancelChildrenUnfinished(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, steps := f.mergeParent("cc.parent", "p", "cc.child", 4, 3)
	_, others := f.mergeParent("cc.other", "o", "cc.other.child", 2)

	claimed := map[string]storage.Workflow{}
	for _, c := range f.claim("worker-c", at(3*time.Second), storage.MaxClaim, "cc.child") {
		claimed[c.Key] = c
	}
	require.Len(t, claimed, 7)
	done := storage.Commit{Now: at(4 * time.Second)}
	states := map[string]storage.Finish{
		"p$b0$items_0": {Commit: done, State: storage.StateCompleted, Output: []byte(`1`)},
		"p$b0$items_1": {Commit: done, State: storage.StateFailed},
		"p$b0$items_2": {Commit: done, State: storage.StateStalled},
		"p$b1$items_0": {Commit: done, State: storage.StateIdle, Wait: storage.Wait{Kind: "signal", Step: "signal$go"}},
		"p$b1$items_1": {Commit: done, State: storage.StateIdle, Wait: storage.Wait{Kind: "signal", Step: "signal$go"}},
		"p$b1$items_2": {Commit: done, State: storage.StateIdle, RunAt: at(time.Hour), Wait: storage.Wait{Kind: "sleep", Step: "sleep$nap"}},
		// p$b0$items_3 stays running.
	}
	for key, fin := range states {
		c := claimed[key]
		f.finish(c.Lease(), fin)
	}
	require.NoError(t, f.s.Cancel(f.ctx, claimed["p$b1$items_1"].ID, at(5*time.Second)))
	final := map[string]storage.Workflow{}
	for _, key := range []string{"p$b0$items_0", "p$b0$items_1", "p$b1$items_1"} {
		final[key] = f.get(claimed[key].ID)
	}
	var want []int64
	for _, key := range []string{"p$b0$items_2", "p$b0$items_3", "p$b1$items_0", "p$b1$items_2"} {
		want = append(want, claimed[key].ID)
	}
	slices.Sort(want)

	now := at(10 * time.Second)
	res := f.cancelChildren(append(slices.Clone(steps), steps[0]), 100, now) // a repeated step counts once
	require.Equal(t, want, res.Cancelled, "exactly the stalled, running and idle children are cancelled")
	require.False(t, res.More, "fewer than the limit: nothing left")
	require.Empty(t, res.BranchStepIDs, "the children have no branches")
	f.requireCancelledAt(want, now)
	for key, before := range final {
		got := f.get(before.ID)
		require.Equal(t, before.State, got.State, "%s child %q is left alone", before.State, key)
		requireTime(t, before.FinishedAt, got.FinishedAt, "FinishedAt of final child "+key)
	}
	for _, c := range f.childrenOf(others[0]) {
		require.Equal(t, storage.StateIdle, c.State, "another parent's child %q is left alone", c.Key)
	}
	f.requireNoClaim(at(2*time.Hour), "cancelled children never run", "cc.child")

	again := f.cancelChildren(steps, 100, at(11*time.Second))
	require.Empty(t, again.Cancelled, "a second call finds nothing left")
	require.False(t, again.More)
}

// testCancelChildrenLimit: a call cancels at most Limit children and says when more may be
// left; calls repeated until More is false cancel every child exactly once.
func testCancelChildrenLimit(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, tc := range []struct {
		n, limit int
		calls    []int // children cancelled by each call
	}{
		{25, 10, []int{10, 10, 5}},
		{20, 10, []int{10, 10, 0}}, // the call after a full one finds none
		{3, 1, []int{1, 1, 1, 0}},
	} {
		name := fmt.Sprintf("cc.limit%d", tc.n)
		_, steps := f.mergeParent(name, "p", name+".child", tc.n)
		var all []int64
		for i, want := range tc.calls {
			res := f.cancelChildren(steps, tc.limit, at(time.Minute))
			require.Len(t, res.Cancelled, want, "%s: call %d", name, i+1)
			require.Equal(t, want == tc.limit, res.More, "%s: More after call %d", name, i+1)
			all = append(all, res.Cancelled...)
		}
		kids := f.childrenOf(steps[0])
		require.Len(t, kids, tc.n)
		require.ElementsMatch(t, ids(kids), all, "%s: every child cancelled once", name)
		f.requireCancelledAt(all, at(time.Minute))
	}
}

// testCancelChildrenBranchSteps: a call returns the branch steps of the children it
// cancelled (and no other step records), including one a running child recorded just
// before, so the next call with them cancels the grandchildren, without loading any child.
func testCancelChildrenBranchSteps(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, steps := f.mergeParent("cc.tree", "p", "cc.mid", 3)
	mids := map[string]storage.Workflow{}
	for _, c := range f.claim("worker-m", at(3*time.Second), storage.MaxClaim, "cc.mid") {
		mids[c.Key] = c
	}
	require.Len(t, mids, 3)
	spawn := func(mid storage.Workflow, branch string, n int) {
		f.spawn(mid.Lease(), storage.SpawnRequest{
			Branch:   branch,
			Steps:    []storage.Step{branchStep(branch), {Name: "spawn$" + branch + "$items", State: storage.StepPending, Meta: []byte(`{"cursor":1}`)}},
			Children: kids("cc.leaf", mid.Key+"$"+branch, 0, n),
			Now:      at(4 * time.Second),
		})
	}
	// mid 0 has two branches and other records whose names merely look alike, and waits on
	// its merge; mid 1 records a branch and is still running; mid 2 has no branch.
	m0, m1, m2 := mids["p$b0$items_0"], mids["p$b0$items_1"], mids["p$b0$items_2"]
	spawn(m0, "branch$g", 2)
	spawn(m0, "branch$h", 1)
	f.save(m0.Lease(), storage.Commit{Steps: []storage.Step{step("branchy", []byte("1")), step("merge$branch$g", []byte("1"))}, Now: at(5 * time.Second)})
	f.parkOnMerge(m0.Lease(), at(5*time.Second))
	spawn(m1, "branch$g", 2)
	f.finish(m2.Lease(), storage.Finish{Commit: storage.Commit{Steps: []storage.Step{step("work", []byte("1"))}, Now: at(5 * time.Second)}, State: storage.StateIdle})

	res := f.cancelChildren(steps, 10, at(10*time.Second))
	require.Equal(t, []int64{m0.ID, m1.ID, m2.ID}, res.Cancelled)
	wantSteps := []int64{f.stepID(m0.ID, "branch$g"), f.stepID(m0.ID, "branch$h"), f.stepID(m1.ID, "branch$g")}
	slices.Sort(wantSteps)
	require.Equal(t, wantSteps, res.BranchStepIDs, "the branch steps of the cancelled children, and only those")

	leaves := f.cancelChildren(res.BranchStepIDs, 10, at(11*time.Second))
	require.Len(t, leaves.Cancelled, 5, "the grandchildren of every branch")
	require.Empty(t, leaves.BranchStepIDs)
	require.False(t, leaves.More)
	for _, stepID := range wantSteps {
		for _, c := range f.childrenOf(stepID) {
			require.Equal(t, storage.StateCancelled, c.State, "grandchild %q", c.Key)
		}
	}
	f.requireNoClaim(at(time.Hour), "no leaf of the tree runs", "cc.leaf", "cc.mid")
}

// testCancelChildrenFencesRuns: a running child cancelled in bulk loses its lease's write
// rights like one cancelled by Cancel: every fenced write returns ErrCancelled and writes
// nothing, and it is not taken over when its lease runs out.
func testCancelChildrenFencesRuns(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, steps := f.mergeParent("cc.fence", "p", "cc.fence.child", 2)
	running := f.claim("worker-c", at(3*time.Second), storage.MaxClaim, "cc.fence.child")
	require.Len(t, running, 2)
	l := running[0].Lease()
	f.save(l, storage.Commit{Steps: []storage.Step{step("before-cancel", []byte("1"))}, Now: at(4 * time.Second)})
	// A short last heartbeat, so the lease runs out by the store's clock below.
	require.NoError(t, f.s.Heartbeat(f.ctx, l, shortTTL, at(4*time.Second)))

	res := f.cancelChildren(steps, 10, at(5*time.Second))
	want := ids(running)
	slices.Sort(want)
	require.Equal(t, want, res.Cancelled)

	c := storage.Commit{Steps: []storage.Step{step("after-cancel", []byte("2"))}, Now: at(6 * time.Second)}
	require.ErrorIs(t, f.s.SaveSteps(f.ctx, l, c), storage.ErrCancelled, "SaveSteps")
	require.ErrorIs(t, f.s.Heartbeat(f.ctx, l, ttl, at(6*time.Second)), storage.ErrCancelled, "Heartbeat")
	_, err := f.s.SpawnBatch(f.ctx, l, storage.SpawnRequest{Branch: "branch$late", Steps: []storage.Step{branchStep("branch$late")},
		Children: kids("cc.fence.late", "late", 0, 2), Now: at(6 * time.Second)})
	require.ErrorIs(t, err, storage.ErrCancelled, "SpawnBatch")
	require.ErrorIs(t, f.s.FinishRun(f.ctx, l, storage.Finish{Commit: c, State: storage.StateCompleted, Output: []byte(`"late"`)}), storage.ErrCancelled, "FinishRun")
	require.ErrorIs(t, f.s.Release(f.ctx, l, at(6*time.Second)), storage.ErrCancelled, "Release")
	require.ErrorIs(t, f.s.FinishRun(f.ctx, running[1].Lease(), storage.Finish{Commit: c, State: storage.StateCompleted}), storage.ErrCancelled, "FinishRun of the other child")

	got, recs := f.load(l.WorkflowID)
	require.Equal(t, storage.StateCancelled, got.State)
	require.Empty(t, got.Output)
	require.Len(t, recs, 1, "records committed before the cancel stay, none after")
	require.Equal(t, "before-cancel", recs[0].Name)
	_, err = f.s.FindWorkflow(f.ctx, "cc.fence.late", "late_0")
	require.ErrorIs(t, err, storage.ErrNotFound, "a cancelled child spawns nothing")

	f.awaitStoreClock(shortTTL)
	f.requireNoClaim(at(ttl+time.Minute), "a cancelled child is not taken over when its lease expires", "cc.fence.child")
}

// testCancelChildrenConcurrentRuns: children are claimed and completed by workers while
// their branch is cancelled in small calls. No child is skipped because a worker held it:
// once the calls say nothing is left, every child is final, each completed one is one whose
// run's final write succeeded, each other run's final write was refused as cancelled, and
// each child was cancelled by at most one call.
func testCancelChildrenConcurrentRuns(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const n = 120
	_, steps := f.mergeParent("cc.race", "p", "cc.race.child", n)

	stop := make(chan struct{})
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		completed []int64
		errs      []error
	)
	for w := range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := f.s.Claim(f.ctx, storage.ClaimRequest{Owner: fmt.Sprint("worker-", w), Limit: 5, Names: []string{"cc.race.child"}, TTL: ttl, Now: at(3 * time.Second)})
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("claim: %w", err))
					mu.Unlock()
					return
				}
				if len(got) == 0 {
					time.Sleep(time.Millisecond) // the poll interval of an idle worker
				}
				for _, c := range got {
					err := f.s.FinishRun(f.ctx, c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(4 * time.Second)}, State: storage.StateCompleted, Output: []byte(`1`)})
					mu.Lock()
					switch {
					case err == nil:
						completed = append(completed, c.ID)
					case !errors.Is(err, storage.ErrCancelled):
						errs = append(errs, fmt.Errorf("finish of child %d: %w", c.ID, err))
					}
					mu.Unlock()
				}
			}
		})
	}
	var cancelled []int64
	for calls := 1; ; calls++ {
		res := f.cancelChildren(steps, 7, at(5*time.Second))
		cancelled = append(cancelled, res.Cancelled...)
		if !res.More {
			break
		}
		require.Less(t, calls, n, "the calls never say nothing is left")
	}
	close(stop)
	wg.Wait()
	require.Empty(t, errs)

	var gotCompleted, gotCancelled []int64
	for _, c := range f.childrenOf(steps[0]) {
		switch c.State {
		case storage.StateCompleted:
			gotCompleted = append(gotCompleted, c.ID)
		case storage.StateCancelled:
			gotCancelled = append(gotCancelled, c.ID)
		default:
			require.Failf(t, "child left unfinished", "child %q is %s after the calls said nothing is left", c.Key, c.State)
		}
	}
	require.ElementsMatch(t, completed, gotCompleted, "completed children are those whose final write succeeded")
	require.ElementsMatch(t, cancelled, gotCancelled, "cancelled children are those the calls reported, each once")
	t.Logf("%d children: %d completed by workers, %d cancelled", n, len(gotCompleted), len(gotCancelled))
}

// testInvalidCancelChildren: bad input is refused with ErrInvalid and cancels nothing.
func testInvalidCancelChildren(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, steps := f.mergeParent("cc.invalid", "p", "cc.invalid.child", 3)
	good := storage.CancelChildrenRequest{StepIDs: steps, Limit: 10, Now: at(3 * time.Second)}
	tooMany := make([]int64, storage.MaxCancelSteps+1)
	for i := range tooMany {
		tooMany[i] = steps[0]
	}
	for _, tc := range []struct {
		name   string
		modify func(r *storage.CancelChildrenRequest)
	}{
		{"no step IDs", func(r *storage.CancelChildrenRequest) { r.StepIDs = nil }},
		{"more than MaxCancelSteps step IDs", func(r *storage.CancelChildrenRequest) { r.StepIDs = tooMany }},
		{"zero step ID", func(r *storage.CancelChildrenRequest) { r.StepIDs = append([]int64{0}, steps...) }},
		{"negative step ID", func(r *storage.CancelChildrenRequest) { r.StepIDs = append([]int64{-1}, steps...) }},
		{"zero limit", func(r *storage.CancelChildrenRequest) { r.Limit = 0 }},
		{"negative limit", func(r *storage.CancelChildrenRequest) { r.Limit = -1 }},
		{"limit over MaxCancelChildren", func(r *storage.CancelChildrenRequest) { r.Limit = storage.MaxCancelChildren + 1 }},
		{"zero now", func(r *storage.CancelChildrenRequest) { r.Now = time.Time{} }},
		{"now before MinTime", func(r *storage.CancelChildrenRequest) { r.Now = storage.MinTime.Add(-time.Second) }},
		{"now after MaxTime", func(r *storage.CancelChildrenRequest) { r.Now = storage.MaxTime.Add(time.Second) }},
	} {
		r := good
		tc.modify(&r)
		res, err := f.s.CancelChildren(f.ctx, r)
		require.ErrorIs(t, err, storage.ErrInvalid, "CancelChildren with %s", tc.name)
		require.Empty(t, res.Cancelled, "CancelChildren with %s", tc.name)
	}
	for _, c := range f.childrenOf(steps[0]) {
		require.Equal(t, storage.StateIdle, c.State, "refused calls cancel nothing: child %q", c.Key)
	}
	require.Len(t, f.cancelChildren(good.StepIDs, good.Limit, good.Now).Cancelled, 3, "the good request cancels them")
}
