package storagetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// WakeMergeWaiters: waking the parents of drained branches.

// mergeWaitFar is when a parked parent's next probe would run: far later than any wake the
// cases make, so a RunAt earlier than it can only come from a wake.
var mergeWaitFar = at(time.Hour)

// mergeParent creates a parent named name keyed key, claims it, spawns the given branches
// with the given number of children each (named child, keyed per parent and branch) and
// parks it on a merge wait due at mergeWaitFar. No other workflow named name may be due at
// at(0). It returns the parent and its branch step
// IDs, in the order of branches.
func (f *fixture) mergeParent(name, key, child string, children ...int) (storage.Workflow, []int64) {
	f.t.Helper()
	w := f.create(name, key, at(0))
	l := f.claimOne(w, "worker-p", at(0)) // the parents before it are parked, not due
	var steps []int64
	for i, n := range children {
		branch := fmt.Sprintf("branch$b%d", i)
		res := f.spawn(l, storage.SpawnRequest{
			Branch:   branch,
			Steps:    []storage.Step{branchStep(branch)},
			Children: kids(child, fmt.Sprintf("%s$b%d$items", key, i), 0, n),
			Now:      at(time.Second),
		})
		steps = append(steps, res.BranchStepID)
	}
	f.parkOnMerge(l, at(2*time.Second))
	return f.get(w.ID), steps
}

// parkOnMerge ends the run of l on a merge wait due at mergeWaitFar.
func (f *fixture) parkOnMerge(l storage.Lease, now time.Time) {
	f.t.Helper()
	f.finish(l, storage.Finish{
		Commit: storage.Commit{Now: now},
		State:  storage.StateIdle,
		RunAt:  mergeWaitFar,
		Wait:   storage.Wait{Kind: storage.WaitMerge, Step: "merge$b0", Data: []byte(`{}`)},
	})
}

func (f *fixture) wakeMerges(steps []int64, states []storage.State, when time.Time) int {
	f.t.Helper()
	n, err := f.s.WakeMergeWaiters(f.ctx, storage.MergeWakeRequest{StepIDs: steps, States: states, At: when})
	require.NoError(f.t, err, "WakeMergeWaiters of %d steps at %v", len(steps), when)
	return n
}

// finishChildren claims every due child named name at now and finishes each in the state
// state(key) returns (idle leaves it claimed, running).
func (f *fixture) finishChildren(name string, now time.Time, state func(key string) storage.State) map[string]storage.Workflow {
	f.t.Helper()
	out := map[string]storage.Workflow{}
	for _, c := range f.claim("worker-c", now, storage.MaxClaim, name) {
		out[c.Key] = c
		st := state(c.Key)
		if st == storage.StateRunning {
			continue
		}
		f.finish(c.Lease(), storage.Finish{Commit: storage.Commit{Now: now.Add(time.Millisecond)}, State: st, Output: []byte(`1`)})
	}
	return out
}

func completedAll(string) storage.State { return storage.StateCompleted }

// testMergeWakeDrained: a parent parked on a merge is woken (RunAt becomes the wake time)
// only once its branch has no child in the given states, and wakes coalesce: a later wake
// leaves the earlier RunAt, a repeat reports the parent woken again and changes nothing.
func testMergeWakeDrained(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	p, steps := f.mergeParent("mw.parent", "p", "mw.child", 3)
	states := notCompleted

	require.Zero(t, f.wakeMerges(steps, states, at(3*time.Second)), "three idle children: nothing to wake")
	requireTime(t, mergeWaitFar, f.get(p.ID).RunAt, "parent RunAt while its children are idle")

	// Two complete; the third is stalled: stalled is waited on, so still nothing.
	f.finishChildren("mw.child", at(4*time.Second), func(key string) storage.State {
		if key == "p$b0$items_2" {
			return storage.StateStalled
		}
		return storage.StateCompleted
	})
	require.Zero(t, f.wakeMerges(steps, states, at(5*time.Second)), "a stalled child keeps the merge waiting")
	requireTime(t, mergeWaitFar, f.get(p.ID).RunAt, "parent RunAt with a stalled child")
	require.Equal(t, 1, f.wakeMerges(steps, []storage.State{storage.StateIdle, storage.StateRunning}, at(6*time.Second)),
		"no child in the given states (stalled not among them): woken")
	requireTime(t, at(6*time.Second), f.get(p.ID).RunAt, "parent RunAt after the wake")

	// Coalescing: a later wake keeps the earlier time, and still reports the parent woken.
	require.Equal(t, 1, f.wakeMerges(steps, []storage.State{storage.StateIdle}, at(7*time.Second)), "woken again")
	got := f.get(p.ID)
	requireTime(t, at(6*time.Second), got.RunAt, "a later wake does not move RunAt later")
	require.Equal(t, storage.StateIdle, got.State)
	require.Equal(t, storage.WaitMerge, got.Wait.Kind, "the wait is left for the probe")
	f.requireNoClaim(at(6*time.Second-time.Millisecond), "not due before the wake time", "mw.parent")
	f.claimOne(p, "worker-a", at(6*time.Second))
}

