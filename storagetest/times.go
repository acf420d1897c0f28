package storagetest

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Stored times: a request's Now is what the store records as created, updated, finished and
// completed times (see the storage package doc), and RunAt is kept as given. The times these
// cases pass have whole microseconds below the millisecond, the finest precision every
// backend keeps, and some are given in a zone other than UTC: the store keeps the instant,
// and hands every time back in UTC. Each workflow is read back through every method that
// returns one, so a backend that loses a time on one read path only is caught too.

// atMicro returns at(d) plus 123.456 ms: a time that whole seconds or whole milliseconds
// cannot hold, but microseconds can.
func atMicro(d time.Duration) time.Time {
	return at(d).Add(123*time.Millisecond + 456*time.Microsecond)
}

// east returns t in a zone five and a half hours east of UTC: the same instant, another wall
// clock.
func east(t time.Time) time.Time {
	return t.In(time.FixedZone("UTC+05:30", 5*3600+30*60))
}

// workflowTimes are the times a case expects of a workflow; a zero field means unset.
type workflowTimes struct {
	created, updated, finished, runAt time.Time
}

// requireWorkflowTimes requires that w carries the times want.
func requireWorkflowTimes(t *testing.T, want workflowTimes, w storage.Workflow, what string) {
	t.Helper()
	requireTime(t, want.created, w.CreatedAt, what+": created at")
	requireTime(t, want.updated, w.UpdatedAt, what+": updated at")
	requireTime(t, want.finished, w.FinishedAt, what+": finished at")
	requireTime(t, want.runAt, w.RunAt, what+": run at")
}

// readPath is a workflow as one read method returned it.
type readPath struct {
	method string
	w      storage.Workflow
}

// readEverywhere reads workflow id through GetWorkflow, FindWorkflow, Load and ListWorkflows.
func (f *fixture) readEverywhere(id int64) []readPath {
	f.t.Helper()
	got := f.get(id)
	found, err := f.s.FindWorkflow(f.ctx, got.Name, got.Key)
	require.NoError(f.t, err, "FindWorkflow %q %q", got.Name, got.Key)
	loaded, _ := f.load(id)
	page := f.list(storage.ListFilter{Name: got.Name, AfterID: id - 1, Limit: 1})
	require.Equal(f.t, []int64{id}, ids(page), "ListWorkflows from just before workflow %d", id)
	return []readPath{{"GetWorkflow", got}, {"FindWorkflow", found}, {"Load", loaded}, {"ListWorkflows", page[0]}}
}

// requireTimesEverywhere requires that workflow id carries the times want on every read path.
func (f *fixture) requireTimesEverywhere(id int64, want workflowTimes, what string) {
	f.t.Helper()
	for _, p := range f.readEverywhere(id) {
		requireWorkflowTimes(f.t, want, p.w, fmt.Sprintf("%s (%s)", what, p.method))
	}
}

// stepTimes are the times a case expects of a step record; a zero field means unset.
type stepTimes struct {
	created, updated, completed time.Time
}

// requireStepTimes requires that Load returns the step records of workflow id with the times
// want, by name.
func (f *fixture) requireStepTimes(id int64, want map[string]stepTimes, what string) {
	f.t.Helper()
	_, steps := f.load(id)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		w := want[name]
		s := stepByName(steps, name)
		require.Equal(f.t, name, s.Name, "%s: step %q is not recorded", what, name)
		requireTime(f.t, w.created, s.CreatedAt, fmt.Sprintf("%s: step %q created at", what, name))
		requireTime(f.t, w.updated, s.UpdatedAt, fmt.Sprintf("%s: step %q updated at", what, name))
		requireTime(f.t, w.completed, s.CompletedAt, fmt.Sprintf("%s: step %q completed at", what, name))
	}
}

// claimed claims workflow w for owner at now and returns it as Claim returned it.
func (f *fixture) claimed(w storage.Workflow, owner string, now time.Time) storage.Workflow {
	f.t.Helper()
	got := f.claim(owner, now, 1, w.Name)
	require.Equal(f.t, []int64{w.ID}, ids(got), "Claim of due workflow %q at %v", w.Name, now)
	return got[0]
}

