package storage

import (
	"time"
)

// State is the lifecycle state of a workflow.
type State string

// Workflow states. Completed, Failed and Cancelled are final; Stalled waits for an operator.
const (
	// StateIdle: not running; runnable when RunAt is set and due, otherwise waiting for a wake.
	StateIdle State = "idle"
	// StateRunning: a worker holds (or held, if the lease expired) a lease on it.
	StateRunning State = "running"
	// StateCompleted: the workflow function returned a result.
	StateCompleted State = "completed"
	// StateFailed: the workflow function failed and its workflow-level retries are spent.
	StateFailed State = "failed"
	// StateStalled: a step's retries are spent or a wait timed out; an operator may retry it.
	StateStalled State = "stalled"
	// StateCancelled: cancelled by Cancel; nothing more is committed for it.
	StateCancelled State = "cancelled"
)

// Final reports whether s is a state no run leaves by itself (completed, failed, cancelled).
func (s State) Final() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	switch s {
	case StateIdle, StateRunning, StateCompleted, StateFailed, StateStalled, StateCancelled:
		return true
	}
	return false
}

// StepState is the state of one step record.
type StepState string

// Step states.
const (
	// StepPending: recorded but not finished (a wait in progress, or a step between retries).
	StepPending StepState = "pending"
	// StepCompleted: finished; its Result is final and replay returns it.
	StepCompleted StepState = "completed"
	// StepFailed: its retries are spent; the workflow is stalled on it.
	StepFailed StepState = "failed"
)

// Valid reports whether s is one of the defined step states.
func (s StepState) Valid() bool {
	return s == StepPending || s == StepCompleted || s == StepFailed
}

// WaitKind says what an idle workflow waits for. A store keeps it as given (at most
// MaxNameLen bytes) and returns it on every read. Only WaitMerge drives behaviour: the store's
// WakeMergeWaiters wakes only workflows waiting on it, and the SDK probes such a workflow
// without replaying it. The other kinds are informational, for operators and tooling: when
// a workflow runs again depends on RunAt and Wake alone.
type WaitKind string

// Wait kinds the SDK writes.
const (
	// WaitNone: no wait recorded. A workflow keeps the Wait of its last suspension while it
	// runs (Claim leaves it; FinishRun replaces it); Cancel and Retry clear it.
	WaitNone WaitKind = ""
	// WaitSleep: a Sleep until RunAt.
	WaitSleep WaitKind = "sleep"
	// WaitUntil: a WaitUntil condition, checked again at RunAt or on a wake.
	WaitUntil WaitKind = "until"
	// WaitSignal: a ContinueIf condition, checked again only on a wake (RunAt unset).
	WaitSignal WaitKind = "signal"
	// WaitRetry: a step or the workflow function between retries, until RunAt.
	WaitRetry WaitKind = "retry"
	// WaitRepeat: a Repeat until its next tick at RunAt.
	WaitRepeat WaitKind = "repeat"
	// WaitMerge: a merge of branches; Data holds the probe's state. Read by WakeMergeWaiters.
	WaitMerge WaitKind = "merge"
	// WaitMessage: a receive of the next message on a topic; Data holds the topic (its bytes,
	// as given). Read by SendMessage, which wakes such a workflow when a message arrives on
	// that topic.
	WaitMessage WaitKind = "message"
)

// Wait describes what an idle workflow waits for: a timer needs only RunAt, a signal wait has
// no RunAt and is woken by Wake, and a merge wait is woken by WakeMergeWaiters or its probe.
type Wait struct {
	// Kind is what it waits for; WaitNone means nothing.
	Kind WaitKind `json:"kind,omitempty"`
	// Step is the name of the step record the wait belongs to.
	Step string `json:"step,omitempty"`
	// Data is opaque to the store (at most MaxMeta bytes): a merge wait keeps the branch step
	// IDs and its probe's drain-rate bookkeeping here, so a worker can probe it without
	// replaying the workflow.
	Data []byte `json:"data,omitempty"`
}