// testMergeWakeLastChild: completing the children one by one, only the wake after the last
// completion wakes the parent; a branch without children is drained from the start.
func testMergeWakeLastChild(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	p, steps := f.mergeParent("mw.last", "p", "mw.last.child", 4)
	kids := f.finishChildren("mw.last.child", at(3*time.Second), func(string) storage.State { return storage.StateRunning })
	require.Len(t, kids, 4)
	for i := range 4 {
		c := kids[fmt.Sprintf("p$b0$items_%d", i)]
		f.finish(c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(4 * time.Second)}, State: storage.StateCompleted})
		woken := f.wakeMerges(steps, notCompleted, at(5*time.Second))
		if i < 3 {
			require.Zero(t, woken, "after %d of 4 children completed", i+1)
			requireTime(t, mergeWaitFar, f.get(p.ID).RunAt, fmt.Sprintf("parent RunAt after %d of 4", i+1))
		} else {
			require.Equal(t, 1, woken, "after the last child completed")
			requireTime(t, at(5*time.Second), f.get(p.ID).RunAt, "parent RunAt after the last child")
		}
	}

	empty, none := f.mergeParent("mw.empty", "e", "mw.empty.child", 0)
	require.Equal(t, 1, f.wakeMerges(none, notCompleted, at(6*time.Second)), "a branch without children has drained")
	requireTime(t, at(6*time.Second), f.get(empty.ID).RunAt, "parent of an empty branch")
}

// testMergeWakeOnlyMergeWaiters: an owner is woken only when idle on a merge wait, or
// running (the wake is then kept, and the run's finish applies it); an owner idle on another
// wait, stalled, failed, completed or cancelled is left as it is.
func testMergeWakeOnlyMergeWaiters(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	type owner struct {
		name string
		w    storage.Workflow
		step int64
	}
	var owners []owner
	for _, name := range []string{"sleeping", "signal", "stalled", "failed", "completed", "cancelled", "running"} {
		w := f.create("mw.owner."+name, "k", at(0))
		l := f.claimOne(w, "worker-a", at(0))
		res := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Now: at(time.Second)})
		done := storage.Commit{Now: at(2 * time.Second)}
		switch name {
		case "sleeping":
			f.finish(l, storage.Finish{Commit: done, State: storage.StateIdle, RunAt: mergeWaitFar, Wait: storage.Wait{Kind: "sleep", Step: "sleep$nap"}})
		case "signal":
			f.finish(l, storage.Finish{Commit: done, State: storage.StateIdle, Wait: storage.Wait{Kind: "signal", Step: "signal$go"}})
		case "stalled":
			f.finish(l, storage.Finish{Commit: done, State: storage.StateStalled})
		case "failed":
			f.finish(l, storage.Finish{Commit: done, State: storage.StateFailed})
		case "completed":
			f.finish(l, storage.Finish{Commit: done, State: storage.StateCompleted, Output: []byte(`1`)})
		case "cancelled":
			f.parkOnMerge(l, at(2*time.Second))
			require.NoError(t, f.s.Cancel(f.ctx, w.ID, at(2*time.Second)))
		case "running":
			// Still running: it may have counted the children just before the last finished.
		}
		owners = append(owners, owner{name, f.get(w.ID), res.BranchStepID})
	}
	var steps []int64
	for _, o := range owners {
		steps = append(steps, o.step)
	}
	require.Equal(t, 1, f.wakeMerges(steps, notCompleted, at(3*time.Second)), "only the running owner is woken")
	for _, o := range owners {
		got := f.get(o.w.ID)
		require.Equal(t, o.w.State, got.State, "%s: state", o.name)
		requireTime(t, o.w.RunAt, got.RunAt, o.name+": RunAt unchanged (a running one keeps its lease expiry)")
		requireTime(t, o.w.FinishedAt, got.FinishedAt, o.name+": FinishedAt unchanged")
		require.Equal(t, o.w.Wait.Kind, got.Wait.Kind, "%s: wait", o.name)
	}

	// The running owner's run ends on a merge wait with a far probe: the wake it missed
	// while running makes it due at the wake time.
	running := owners[len(owners)-1]
	require.Equal(t, "running", running.name)
	f.parkOnMerge(running.w.Lease(), at(4*time.Second))
	requireTime(t, at(3*time.Second), f.get(running.w.ID).RunAt, "a wake kept during the run applies at its finish")
}