// testTimesRun: through a workflow's life (create, wake, claim, commit, suspend, finish) it
// carries the times of the requests that made it so, to the microsecond, on every read path.
func testTimesRun(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	c0 := atMicro(0)
	w, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "times.run", Key: "k", RunAt: east(atMicro(time.Hour)), Now: east(c0)})
	require.NoError(t, err)
	require.True(t, created)
	want := workflowTimes{created: c0, updated: c0, runAt: atMicro(time.Hour)}
	requireWorkflowTimes(t, want, w, "returned by CreateWorkflow")
	f.requireTimesEverywhere(w.ID, want, "after CreateWorkflow")

	again, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "times.run", Key: "k", RunAt: atMicro(2 * time.Hour), Now: atMicro(time.Minute)})
	require.NoError(t, err)
	require.False(t, created)
	requireWorkflowTimes(t, want, again, "returned by a second CreateWorkflow of the same key")

	now, _, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "times.now", Key: "k", Now: c0})
	require.NoError(t, err)
	requireWorkflowTimes(t, workflowTimes{created: c0, updated: c0, runAt: c0}, now, "created without a RunAt (runnable at its Now)")
	f.requireTimesEverywhere(now.ID, workflowTimes{created: c0, updated: c0, runAt: c0}, "created without a RunAt")

	f.wake(w.ID, east(atMicro(time.Minute)))
	for _, p := range f.readEverywhere(w.ID) {
		requireTime(t, atMicro(time.Minute), p.w.RunAt, fmt.Sprintf("run at after Wake (%s)", p.method))
	}

	n1 := atMicro(2 * time.Minute)
	c := f.claimed(w, "worker-a", east(n1))
	want = workflowTimes{created: c0, updated: n1, runAt: n1.Add(ttl)}
	requireWorkflowTimes(t, want, c, "returned by Claim")
	f.requireTimesEverywhere(w.ID, want, "after Claim")
	l := c.Lease()

	n2 := atMicro(3 * time.Minute)
	f.save(l, storage.Commit{Steps: []storage.Step{step("a", nil)}, Now: east(n2)})
	want.updated = n2
	f.requireTimesEverywhere(w.ID, want, "after SaveSteps")

	n3, wake := atMicro(4*time.Minute), atMicro(2*time.Hour)
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: n3}, State: storage.StateIdle, RunAt: east(wake)})
	want = workflowTimes{created: c0, updated: n3, runAt: wake}
	f.requireTimesEverywhere(w.ID, want, "after FinishRun suspended it")

	c = f.claimed(w, "worker-b", wake)
	l = c.Lease()
	n4 := atMicro(2*time.Hour + time.Minute)
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: east(n4)}, State: storage.StateCompleted})
	f.requireTimesEverywhere(w.ID, workflowTimes{created: c0, updated: n4, finished: n4}, "after FinishRun completed it")

	fw, fl := f.start("times.failed")
	n5 := atMicro(5 * time.Minute)
	f.finish(fl, storage.Finish{Commit: storage.Commit{Now: n5}, State: storage.StateFailed, Attempt: 1})
	f.requireTimesEverywhere(fw.ID, workflowTimes{created: at(0), updated: n5, finished: n5}, "after FinishRun failed it")
}

