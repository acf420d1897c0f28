package storagetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func (f *fixture) cleanup(r storage.CleanupRequest) storage.CleanupResult {
	f.t.Helper()
	res, err := f.s.DeleteFinished(f.ctx, r)
	require.NoError(f.t, err, "DeleteFinished %+v", r)
	return res
}

func (f *fixture) requireGone(w storage.Workflow, why string) {
	f.t.Helper()
	_, err := f.s.GetWorkflow(f.ctx, w.ID)
	require.ErrorIs(f.t, err, storage.ErrNotFound, "%s (workflow %d, %s)", why, w.ID, w.State)
}

// testCleanupStates: States limits a call to the listed final states, each with its own
// cutoff, and the result counts what went.
func testCleanupStates(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	var completed, failed, cancelled []storage.Workflow
	for i := range 3 {
		completed = append(completed, f.runTo(fmt.Sprint("c", i), storage.StateCompleted, at(time.Duration(i+1)*time.Minute)))
		failed = append(failed, f.runTo(fmt.Sprint("f", i), storage.StateFailed, at(time.Duration(i+1)*time.Minute)))
		cancelled = append(cancelled, f.runTo(fmt.Sprint("x", i), storage.StateCancelled, at(time.Duration(i+1)*time.Minute)))
	}
	only := func(st storage.State) []storage.State { return []storage.State{st} }

	// Completed: cutoff after the second one.
	res := f.cleanup(storage.CleanupRequest{Before: at(2*time.Minute + time.Second), States: only(storage.StateCompleted)})
	require.Equal(t, storage.CleanupResult{Deleted: 2}, res, "completed before 2m1s")
	f.requireGone(completed[0], "old completed")
	f.requireGone(completed[1], "old completed")
	require.Equal(t, storage.StateCompleted, f.get(completed[2].ID).State, "a completed one after the cutoff stays")
	for _, w := range append(append([]storage.Workflow{}, failed...), cancelled...) {
		require.Equal(t, w.State, f.get(w.ID).State, "another state is untouched by a completed-only cleanup")
	}

	// Failed: cutoff after the first one.
	require.Equal(t, 1, f.cleanup(storage.CleanupRequest{Before: at(time.Minute + time.Second), States: only(storage.StateFailed)}).Deleted)
	f.requireGone(failed[0], "old failed")
	require.Equal(t, storage.StateFailed, f.get(failed[1].ID).State)

	// Cancelled: every one.
	require.Equal(t, 3, f.cleanup(storage.CleanupRequest{Before: at(time.Hour), States: only(storage.StateCancelled)}).Deleted)
	for _, w := range cancelled {
		f.requireGone(w, "old cancelled")
	}

	// Two states at once, and no States meaning every final state.
	require.Equal(t, 2, f.cleanup(storage.CleanupRequest{Before: at(time.Hour), States: []storage.State{storage.StateCompleted, storage.StateFailed}, Limit: 2}).Deleted)
	require.Equal(t, 1, f.cleanup(storage.CleanupRequest{Before: at(time.Hour)}).Deleted)
	require.Empty(t, f.list(storage.ListFilter{}), "every final workflow is gone")

	_, err := f.s.DeleteFinished(f.ctx, storage.CleanupRequest{Before: at(time.Hour), States: []storage.State{storage.StateCompleted, storage.StateStalled}})
	require.ErrorIs(t, err, storage.ErrInvalid, "a non-final state in States")
}

// testCleanupNeverLive: idle, running and stalled workflows are never deleted, whatever the
// cutoff and States, an old stalled one included.
func testCleanupNeverLive(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	stalled, _ := f.stall("live.stalled") // stalled at 10s, long before every cutoff below
	live := []storage.Workflow{
		f.get(stalled.ID),
		f.runTo("live.idle", storage.StateIdle, at(time.Second)),
		f.runTo("live.running", storage.StateRunning, at(time.Second)),
		f.create("live.due", "k", at(0)),
	}
	done := f.runTo("done", storage.StateCompleted, at(time.Second))
	far := at(100 * 365 * 24 * time.Hour)
	for _, states := range [][]storage.State{nil, {storage.StateCompleted}, {storage.StateFailed}, {storage.StateCancelled}} {
		f.cleanup(storage.CleanupRequest{Before: far, States: states, Limit: 1000, StepBudget: 1})
	}
	f.requireGone(done, "the completed one")
	for _, w := range live {
		got, steps := f.load(w.ID)
		require.Equal(t, w.State, got.State, "a live workflow changed")
		if w.ID == stalled.ID {
			require.Len(t, steps, 2, "the stalled workflow keeps its steps")
			errs, err := f.s.ListErrors(f.ctx, w.ID, 0)
			require.NoError(t, err)
			require.Len(t, errs, 1, "the stalled workflow keeps its error records")
		}
	}
}

// cleanupSteps is the size of the big workflow of testCleanupManySteps.
const cleanupSteps = 10_000

