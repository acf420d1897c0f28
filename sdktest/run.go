package sdktest

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// RunDue runs every workflow due now, one run at a time in the order the store hands them
// out (earliest RunAt first), until none is due, and returns how many runs it made. It never
// moves the clock. A run that ends a branch child wakes its parent's merge, as a worker of
// package dispatch does. It fails the test when a run cannot record its outcome, and after
// Options.MaxRuns runs (workflows that keep each other due forever).
func (e *Env) RunDue() int {
	e.t.Helper()
	runs, _ := e.runDue(e.maxRuns)
	return runs
}

// Advance moves the clock forward by d and runs what is due at the new instant (RunDue). It
// does not jump beyond it: a timer due later stays pending. It returns how many runs it made.
// A negative d fails the test.
func (e *Env) Advance(d time.Duration) int {
	e.t.Helper()
	if d < 0 {
		e.t.Fatalf("sdktest: Advance(%v): the clock only moves forward", d)
		return 0
	}
	e.moveTo(e.clock.Now().Add(d))
	return e.RunDue()
}

// moveTo moves the clock forward to t (never back).
func (e *Env) moveTo(t time.Time) {
	if d := t.Sub(e.clock.Now()); d > 0 {
		e.clock.Advance(d)
	}
}

// Drain runs the workflows until they settle: it runs what is due now, then jumps the clock
// to the next wake-up (the earliest RunAt of an idle workflow: a sleep, a step's retry delay,
// a wait's next check, a repeat's tick, a merge probe) and runs again, until no workflow is
// due and none has a timer: each is final, stalled, or waits for a message, a signal or a
// merge whose children wait themselves. It returns how many runs it made; Now tells where
// the clock stopped: at the last wake-up it jumped to.
//
// Merge probes are jumped to only after a run that changed something (or at the start of
// the Drain): a probe that finds the children still running changes nothing, so while only
// probes are pending Drain goes on to the next other timer, and with none left it returns
// with the merges still waiting. So a parent whose child sleeps 30 days costs a few runs,
// not one per probe; the price is that a MergeTimeout is seen only at a later wake-up (use
// Advance to reach it exactly).
//
// It fails the test, naming the workflows still pending, rather than move the clock past
// the horizon (Options.Horizon after the start) or make more than Options.MaxRuns runs: a
// workflow that repeats forever (sdk.Repeat, sdk.CleanupWorkflow) never settles; drive it
// with Advance instead.
func (e *Env) Drain() int {
	e.t.Helper()
	runs := 0
	changed := true // the test may have sent, signalled, retried or cancelled since the last call
	for {
		n, progressed := e.runDue(e.maxRuns - runs)
		runs += n
		next, ok := e.nextWake(changed || progressed)
		if !ok {
			return runs
		}
		if next.After(e.horizon) {
			e.t.Fatalf("sdktest: Drain: the next wake-up, %v, is past the horizon %v (%d runs so far); workflows still pending:\n%s",
				next, e.horizon, runs, e.pending())
			return runs
		}
		e.moveTo(next)
		changed = false
	}
}

// runDue runs what is due now, at most budget runs, and reports whether any run was more
// than a merge probe that found the children still running.
func (e *Env) runDue(budget int) (runs int, progressed bool) {
	e.t.Helper()
	names := e.eng.Names()
	for {
		claimed, err := e.eng.Claim(e.ctx(), storage.ClaimRequest{
			Owner: owner, Limit: 1, Names: names, TTL: leaseTTL, Now: e.clock.Now(),
		})
		if err != nil {
			e.t.Fatalf("sdktest: claim: %v", err)
			return runs, progressed
		}
		if len(claimed) == 0 {
			return runs, progressed
		}
		wf := claimed[0]
		if runs >= budget {
			// Give the lease back so the listing shows the workflow as it was.
			_ = e.store.Release(e.ctx(), wf.Lease(), e.clock.Now())
			e.t.Fatalf("sdktest: %d runs and workflows are still due at %v (raise Options.MaxRuns if that is expected); workflows pending:\n%s",
				e.maxRuns, e.clock.Now(), e.pending())
			return runs, progressed
		}
		if err := e.eng.Execute(e.ctx(), wf); err != nil {
			e.t.Fatalf("sdktest: run of workflow %q key %q (id %d): %v", wf.Name, wf.Key, wf.ID, err)
			return runs, progressed
		}
		runs++
		if wf.ParentStepID != 0 {
			// After the child's final write, as a dispatch worker does: if it was the last
			// unfinished child of its branch, the parent's merge resumes now.
			if _, err := e.eng.WakeMerges(e.ctx(), []int64{wf.ParentStepID}); err != nil {
				e.t.Fatalf("sdktest: wake the merge of workflow %q key %q's parent: %v", wf.Name, wf.Key, err)
				return runs, progressed
			}
		}
		if !e.idleProbe(wf) {
			progressed = true
		}
	}
}