// testMergeWakeManySteps: one call with MaxMergeWake step IDs (among them unknown and
// repeated ones) wakes exactly the parents that have a drained branch among them, each once,
// however their branches are spread over the IDs.
func testMergeWakeManySteps(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	type parent struct {
		w     storage.Workflow
		steps []int64
		wake  bool
	}
	var parents []parent
	// 8 drained (completed children, or none), 8 with an idle child in every branch, 6 with
	// one drained branch among busy ones: a step is answered on its own.
	for i := range 22 {
		key := fmt.Sprint("p", i)
		var w storage.Workflow
		var steps []int64
		switch {
		case i < 8:
			w, steps = f.mergeParent("mw.many", key, "mw.many.done", 2, 0, 1)
		case i < 16:
			w, steps = f.mergeParent("mw.many", key, "mw.many.busy", 1, 2, 1)
		default:
			w, steps = f.mergeParent("mw.many", key, "mw.many.busy", 1, 0, 1)
		}
		parents = append(parents, parent{w: w, steps: steps, wake: i < 8 || i >= 16})
	}
	f.finishChildren("mw.many.done", at(3*time.Second), completedAll)

	var ids []int64
	for _, p := range parents {
		ids = append(ids, p.steps...)
		ids = append(ids, p.steps[0]) // repeated: counts once
	}
	for i := int64(1); len(ids) < storage.MaxMergeWake; i++ {
		ids = append(ids, 1<<40+i) // unknown steps wake nothing
	}
	require.Equal(t, 8+6, f.wakeMerges(ids, notCompleted, at(4*time.Second)), "each parent with a drained branch woken once")
	for i, p := range parents {
		want := mergeWaitFar
		if p.wake {
			want = at(4 * time.Second)
		}
		requireTime(t, want, f.get(p.w.ID).RunAt, fmt.Sprintf("parent %d RunAt", i))
	}
}

// testMergeWakeConcurrentFinishes: the children of many parents finish at the same time, each
// followed by a wake of its own parent's branch, as workers do after their commits. Whichever
// child commits last finds no sibling left, so every parent is woken.
func testMergeWakeConcurrentFinishes(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const parents, children = 6, 4
	ps := make([]storage.Workflow, parents)
	for i := range ps {
		ps[i], _ = f.mergeParent("mw.race", fmt.Sprint("p", i), "mw.race.child", children)
	}
	claimed := f.claim("worker-c", at(3*time.Second), storage.MaxClaim, "mw.race.child")
	require.Len(t, claimed, parents*children)
	var wg sync.WaitGroup
	errs := make([]error, len(claimed))
	for i, c := range claimed {
		wg.Go(func() {
			err := f.s.FinishRun(f.ctx, c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(4 * time.Second)}, State: storage.StateCompleted})
			if err == nil {
				_, err = f.s.WakeMergeWaiters(f.ctx, storage.MergeWakeRequest{StepIDs: []int64{c.ParentStepID}, States: notCompleted, At: at(5 * time.Second)})
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "child %d", i)
	}
	for i, p := range ps {
		requireTime(t, at(5*time.Second), f.get(p.ID).RunAt, fmt.Sprintf("parent %d: the last child's wake found the branch drained", i))
	}
}

// testInvalidMergeWake: a malformed wake is refused with ErrInvalid and wakes nothing.
func testInvalidMergeWake(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	p, steps := f.mergeParent("mw.invalid", "p", "mw.invalid.child", 0)
	good := storage.MergeWakeRequest{StepIDs: steps, States: notCompleted, At: at(3 * time.Second)}
	tooMany := make([]int64, storage.MaxMergeWake+1)
	for i := range tooMany {
		tooMany[i] = steps[0]
	}
	for _, tc := range []struct {
		name   string
		modify func(r *storage.MergeWakeRequest)
	}{
		{"no step IDs", func(r *storage.MergeWakeRequest) { r.StepIDs = nil }},
		{"more than MaxMergeWake step IDs", func(r *storage.MergeWakeRequest) { r.StepIDs = tooMany }},
		{"zero step ID", func(r *storage.MergeWakeRequest) { r.StepIDs = append([]int64{0}, steps...) }},
		{"negative step ID", func(r *storage.MergeWakeRequest) { r.StepIDs = append([]int64{-1}, steps...) }},
		{"no states", func(r *storage.MergeWakeRequest) { r.States = nil }},
		{"unknown state", func(r *storage.MergeWakeRequest) { r.States = []storage.State{storage.StateIdle, "sleeping"} }},
		{"zero wake time", func(r *storage.MergeWakeRequest) { r.At = time.Time{} }},
		{"wake time before MinTime", func(r *storage.MergeWakeRequest) { r.At = storage.MinTime.Add(-time.Second) }},
		{"wake time after MaxTime", func(r *storage.MergeWakeRequest) { r.At = storage.MaxTime.Add(time.Second) }},
	} {
		r := good
		tc.modify(&r)
		n, err := f.s.WakeMergeWaiters(f.ctx, r)
		require.ErrorIs(t, err, storage.ErrInvalid, "WakeMergeWaiters with %s", tc.name)
		require.Zero(t, n, "WakeMergeWaiters with %s", tc.name)
	}
	requireTime(t, mergeWaitFar, f.get(p.ID).RunAt, "refused wakes leave the parent parked")
	require.Equal(t, 1, f.wakeMerges(good.StepIDs, good.States, good.At), "the good request wakes it")
}