// testCleanupManySteps: a workflow with 10,000 steps is deleted over several calls, each
// deleting at most StepBudget step rows (DefaultCleanupSteps when unset), and reporting More
// until the workflow is gone; a small workflow finished later goes in the last calls.
func testCleanupManySteps(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	big, l := f.start("big")
	for from := 0; from < cleanupSteps; from += 1000 {
		steps := make([]storage.Step, 1000)
		for i := range steps {
			steps[i] = step(fmt.Sprintf("s%05d", from+i), []byte(`1`))
		}
		f.save(l, storage.Commit{Steps: steps, Now: at(time.Second)})
	}
	f.finish(l, storage.Finish{Commit: storage.Commit{Errors: []storage.ErrorRecord{{Step: "s00000", Attempt: 1, Message: "once"}}, Now: at(time.Minute)}, State: storage.StateCompleted, Output: []byte(`1`)})
	_, got := f.load(big.ID)
	require.Len(t, got, cleanupSteps)
	small := f.runTo("small", storage.StateCompleted, at(2*time.Minute))

	for _, budget := range []int{0, 2500} {
		want := budget
		if want == 0 {
			want = storage.DefaultCleanupSteps
		}
		if budget != 0 { // the default pass deleted both; make another pair
			big, small = f.manySteps("big2", cleanupSteps), f.runTo("small2", storage.StateCompleted, at(2*time.Minute))
		}
		maxCalls := (cleanupSteps+want-1)/want + 1
		calls, total, deleted := 0, 0, 0
		for {
			res := f.cleanup(storage.CleanupRequest{Before: at(time.Hour), StepBudget: budget})
			calls++
			require.LessOrEqual(t, res.Steps, want, "call %d deleted more step rows than the budget %d", calls, want)
			total += res.Steps
			deleted += res.Deleted
			if res.More {
				require.Equal(t, want, res.Steps, "call %d reported More without using its whole budget", calls)
				require.Equal(t, storage.StateCompleted, f.get(big.ID).State, "the big workflow stays until its last step is gone (call %d)", calls)
			}
			if !res.More && res.Deleted == 0 {
				break
			}
			require.LessOrEqual(t, calls, maxCalls, "calls to delete a workflow of %d steps with budget %d", cleanupSteps, want)
		}
		require.Equal(t, 2, deleted, "budget %d: the big and the small workflow", budget)
		require.Equal(t, cleanupSteps, total, "budget %d: every step row deleted once", budget)
		f.requireGone(big, "the big workflow")
		f.requireGone(small, "the small workflow")
	}
}

// manySteps makes a completed workflow named name (key k) finished at 1m with n steps.
func (f *fixture) manySteps(name string, n int) storage.Workflow {
	f.t.Helper()
	w, l := f.start(name)
	for from := 0; from < n; from += 1000 {
		steps := make([]storage.Step, min(1000, n-from))
		for i := range steps {
			steps[i] = step(fmt.Sprintf("s%05d", from+i), []byte(`1`))
		}
		f.save(l, storage.Commit{Steps: steps, Now: at(time.Second)})
	}
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(time.Minute)}, State: storage.StateCompleted, Output: []byte(`1`)})
	return f.get(w.ID)
}

// testCleanupOrphanRuns: deleting a finished parent leaves its live children alone: a child
// whose parent is gone is still claimed, runs and completes, and is cleaned up later by its
// own FinishedAt.
func testCleanupOrphanRuns(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	parent, l := f.start("orphan.parent")
	res := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("orphan.child", "k$b", 0, 2), Now: at(time.Second)})
	require.Equal(t, 2, res.Inserted)
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateFailed})
	require.Equal(t, 1, f.cleanup(storage.CleanupRequest{Before: at(time.Hour)}).Deleted, "only the failed parent goes")
	f.requireGone(parent, "the parent")

	children := f.childrenOf(res.BranchStepID)
	require.Len(t, children, 2, "the children stay")
	for _, c := range children {
		cl := f.claimOne(c, "worker-a", at(3*time.Second))
		f.save(cl, storage.Commit{Steps: []storage.Step{step("work", []byte(`1`))}, Now: at(3 * time.Second)})
		f.finish(cl, storage.Finish{Commit: storage.Commit{Now: at(4 * time.Second)}, State: storage.StateCompleted, Output: []byte(`1`)})
		got, steps := f.load(c.ID)
		require.Equal(t, storage.StateCompleted, got.State, "an orphaned child completes")
		require.Len(t, steps, 1)
	}
	_, err := f.s.WakeMergeWaiters(f.ctx, storage.MergeWakeRequest{StepIDs: []int64{res.BranchStepID}, States: []storage.State{storage.StateIdle, storage.StateRunning}, At: at(5 * time.Second)})
	require.NoError(t, err, "waking the merge of a deleted parent")
	require.Equal(t, 2, f.cleanup(storage.CleanupRequest{Before: at(time.Hour)}).Deleted, "the children go by their own FinishedAt")
}