// idleProbe reports whether the run of claimed was a merge probe that left the workflow
// waiting on the same merge.
func (e *Env) idleProbe(claimed storage.Workflow) bool {
	if claimed.Wait.Kind != storage.WaitMerge {
		return false
	}
	wf, err := e.store.GetWorkflow(e.ctx(), claimed.ID)
	if err != nil {
		return false
	}
	return wf.State == storage.StateIdle && wf.Wait.Kind == storage.WaitMerge && wf.Wait.Step == claimed.Wait.Step
}

// nextWake returns the earliest RunAt of the idle workflows of registered names, merge
// probes included only when withMerges, and false when there is none. A workflow due now
// after RunDue could not be claimed: that fails the test.
func (e *Env) nextWake(withMerges bool) (time.Time, bool) {
	e.t.Helper()
	var next time.Time
	now := e.clock.Now()
	for _, wf := range e.timers() {
		if !wf.RunAt.After(now) {
			e.t.Fatalf("sdktest: workflow %q key %q (id %d) is due at %v but could not be claimed", wf.Name, wf.Key, wf.ID, wf.RunAt)
			return time.Time{}, false
		}
		if wf.Wait.Kind == storage.WaitMerge && !withMerges {
			continue
		}
		if next.IsZero() || wf.RunAt.Before(next) {
			next = wf.RunAt
		}
	}
	return next, !next.IsZero()
}

// timers returns the idle workflows of registered names that have a RunAt, in ID order.
func (e *Env) timers() []storage.Workflow {
	e.t.Helper()
	names := e.eng.Names()
	var out []storage.Workflow
	for _, wf := range e.list(storage.ListFilter{States: []storage.State{storage.StateIdle}}) {
		if _, ok := slices.BinarySearch(names, wf.Name); ok && !wf.RunAt.IsZero() {
			out = append(out, wf)
		}
	}
	return out
}

// list returns every workflow matching f, paging through ListWorkflows.
func (e *Env) list(f storage.ListFilter) []storage.Workflow {
	e.t.Helper()
	var out []storage.Workflow
	f.Limit = storage.MaxListLimit
	for {
		page, err := e.store.ListWorkflows(e.ctx(), f)
		if err != nil {
			e.t.Fatalf("sdktest: list workflows: %v", err)
			return out
		}
		out = append(out, page...)
		if len(page) < f.Limit {
			return out
		}
		f.AfterID = page[len(page)-1].ID
	}
}

// maxListed is how many workflows a failure message names.
const maxListed = 20

// pending describes the workflows that are not final, one a line, for failure messages.
func (e *Env) pending() string {
	wfs := e.list(storage.ListFilter{States: []storage.State{storage.StateIdle, storage.StateRunning, storage.StateStalled}})
	if len(wfs) == 0 {
		return "  (none)"
	}
	var b strings.Builder
	for i, wf := range wfs {
		if i == maxListed {
			fmt.Fprintf(&b, "  ... and %d more\n", len(wfs)-maxListed)
			break
		}
		fmt.Fprintf(&b, "  %q key %q (id %d): %s", wf.Name, wf.Key, wf.ID, wf.State)
		if wf.Wait.Kind != storage.WaitNone {
			fmt.Fprintf(&b, ", waiting %s", wf.Wait.Kind)
			if wf.Wait.Step != "" {
				fmt.Fprintf(&b, " in %q", wf.Wait.Step)
			}
		}
		if !wf.RunAt.IsZero() {
			fmt.Fprintf(&b, ", next run %v", wf.RunAt)
		}
		if wf.LastError != "" {
			fmt.Fprintf(&b, ", last error: %s", wf.LastError)
		}
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}