// testTimesControl: the operator's units and spawns stamp their times too: Retry, Cancel,
// Release, a stalled finish (not final: no finished time), and SpawnBatch on the parent and
// its children.
func testTimesControl(t *testing.T, factory Factory) {
	f := newFixture(t, factory)

	s, _ := f.stall("times.stalled")
	f.requireTimesEverywhere(s.ID, workflowTimes{created: at(0), updated: at(10 * time.Second)}, "stalled")
	nr := atMicro(time.Hour)
	r, err := f.s.Retry(f.ctx, s.ID, storage.RetryRequest{Now: east(nr)})
	require.NoError(t, err)
	want := workflowTimes{created: at(0), updated: nr, runAt: nr}
	requireWorkflowTimes(t, want, r, "returned by Retry")
	f.requireTimesEverywhere(s.ID, want, "after Retry")

	c := f.create("times.cancel", "k", atMicro(time.Hour))
	nc := atMicro(time.Minute)
	require.NoError(t, f.s.Cancel(f.ctx, c.ID, east(nc)))
	f.requireTimesEverywhere(c.ID, workflowTimes{created: at(0), updated: nc, finished: nc}, "after Cancel")

	rw, rl := f.start("times.release")
	nrel := atMicro(2 * time.Minute)
	require.NoError(t, f.s.Release(f.ctx, rl, east(nrel)))
	f.requireTimesEverywhere(rw.ID, workflowTimes{created: at(0), updated: nrel, runAt: nrel}, "after Release")

	p, pl := f.start("times.parent")
	ns, later := atMicro(3*time.Minute), atMicro(time.Hour)
	children := kids("times.child", "k", 0, 3)
	children[2].RunAt = east(later)
	res := f.spawn(pl, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: children, Now: east(ns)})
	f.requireTimesEverywhere(p.ID, workflowTimes{created: at(0), updated: ns, runAt: at(ttl)}, "the parent after SpawnBatch")
	got := requireChildren(f, res.BranchStepID, childKeys(children))
	for _, child := range got {
		runAt := ns
		if child.Key == children[2].Key {
			runAt = later
		}
		f.requireTimesEverywhere(child.ID, workflowTimes{created: ns, updated: ns, runAt: runAt}, fmt.Sprintf("child %q of SpawnBatch", child.Key))
	}
}

// testTimesSteps: a step record is created at the Now of the write that first stores it and
// keeps that time when replaced, is updated at the Now of the latest write, and completed at
// the Now of the write that records it completed; pending and failed records have no
// completion time. So for every unit that writes steps: SaveSteps, FinishRun, Retry and
// SpawnBatch.
func testTimesSteps(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("times.steps")
	n1, n2, n3 := atMicro(time.Second), atMicro(2*time.Second), atMicro(3*time.Second)
	f.save(l, storage.Commit{Steps: []storage.Step{
		step("done", []byte("1")),
		{Name: "waiting", State: storage.StepPending, Attempts: 1},
	}, Now: east(n1)})
	f.requireStepTimes(w.ID, map[string]stepTimes{
		"done":    {created: n1, updated: n1, completed: n1},
		"waiting": {created: n1, updated: n1},
	}, "after the first SaveSteps")

	f.save(l, storage.Commit{Steps: []storage.Step{step("waiting", []byte("2"))}, Now: east(n2)})
	f.requireStepTimes(w.ID, map[string]stepTimes{
		"done":    {created: n1, updated: n1, completed: n1},
		"waiting": {created: n1, updated: n2, completed: n2},
	}, "after a SaveSteps completed a pending step")

	f.finish(l, storage.Finish{Commit: storage.Commit{Steps: []storage.Step{step("last", []byte("3"))}, Now: n3}, State: storage.StateCompleted})
	f.requireStepTimes(w.ID, map[string]stepTimes{
		"done":    {created: n1, updated: n1, completed: n1},
		"waiting": {created: n1, updated: n2, completed: n2},
		"last":    {created: n3, updated: n3, completed: n3},
	}, "after FinishRun")

	s, _ := f.stall("times.retry")
	f.requireStepTimes(s.ID, map[string]stepTimes{
		"charge": {created: at(10 * time.Second), updated: at(10 * time.Second)},
	}, "a failed step")
	nr := atMicro(time.Hour)
	_, err := f.s.Retry(f.ctx, s.ID, storage.RetryRequest{Steps: []storage.Step{step("retry$1", []byte(`"op"`))}, Now: east(nr)})
	require.NoError(t, err)
	f.requireStepTimes(s.ID, map[string]stepTimes{"retry$1": {created: nr, updated: nr, completed: nr}}, "after Retry")

	p, pl := f.start("times.spawn")
	ns := atMicro(4 * time.Second)
	f.spawn(pl, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("times.child", "k", 0, 2), Now: east(ns)})
	f.requireStepTimes(p.ID, map[string]stepTimes{"branch$b": {created: ns, updated: ns}}, "after SpawnBatch")
}