// Workflow is one stored workflow: the queue entry and its state in one row.
type Workflow struct {
	ID    int64
	Name  string
	Key   string
	Input []byte
	// Output is the encoded result once the workflow completed.
	Output []byte
	State  State
	// Values is the JSON object of durable values, or nil when none were set.
	Values []byte
	// RunAt is when the workflow becomes runnable, by the caller's clock; zero means never by
	// itself (it waits for a wake, is final or stalled). While leased it is the Now of the
	// claim or last heartbeat plus its TTL, so a claimed row leaves the runnable range and
	// returns by itself. It is not LeaseUntil, which the store's clock keeps: a leased row
	// that is due again is claimable only once its lease has expired too.
	RunAt time.Time
	Wait  Wait
	// LeaseOwner, LeaseUntil and LeaseToken describe the last lease taken on the workflow.
	// LeaseUntil is by the store's clock (see the package doc) and zero once the lease was
	// released. LeaseToken is 0 for a workflow never claimed and grows by one with every
	// claim, which is what fences stale writers. So a claim that returns token 1 is the
	// workflow's first: it has no step records, values or error records (they are written
	// only under a lease, or by Retry of a workflow that ran), and the SDK runs it from the
	// claimed row without loading it.
	LeaseOwner string
	LeaseUntil time.Time
	LeaseToken int64
	// Attempt counts failed runs of the workflow function (workflow-level retries).
	Attempt int
	// ParentStepID links a branch child to the branch step that spawned it; 0 for roots.
	ParentStepID int64
	// TraceContext carries the propagated trace context of the creator (W3C headers, JSON).
	TraceContext []byte
	// Tags is the small string metadata given when the workflow was created (see
	// ValidateTags), nil when none. Tags never change after creation.
	Tags map[string]string
	// LastError is the message of the most recent error record, for listings.
	LastError string
	// Flow is the flow key the workflow was created with (empty: none); it never changes.
	Flow      string
	CreatedAt time.Time
	UpdatedAt time.Time
	// FinishedAt is set when the workflow reaches a final state.
	FinishedAt time.Time
}

// Lease returns the lease the workflow currently carries.
func (w *Workflow) Lease() Lease {
	return Lease{WorkflowID: w.ID, Owner: w.LeaseOwner, Token: w.LeaseToken, Until: w.LeaseUntil}
}

// Lease is a worker's exclusive, expiring right to run one workflow. Every write made under a
// lease succeeds only while the stored token still equals Token, the stored lease has not
// expired by the store's clock (it is before the stored LeaseUntil, which heartbeats move)
// and the workflow is still running. From the instant the store's clock reaches LeaseUntil
// the lease is expired and the workflow claimable. The Now of a request plays no part.
type Lease struct {
	WorkflowID int64
	Owner      string
	Token      int64
	// Until is the expiry the store gave the lease when it was claimed, by the store's clock.
	// It is informational: heartbeats move the stored expiry, and only the stored one counts.
	Until time.Time
}

// Step is one step record of a workflow, found by its name.
type Step struct {
	WorkflowID int64
	// ID is assigned by the store and stable for the life of the record.
	ID    int64
	Name  string
	State StepState
	// Attempts counts executions of the step's function (or evaluations of a wait).
	Attempts int
	// Result is the encoded result of a completed step.
	Result []byte
	// Meta is opaque to the store: retry budgets, wake times, cursors.
	Meta      []byte
	LastError string
	CreatedAt time.Time
	UpdatedAt time.Time
	// CompletedAt is set when the step completed.
	CompletedAt time.Time
}

// ErrorRecord records one failure: of a step attempt, a wait, or a run of the workflow.
type ErrorRecord struct {
	ID         int64
	WorkflowID int64
	// Step is the step name, or empty for a failure of the workflow function itself.
	Step    string
	Attempt int
	// Type is the Go type of the error, for grouping.
	Type    string
	Message string
	// Values is a bounded snapshot of the durable values when the error happened.
	Values    []byte
	CreatedAt time.Time
}

// NewWorkflow is the input of CreateWorkflow.
type NewWorkflow struct {
	Name         string
	Key          string
	Input        []byte
	TraceContext []byte
	// Tags are stored with the workflow as given (nil or empty: none); see ValidateTags.
	Tags map[string]string
	// ParentStepID links a child to its branch step. CreateWorkflow stores it as given;
	// SpawnBatch sets it to the branch step's ID.
	ParentStepID int64
	// RunAt is when the new workflow first becomes runnable; zero means Now.
	RunAt time.Time
	Now   time.Time
	// Flow is the key of the flow that governs the workflow (see "Flow control" in the
	// package doc), or empty for none. Only a FlowController store honours it.
	Flow string
}

// ClaimRequest is the input of Claim.
type ClaimRequest struct {
	// Owner names the worker; it is stored as the lease owner.
	Owner string
	// Limit is the most workflows to claim; at least 1.
	Limit int
	// Names restricts the claim to workflows with these names; empty claims any name.
	Names []string
	// TTL is the lease length, at most MaxLeaseTTL: the lease expires TTL after the claim by
	// the store's clock, and the claimed row is due again at Now+TTL by the caller's.
	TTL time.Duration
	// Now is the caller's time: a workflow is due when RunAt <= Now. It does not decide
	// whether a lease has expired; the store's clock does.
	Now time.Time
}