// testE2ECleanupWhileRunning: Engine.Cleanup runs in a loop beside dispatch workers on the
// same store. Old final workflows disappear, counted per state; every live workflow, the
// children of a cancelled and deleted parent included, completes, and none is deleted
// before its result is read.
func testE2ECleanupWhileRunning(t *testing.T, factory Factory) {
	var runs atomic.Int64
	child := sdk.New("e2e.cleanup.child", func(c *sdk.Context, in int) (int, error) {
		if err := sdk.Sleep(c, "nap", 30*time.Millisecond); err != nil {
			return 0, err
		}
		return sdk.Step(c, "work", func(context.Context) (int, error) { runs.Add(1); return in + 1, nil })
	})
	// The orphans nap long enough to finish well after the cutoff taken below.
	orphan := sdk.New("e2e.cleanup.orphan", func(c *sdk.Context, in int) (int, error) {
		if err := sdk.Sleep(c, "nap", 300*time.Millisecond); err != nil {
			return 0, err
		}
		return sdk.Step(c, "work", func(context.Context) (int, error) { runs.Add(1); return in + 1, nil })
	})
	parent := sdk.New("e2e.cleanup.parent", func(c *sdk.Context, n int) (int, error) {
		err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			for i := range n {
				if err := sdk.Spawn(b, fmt.Sprint("c", i), orphan, i); err != nil {
					return err
				}
			}
			return nil
		}, sdk.AutoMerge())
		if err != nil {
			return 0, err
		}
		return n, sdk.Sleep(c, "hold", time.Hour)
	})
	fails := sdk.New("e2e.cleanup.fails", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.Permanent(fmt.Errorf("boom"))
	})
	store := factory(t)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(child, parent, fails, orphan))
	require.NoError(t, err)
	startWorkers(t, eng, 2, dispatch.Concurrency(4))
	ctx := resultCtx(t)

	// Old final workflows: completed children-free runs, failures and cancellations.
	var old []int64
	for i := range 6 {
		h, err := child.Start(ctx, eng, fmt.Sprint("old", i), i)
		require.NoError(t, err)
		_, err = h.Result(ctx)
		require.NoError(t, err)
		old = append(old, h.ID())
	}
	for i := range 3 {
		h, err := fails.Start(ctx, eng, fmt.Sprint("old", i), i)
		require.NoError(t, err)
		_, err = h.Result(ctx)
		require.Error(t, err)
		old = append(old, h.ID())
	}
	// A parent cancelled while its children are live; deleting it orphans them.
	p, err := parent.Start(ctx, eng, "orphaning", 3)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		page, err := store.ListWorkflows(ctx, storage.ListFilter{Name: "e2e.cleanup.orphan"})
		return err == nil && len(page) == 3
	}, e2eTimeout, 5*time.Millisecond, "the parent spawned its children")
	require.NoError(t, eng.Cancel(ctx, p.ID()))
	old = append(old, p.ID())
	// Every old workflow finished before the cutoff; every live one finishes after it.
	cutoff := time.Now().Add(time.Millisecond)

	// Cleanup runs in a loop while live workflows start, sleep and complete.
	var total sdk.CleanupResult
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r, err := eng.Cleanup(ctx, sdk.CleanupOptions{CompletedBefore: cutoff, FailedBefore: cutoff, CancelledBefore: cutoff, BatchSize: 2})
			if err != nil {
				t.Errorf("cleanup: %v", err)
				return
			}
			total.Completed += r.Completed
			total.Failed += r.Failed
			total.Cancelled += r.Cancelled
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	var live []*sdk.Handle[int]
	for i := range 20 {
		h, err := child.Start(ctx, eng, fmt.Sprint("live", i), i)
		require.NoError(t, err)
		live = append(live, h)
	}
	for i, h := range live {
		out, err := h.Result(ctx)
		require.NoError(t, err, "live workflow %s", h.Key())
		require.Equal(t, i+1, out)
	}
	// The orphans complete too.
	require.Eventually(t, func() bool {
		page, err := store.ListWorkflows(ctx, storage.ListFilter{Name: "e2e.cleanup.orphan", States: []storage.State{storage.StateCompleted}})
		return err == nil && len(page) == 3
	}, e2eTimeout, 5*time.Millisecond, "the children of the deleted parent complete")
	close(stop)
	wg.Wait()
	// One last pass after the loop: everything old is gone, nothing live was counted.
	r, err := eng.Cleanup(ctx, sdk.CleanupOptions{CompletedBefore: cutoff, FailedBefore: cutoff, CancelledBefore: cutoff})
	require.NoError(t, err)
	total.Completed += r.Completed
	total.Failed += r.Failed
	total.Cancelled += r.Cancelled
	require.Equal(t, sdk.CleanupResult{Completed: 6, Failed: 3, Cancelled: 1}, total, "deleted per state")
	for _, id := range old {
		_, err := store.GetWorkflow(ctx, id)
		require.ErrorIs(t, err, storage.ErrNotFound, "old workflow %d", id)
	}
	for _, h := range live {
		w, err := store.GetWorkflow(ctx, h.ID())
		require.NoError(t, err, "live workflow %s", h.Key())
		require.Equal(t, storage.StateCompleted, w.State)
	}
}
