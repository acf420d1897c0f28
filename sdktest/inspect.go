package sdktest

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// StepState is the state of a step record.
type StepState string

// Step states.
const (
	// StepPending: recorded, not finished (a wait in progress, or a step between retries).
	StepPending = StepState(storage.StepPending)
	// StepCompleted: finished; its result is final and replays return it.
	StepCompleted = StepState(storage.StepCompleted)
	// StepFailed: its retries are spent; the workflow is stalled on it.
	StepFailed = StepState(storage.StepFailed)
)

// Step is one step record of a workflow, as Steps returns it.
type Step struct {
	// Name is the record's name. An sdk.Step's record is the step's own name; the SDK's
	// other calls keep records under prefixed names: "sleep$<name>" (Sleep),
	// "receive$<name>" (Receive), "until$<name>" (WaitUntil), "continue$<name>"
	// (ContinueIf), "repeat$<name>" (Repeat), "branch$<name>", "spawn$<branch>$<name>" and
	// "merge$<branch>" (Branch, Spawn, Merge), "call$<name>" besides "branch$<name>" (Call),
	// and "$workflow" and "$retry$<n>" for the workflow's own bookkeeping.
	Name     string
	State    StepState
	Attempts int
	// LastError is the message of the last failed attempt ("" once it completed).
	LastError string
	// Result is the encoded result of a completed step (Decode reads it).
	Result      []byte
	CompletedAt time.Time

	codec sdk.Codec
}

// Decode decodes the result of a completed sdk.Step (or the message of a Receive's record)
// into v, with the engine's codec.
func (s Step) Decode(v any) error { return s.codec.Unmarshal(s.Result, v) }

// ErrorRecord is one recorded failure of a workflow: of a step attempt, a wait, or a run of
// the workflow function.
type ErrorRecord struct {
	// Step is the step record's name, "" for a failure of the workflow function itself.
	Step    string
	Attempt int
	// Type is the Go type of the error; Message its text.
	Type    string
	Message string
	At      time.Time
}

// Describe returns the workflow as it stands (sdk.Engine.Describe). It fails the test if the
// workflow does not exist.
func (e *Env) Describe(target sdk.Target) sdk.Description {
	e.t.Helper()
	d, err := e.eng.Describe(e.ctx(), target.ID())
	if err != nil {
		e.t.Fatalf("sdktest: %v", err)
	}
	return d
}

// State returns the workflow's state.
func (e *Env) State(target sdk.Target) sdk.State {
	e.t.Helper()
	return e.Describe(target).State
}

// RequireState fails the test unless the workflow is in state want; the message says what
// it waits for and its last error.
func (e *Env) RequireState(target sdk.Target, want sdk.State) {
	e.t.Helper()
	d := e.Describe(target)
	if d.State != want {
		e.t.Fatalf("sdktest: workflow %q key %q (id %d) is %s, want %s%s", d.Name, d.Key, d.ID, d.State, want, detail(d))
	}
}

// detail describes what a workflow waits for and its last error, for failure messages.
func detail(d sdk.Description) string {
	var parts []string
	if d.Waiting != "" {
		parts = append(parts, "waiting "+d.Waiting+" in "+d.WaitingOn)
	}
	if !d.RunAt.IsZero() {
		parts = append(parts, "next run "+d.RunAt.String())
	}
	if d.LastError != "" {
		parts = append(parts, "last error: "+d.LastError)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// Steps returns the workflow's step records in the order they were first recorded.
func (e *Env) Steps(target sdk.Target) []Step {
	e.t.Helper()
	_, recs := e.load(target)
	out := make([]Step, 0, len(recs))
	for _, r := range recs {
		out = append(out, Step{
			Name: r.Name, State: StepState(r.State), Attempts: r.Attempts, LastError: r.LastError,
			Result: r.Result, CompletedAt: r.CompletedAt, codec: e.codec,
		})
	}
	return out
}

// Step returns the workflow's step record named name (see Step.Name for the SDK's record
// names). It fails the test if there is none.
func (e *Env) Step(target sdk.Target, name string) Step {
	e.t.Helper()
	steps := e.Steps(target)
	for _, s := range steps {
		if s.Name == name {
			return s
		}
	}
	names := make([]string, len(steps))
	for i, s := range steps {
		names[i] = s.Name
	}
	e.t.Fatalf("sdktest: workflow %d has no step record %q; it has %q", target.ID(), name, names)
	return Step{}
}

// Errors returns every error record of the workflow, oldest first.
func (e *Env) Errors(target sdk.Target) []ErrorRecord {
	e.t.Helper()
	recs, err := e.store.ListErrors(e.ctx(), target.ID(), storage.MaxErrorsLimit)
	if err != nil {
		e.t.Fatalf("sdktest: errors of workflow %d: %v", target.ID(), err)
	}
	out := make([]ErrorRecord, 0, len(recs))
	for _, r := range recs {
		out = append(out, ErrorRecord{Step: r.Step, Attempt: r.Attempt, Type: r.Type, Message: r.Message, At: r.CreatedAt})
	}
	return out
}

// Children returns the child workflows of all the workflow's branches (Spawn, SpawnEach and
// Call), in the order they were created.
func (e *Env) Children(target sdk.Target) []sdk.Description {
	e.t.Helper()
	_, recs := e.load(target)
	var out []sdk.Description
	for _, r := range recs {
		if !strings.HasPrefix(r.Name, storage.BranchStepPrefix) {
			continue
		}
		for _, wf := range e.list(storage.ListFilter{ParentStepID: r.ID}) {
			out = append(out, e.Describe(sdk.WorkflowID(wf.ID)))
		}
	}
	slices.SortFunc(out, func(a, b sdk.Description) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// load returns the stored workflow and its step records.
func (e *Env) load(target sdk.Target) (storage.Workflow, []storage.Step) {
	e.t.Helper()
	wf, steps, err := e.store.Load(e.ctx(), target.ID())
	if err != nil {
		e.t.Fatalf("sdktest: load workflow %d: %v", target.ID(), err)
	}
	return wf, steps
}

// Result returns the outcome of the workflow h names without waiting: its output once it
// completed, or for a failed, cancelled or stalled one the *sdk.WorkflowError that
// h.Result returns (errors.Is matches sdk.ErrFailed, sdk.ErrCancelled or sdk.ErrStalled).
// It fails the test if the workflow is idle or running: Drain (or Advance) first.
func Result[Out any](e *Env, h *sdk.Handle[Out]) (Out, error) {
	e.t.Helper()
	d := e.Describe(h)
	if d.State == sdk.StateIdle || d.State == sdk.StateRunning {
		e.t.Fatalf("sdktest: Result: workflow %q key %q (id %d) is %s, not finished%s", d.Name, d.Key, d.ID, d.State, detail(d))
		var zero Out
		return zero, nil
	}
	// Finished or stalled: Result returns at its first read. The deadline only guards
	// against a store that changed under the test.
	ctx, cancel := context.WithTimeout(e.ctx(), time.Minute)
	defer cancel()
	return h.Result(ctx)
}