// Commit is what a run writes under its lease while it goes on: step records to insert or
// replace (by workflow and name), the durable values, and error records.
type Commit struct {
	Steps []Step
	// Values replaces the stored durable values when non-nil (an empty non-nil Values is
	// stored as given); nil leaves them.
	Values []byte
	Errors []ErrorRecord
	Now    time.Time
}

// Finish is what a run writes when it ends: everything a Commit carries plus the workflow's
// new state, output, next run time and wait. The lease is released in the same transaction.
type Finish struct {
	Commit
	// State must be idle (suspended), completed, failed or stalled.
	State  State
	Output []byte
	// RunAt is when the workflow runs again; zero for none (a signal wait, or a final state).
	// A wake received while the run held its lease is kept: the stored RunAt becomes the
	// earlier of the two, so no wake-up is lost.
	RunAt   time.Time
	Wait    Wait
	Attempt int
}

// RetryRequest is the input of Retry.
type RetryRequest struct {
	// Steps are written in the same transaction: the retry record and the reset step.
	Steps []Step
	Now   time.Time
}

// ListFilter selects workflows for ListWorkflows. Zero fields select everything.
type ListFilter struct {
	Name   string
	States []State
	// NotNames excludes workflows with these names.
	NotNames []string
	// DueBy selects only workflows whose RunAt is set and at or before it.
	DueBy time.Time
	// ParentStepID selects the children of one branch step.
	ParentStepID int64
	// Tags selects workflows carrying every one of these tags with the same value (an empty
	// value matches a tag stored with the empty value, not a missing tag). At most MaxTags.
	Tags map[string]string
	// KeyPrefix selects workflows whose key starts with it (bytewise). It needs Name: the
	// index on name and key serves it.
	KeyPrefix string
	// AfterID and BeforeID page by keyset: only workflows with an ID greater than AfterID
	// and, when BeforeID is positive, less than BeforeID (a BeforeID of zero or less is no
	// bound, as IDs are positive).
	AfterID  int64
	BeforeID int64
	// Desc returns the page in descending ID order (newest first): the page holds the
	// highest IDs in range. Without it, the page holds the lowest, in ascending order. So a
	// listing newest first pages on with Desc and BeforeID = the page's last ID, and back
	// with AfterID = the page's first ID (ascending; reverse it to show).
	Desc bool
	// Limit is the page size; 0 or less means DefaultListLimit (100), and at most
	// MaxListLimit (1,000) are returned.
	Limit int
}

// CleanupRequest is the input of DeleteFinished.
type CleanupRequest struct {
	// Before: workflows that reached a final state before it are deleted with their steps and
	// error records.
	Before time.Time
	// States limits the call to these final states; empty means every final state
	// (completed, failed and cancelled). A non-final state is invalid (ValidateCleanup).
	States []State
	// Limit bounds the workflows deleted by one call; 0 means 1,000.
	Limit int
	// StepBudget bounds the step rows deleted by one call; 0 means DefaultCleanupSteps.
	StepBudget int
}

// CleanupResult is the outcome of DeleteFinished.
type CleanupResult struct {
	// Deleted is how many workflows the call deleted.
	Deleted int
	// Steps is how many step rows the call deleted (of deleted and of unfinished ones).
	Steps int
	// More reports that the step budget ran out: a selected workflow still holds steps and
	// was not deleted yet. Call again to resume it.
	More bool
}

// SpawnRequest is the input of SpawnBatch: one batch of a branch's children.
type SpawnRequest struct {
	// Branch names the step record (of the leased workflow) the children belong to. It is
	// either among Steps or already stored.
	Branch string
	// Steps are upserted first, like SaveSteps: the branch record and the spawn's cursor.
	Steps []Step
	// Children are inserted unless a workflow with the same name and key exists: a child of
	// the same branch step is then left as it is, any other workflow refuses the batch with
	// ErrConflict. Each new child is idle, runnable at its RunAt (zero: Now), and linked to
	// the branch step by ParentStepID (the field given here is ignored). A repeat of a name
	// and key within the batch is inserted once.
	Children []NewWorkflow
	Now      time.Time
}

// SpawnResult is the outcome of SpawnBatch.
type SpawnResult struct {
	// BranchStepID is the ID of the branch step record.
	BranchStepID int64
	// Inserted counts the children that did not exist before.
	Inserted int
}

// ChildQuery is the input of CountChildren.
type ChildQuery struct {
	// StepIDs are the branch steps whose children are counted.
	StepIDs []int64
	// States are the child states counted.
	States []State
	// Cap stops the count: the answer is at most Cap (1..MaxCountCap).
	Cap int
}