// testTimesErrors: an error record is created at the Now of the commit that carries it.
func testTimesErrors(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("times.errors")
	n1, n2 := atMicro(time.Second), atMicro(2*time.Second)
	f.save(l, storage.Commit{Errors: []storage.ErrorRecord{{Step: "charge", Attempt: 1, Message: "first"}}, Now: east(n1)})
	f.finish(l, storage.Finish{Commit: storage.Commit{Errors: []storage.ErrorRecord{{Attempt: 1, Message: "second"}}, Now: n2}, State: storage.StateFailed, Attempt: 1})
	errs, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	require.Len(t, errs, 2)
	requireTime(t, n1, errs[0].CreatedAt, "created at of the error record of SaveSteps")
	requireTime(t, n2, errs[1].CreatedAt, "created at of the error record of FinishRun")
}

// testTimesUTC: every time the store returns is in UTC (time.UTC), whatever zone the request
// gave it in: workflows from every read method, Claim and Retry, step records and error
// records.
func testTimesUTC(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	var seen int
	utc := func(tm time.Time, what string) {
		t.Helper()
		if tm.IsZero() {
			return
		}
		seen++
		require.True(t, tm.Location() == time.UTC, "%s: want a time in UTC, got %v (location %q)", what, tm, tm.Location())
	}
	workflow := func(w storage.Workflow, what string) {
		t.Helper()
		utc(w.CreatedAt, what+": created at")
		utc(w.UpdatedAt, what+": updated at")
		utc(w.FinishedAt, what+": finished at")
		utc(w.RunAt, what+": run at")
		utc(w.LeaseUntil, what+": lease until")
	}
	everywhere := func(id int64, what string) {
		t.Helper()
		for _, p := range f.readEverywhere(id) {
			workflow(p.w, fmt.Sprintf("%s (%s)", what, p.method))
		}
	}

	w, _, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "times.utc", Key: "k", RunAt: east(atMicro(0)), Now: east(atMicro(0))})
	require.NoError(t, err)
	workflow(w, "returned by CreateWorkflow")
	everywhere(w.ID, "created")
	c := f.claimed(w, "worker-a", east(atMicro(time.Second)))
	workflow(c, "returned by Claim")
	everywhere(w.ID, "claimed")
	f.save(c.Lease(), storage.Commit{
		Steps:  []storage.Step{step("done", nil), {Name: "waiting", State: storage.StepPending}},
		Errors: []storage.ErrorRecord{{Step: "waiting", Attempt: 1, Message: "boom"}},
		Now:    east(atMicro(2 * time.Second)),
	})
	f.finish(c.Lease(), storage.Finish{Commit: storage.Commit{Now: east(atMicro(3 * time.Second))}, State: storage.StateStalled})
	_, steps := f.load(w.ID)
	for _, s := range steps {
		utc(s.CreatedAt, fmt.Sprintf("step %q created at", s.Name))
		utc(s.UpdatedAt, fmt.Sprintf("step %q updated at", s.Name))
		utc(s.CompletedAt, fmt.Sprintf("step %q completed at", s.Name))
	}
	errs, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	for _, e := range errs {
		utc(e.CreatedAt, "error record created at")
	}
	r, err := f.s.Retry(f.ctx, w.ID, storage.RetryRequest{Now: east(atMicro(4 * time.Second))})
	require.NoError(t, err)
	workflow(r, "returned by Retry")
	require.NoError(t, f.s.Cancel(f.ctx, w.ID, east(atMicro(5*time.Second))))
	everywhere(w.ID, "cancelled")
	require.Greater(t, seen, 30, "the case checked too few times; it is wrong")
}
