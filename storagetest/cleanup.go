package storagetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

func (f *fixture) deleteFinished(before time.Time, limit int) int {
	f.t.Helper()
	n, err := f.s.DeleteFinished(f.ctx, storage.CleanupRequest{Before: before, Limit: limit})
	require.NoError(f.t, err, "DeleteFinished before %v limit %d", before, limit)
	return n.Deleted
}

// testCleanupFinished: cleanup deletes final workflows finished before the cutoff and nothing
// else.
func testCleanupFinished(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	cutoff := at(time.Hour)
	gone := []storage.Workflow{
		f.runTo("old", storage.StateCompleted, at(time.Minute)),
		f.runTo("old", storage.StateFailed, at(2*time.Minute)),
		f.runTo("old", storage.StateCancelled, at(3*time.Minute)),
	}
	kept := []storage.Workflow{
		f.runTo("new", storage.StateCompleted, cutoff.Add(time.Minute)),
		f.runTo("new", storage.StateCancelled, cutoff.Add(time.Minute)),
		f.runTo("live", storage.StateStalled, at(time.Minute)),
		f.runTo("live", storage.StateIdle, at(time.Minute)),
		f.runTo("live", storage.StateRunning, at(time.Minute)),
		f.create("live", "due", at(0)),
	}

	require.Equal(t, len(gone), f.deleteFinished(cutoff, 0), "workflows deleted")
	for _, w := range gone {
		_, err := f.s.GetWorkflow(f.ctx, w.ID)
		require.ErrorIs(t, err, storage.ErrNotFound, "%s workflow finished before the cutoff", w.State)
	}
	for _, w := range kept {
		got := f.get(w.ID)
		require.Equal(t, w.State, got.State, "a kept workflow changed")
	}
	require.Zero(t, f.deleteFinished(cutoff, 0), "a second cleanup finds nothing")
}

// testCleanupLimit: each call deletes at most Limit workflows, and repeated calls finish the job.
func testCleanupLimit(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for i := range 7 {
		f.runTo(fmt.Sprintf("done-%d", i), storage.StateCompleted, at(time.Duration(i)*time.Second))
	}
	idle := f.create("waiting", "k", at(time.Hour))

	var counts []int
	for range 5 {
		counts = append(counts, f.deleteFinished(at(time.Hour), 3))
	}
	require.Equal(t, []int{3, 3, 1, 0, 0}, counts, "deleted per call with limit 3")
	require.Equal(t, []int64{idle.ID}, ids(f.list(storage.ListFilter{})), "only the unfinished workflow is left")
}

// testCleanupRemovesRecords: a deleted workflow's steps and error records go with it, and
// its name and key can be used again for a fresh workflow.
func testCleanupRemovesRecords(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("recorded")
	neighbour := f.create("neighbour", "k", at(0))
	ln := f.claimOne(neighbour, "worker-a", at(2*time.Hour))
	var steps []storage.Step
	var errs []storage.ErrorRecord
	for i := range 20 {
		steps = append(steps, step(fmt.Sprintf("s%02d", i), []byte{byte(i)}))
		if i%4 == 0 {
			errs = append(errs, storage.ErrorRecord{Step: steps[i].Name, Attempt: 1, Message: fmt.Sprint("e", i)})
		}
	}
	c := storage.Commit{Steps: steps, Values: []byte(`{"n":20}`), Errors: errs, Now: at(time.Second)}
	f.finish(l, storage.Finish{Commit: c, State: storage.StateCompleted, Output: []byte(`"ok"`)})
	c.Now = at(2 * time.Hour)
	f.finish(ln, storage.Finish{Commit: c, State: storage.StateCompleted})

	require.Equal(t, 1, f.deleteFinished(at(time.Hour), 0))
	_, _, err := f.s.Load(f.ctx, w.ID)
	require.ErrorIs(t, err, storage.ErrNotFound, "Load of a deleted workflow")
	_, err = f.s.FindWorkflow(f.ctx, "recorded", "k")
	require.ErrorIs(t, err, storage.ErrNotFound, "FindWorkflow of a deleted workflow")
	if left, err := f.s.ListErrors(f.ctx, w.ID, 0); err == nil {
		require.Empty(t, left, "error records of a deleted workflow")
	} else {
		require.ErrorIs(t, err, storage.ErrNotFound, "ListErrors of a deleted workflow")
	}

	_, nsteps := f.load(neighbour.ID)
	require.Len(t, nsteps, 20, "the neighbour keeps its steps")
	nerrs, err := f.s.ListErrors(f.ctx, neighbour.ID, 0)
	require.NoError(t, err)
	require.Len(t, nerrs, len(errs), "the neighbour keeps its error records")

	again, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "recorded", Key: "k", Input: []byte(`"again"`), RunAt: at(3 * time.Hour), Now: at(3 * time.Hour)})
	require.NoError(t, err)
	require.True(t, created, "the name and key of a deleted workflow are free again")
	fresh, freshSteps := f.load(again.ID)
	require.Equal(t, storage.StateIdle, fresh.State)
	require.Empty(t, freshSteps, "a new workflow inherits no steps")
	require.Empty(t, fresh.Values, "a new workflow inherits no values")
	require.Empty(t, fresh.LastError, "a new workflow inherits no error")
	freshErrs, err := f.s.ListErrors(f.ctx, again.ID, 0)
	require.NoError(t, err)
	require.Empty(t, freshErrs, "a new workflow inherits no error records")
}
