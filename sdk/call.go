package sdk

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/chronoforge/chronoforge/storage"
)

// callRecord is the step record a Call keeps its child's outcome in.
func callRecord(name string) string { return "call$" + name }

// callOutcome is what a Call records once its child ended.
type callOutcome struct {
	ID      int64           `json:"id"`
	Name    string          `json:"name"`
	Key     string          `json:"key"`
	State   storage.State   `json:"state"`
	Message string          `json:"message,omitempty"`
	Output  json.RawMessage `json:"output,omitempty"`
}

// Call runs wf as a child workflow with input in and returns its typed output: one call
// for a branch named name with one child, its merge and the read of the child's result.
// While the child runs, the workflow is suspended like a Merge (probed, not replayed, and
// woken when the child completes). If the child fails, stalls or is cancelled, Call
// returns a *WorkflowError naming the child (errors.Is matches ErrFailed, ErrStalled or
// ErrCancelled), which the workflow may handle. The child's key is
// "<parent key>$<name>$call"; name shares the namespace of branches. The outcome is
// recorded, so a replay returns it without reading the child again.
func Call[In, Out any](c *Context, name string, wf *Workflow[In, Out], in In) (Out, error) {
	var zero Out
	r := c.run
	if err := r.check(); err != nil {
		return zero, err
	}
	if wf == nil {
		return zero, r.halt(haltFail, fmt.Errorf("%w: workflow %q: call %q of a nil workflow", ErrInvalid, r.wf.Name, name))
	}
	if rec := r.steps[callRecord(name)]; rec != nil && rec.State == storage.StepCompleted {
		if err := r.use("call", name, callRecord(name)); err != nil {
			return zero, err
		}
		r.tel.run.Replayed++
		return callResult[Out](r, name, rec.Result)
	}
	spawn := func(b *BranchScope) error { return Spawn(b, "call", wf, in) }
	if err := Branch(c, name, spawn, FailFast(), branchOption(func(bc *branchConfig) { bc.merge.call = true })); err != nil {
		return zero, err
	}
	if err := Merge(c, name); err != nil {
		return zero, err
	}
	if err := r.use("call", name, callRecord(name)); err != nil {
		return zero, err
	}
	key := r.wf.Key + "$" + name + "$call"
	child, err := r.eng.store.FindWorkflow(r.ctx, wf.def.name, key)
	if err != nil {
		return zero, r.halt(haltAbort, fmt.Errorf("workflow %q key %q: call %q: read child %q: %w", r.wf.Name, r.wf.Key, name, key, err))
	}
	r.live()
	out := callOutcome{ID: child.ID, Name: child.Name, Key: child.Key, State: child.State, Message: child.LastError}
	if child.State == storage.StateCompleted {
		out.Output = child.Output
	}
	rec, _ := r.record(callRecord(name))
	rec.State, rec.Attempts, rec.CompletedAt, rec.Result = storage.StepCompleted, 1, r.eng.clock.Now(), mustJSON(out)
	r.queue(rec)
	return callResult[Out](r, name, rec.Result)
}

// callResult decodes a recorded call outcome.
func callResult[Out any](r *run, name string, data []byte) (Out, error) {
	var zero Out
	var o callOutcome
	if err := json.Unmarshal(data, &o); err != nil {
		return zero, r.halt(haltFail, decodeError(r, callRecord(name), reflect.TypeFor[callOutcome](), err))
	}
	if o.State != storage.StateCompleted {
		return zero, &WorkflowError{ID: o.ID, Name: o.Name, Key: o.Key, State: State(o.State), Message: o.Message}
	}
	var v Out
	if err := r.eng.codec.Unmarshal(o.Output, &v); err != nil {
		return zero, r.halt(haltFail, decodeError(r, callRecord(name), reflect.TypeFor[Out](), err))
	}
	return v, nil
}
