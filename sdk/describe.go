package sdk

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// State is the lifecycle state of a workflow, as Describe, ChildResult and WorkflowError
// report it. Completed, failed and cancelled are final; stalled waits for an operator's Retry.
type State string

// Workflow states.
const (
	// StateIdle: waiting to run (due, or waiting for its time, a message, a signal or a merge).
	StateIdle State = State(storage.StateIdle)
	// StateRunning: a worker is running it (or its lease has expired and it waits for another).
	StateRunning State = State(storage.StateRunning)
	// StateCompleted: the workflow function returned a result.
	StateCompleted State = State(storage.StateCompleted)
	// StateFailed: the workflow function failed and its retries are spent.
	StateFailed State = State(storage.StateFailed)
	// StateStalled: a step's retries are spent or a wait timed out; Retry resumes it.
	StateStalled State = State(storage.StateStalled)
	// StateCancelled: cancelled; it never runs again.
	StateCancelled State = State(storage.StateCancelled)
)

// Final reports whether s is completed, failed or cancelled.
func (s State) Final() bool { return storage.State(s).Final() }

// Description is a workflow as it stands: what Describe returns.
type Description struct {
	ID   int64
	Name string
	Key  string
	// State is the lifecycle state; Final reports whether it can still change by itself.
	State State
	// Tags are the metadata given at start (nil when none).
	Tags map[string]string
	// Attempt counts failed runs of the workflow function (workflow-level retries).
	Attempt int
	// RunAt is when it runs next: zero while it waits for a message, a signal or a wake, and
	// once it is final or stalled.
	RunAt time.Time
	// Waiting says what an idle workflow waits for ("sleep", "until", "signal", "retry",
	// "repeat", "merge", "message"; empty for nothing) and WaitingOn the record it waits in.
	Waiting   string
	WaitingOn string
	// LeaseOwner and LeaseUntil name the worker running it and until when its lease holds
	// (by the database's clock); LeaseUntil is zero when no lease is held.
	LeaseOwner string
	LeaseUntil time.Time
	// Child reports a branch child (spawned by another workflow, or started by Call).
	Child bool
	// LastError is the message of the last error recorded.
	LastError  string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time
}

// describe turns a stored workflow into a Description.
func describe(w storage.Workflow) Description {
	return Description{
		ID: w.ID, Name: w.Name, Key: w.Key, State: State(w.State), Tags: maps.Clone(w.Tags),
		Attempt: w.Attempt, RunAt: w.RunAt, Waiting: string(w.Wait.Kind), WaitingOn: w.Wait.Step,
		LeaseOwner: w.LeaseOwner, LeaseUntil: w.LeaseUntil, Child: w.ParentStepID != 0,
		LastError: w.LastError, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, FinishedAt: w.FinishedAt,
	}
}

// Describe returns the workflow with the given id as it stands, or an error matching
// ErrNotFound. One storage call.
func (e *Engine) Describe(ctx context.Context, id int64) (Description, error) {
	w, err := e.store.GetWorkflow(ctx, id)
	if err != nil {
		return Description{}, fmt.Errorf("describe workflow %d: %w", id, err)
	}
	return describe(w), nil
}

// Filter selects workflows for List. Zero fields select everything.
type Filter struct {
	// Name selects one workflow name.
	Name string
	// States selects workflows in any of these states.
	States []State
	// Tags selects workflows carrying every one of these tags with the same value.
	Tags map[string]string
	// AfterID pages: only workflows with a greater ID (pass the last ID of a page).
	AfterID int64
	// Limit is the page size: 0 means 100, and at most 1,000 are returned.
	Limit int
}

// List returns one page of workflows matching f, in ID order: one storage call. A filter
// by tags alone may scan the store; combine it with Name or States on large stores.
func (e *Engine) List(ctx context.Context, f Filter) ([]Description, error) {
	lf := storage.ListFilter{Name: f.Name, Tags: f.Tags, AfterID: f.AfterID, Limit: f.Limit}
	for _, s := range f.States {
		lf.States = append(lf.States, storage.State(s))
	}
	page, err := e.store.ListWorkflows(ctx, lf)
	if err != nil {
		return nil, fmt.Errorf("list workflows: %w", err)
	}
	out := make([]Description, len(page))
	for i, w := range page {
		out[i] = describe(w)
	}
	return out, nil
}
