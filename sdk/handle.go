package sdk

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Handle refers to one stored workflow whose output is of type Out.
type Handle[Out any] struct {
	eng  *Engine
	id   int64
	name string
	key  string
}

// ID returns the workflow's storage id.
func (h *Handle[Out]) ID() int64 { return h.id }

// Name returns the workflow's name.
func (h *Handle[Out]) Name() string { return h.name }

// Key returns the workflow's key.
func (h *Handle[Out]) Key() string { return h.key }

// newHandle returns a handle to the stored workflow w.
func newHandle[Out any](e *Engine, w storage.Workflow) *Handle[Out] {
	return &Handle[Out]{eng: e, id: w.ID, name: w.Name, key: w.Key}
}

// Workflow returns the stored workflow row as it is now, for workers and tooling; everyday
// code uses Describe, which speaks the SDK's own types.
func (h *Handle[Out]) Workflow(ctx context.Context) (storage.Workflow, error) {
	return h.eng.store.GetWorkflow(ctx, h.id)
}

// Describe returns the workflow as it stands; see Engine.Describe.
func (h *Handle[Out]) Describe(ctx context.Context) (Description, error) {
	return h.eng.Describe(ctx, h.id)
}

// Result waits until the workflow completes and returns its typed output. If the workflow
// ends failed or cancelled, or stalls, it returns a *WorkflowError carrying that state (match
// it with errors.Is against ErrFailed, ErrCancelled or ErrStalled). It returns ctx's error
// if ctx ends first. Waiting reacts at once to changes this engine makes to this workflow
// (a run by one of its workers ends, a signal, retry or cancel), and nothing else wakes it,
// so many waiters cost one read each per change of their own workflow; for changes made by
// other processes it polls the store, from 10 ms up to 1 s apart by default (real time; see
// WithResultPoll).
func (h *Handle[Out]) Result(ctx context.Context) (Out, error) {
	var zero Out
	poll := h.eng.pollMin
	next, leave := h.eng.watch(h.id)
	defer leave()
	for {
		changed := next()
		wf, err := h.eng.store.GetWorkflow(ctx, h.id)
		if err != nil {
			return zero, fmt.Errorf("result of workflow %q key %q: %w", h.name, h.key, err)
		}
		switch wf.State {
		case storage.StateCompleted:
			var out Out
			if err := h.eng.codec.Unmarshal(wf.Output, &out); err != nil {
				return zero, fmt.Errorf("%w: workflow %q key %q output into %s: %v", ErrDecode, h.name, h.key, reflect.TypeFor[Out](), err)
			}
			return out, nil
		case storage.StateFailed, storage.StateCancelled, storage.StateStalled:
			return zero, &WorkflowError{ID: wf.ID, Name: wf.Name, Key: wf.Key, State: State(wf.State), Message: wf.LastError}
		}
		timer := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return zero, ctx.Err()
		case <-changed:
		case <-timer.C:
			poll = min(2*poll, h.eng.pollMax)
		}
		timer.Stop()
	}
}

// Signal wakes the workflow; see Engine.Signal.
func (h *Handle[Out]) Signal(ctx context.Context) error { return h.eng.Signal(ctx, h.id) }

// Cancel cancels the workflow; see Engine.Cancel.
func (h *Handle[Out]) Cancel(ctx context.Context, opts ...CancelOption) error {
	return h.eng.Cancel(ctx, h.id, opts...)
}

// Retry retries a stalled or failed workflow; see Engine.Retry.
func (h *Handle[Out]) Retry(ctx context.Context) error { return h.eng.Retry(ctx, h.id) }
