// Package storage defines the contract between chronoforge and the databases that hold
// workflow progress: the Storage interface, its record types and its sentinel errors.
//
// A backend implements Storage; storagetest.Run proves that it keeps every promise written
// on the methods below. Each method is one unit of work: one round trip to a database server
// (or one transaction in an embedded store). No package under storage/ imports the SDK.
//
// # Two clocks
//
// Times are passed in by the caller (the engine's clock), so tests can move time: a
// request's Now decides when a workflow is due (RunAt <= Now) and is what the store records
// as created, updated and finished times. Leases are the exception. A lease's expiry is set
// and checked by the store's own clock (the database server's on the SQL backends, the
// process's in an embedded store), inside the statement or transaction that claims,
// heartbeats or writes under it, never by a time the caller passes. So a worker whose clock
// runs ahead cannot take a live lease, and one whose clock runs behind cannot write under an
// expired one: clock skew between workers shifts when timers fire and how soon an
// abandoned workflow is taken over, never who may run it.
//
// # Times
//
// Every backend keeps times to the microsecond at least (digits below a microsecond may be
// dropped, so callers and the suite use microsecond times) and returns every time in UTC, the
// zero time meaning unset. A time passed in is stored as the same instant whatever its
// location.
//
// # Records as input
//
// The record types serve as input and output. As input, the store assigns what is its own
// and ignores what the caller sent for it:
//   - Step (in Commit.Steps, SpawnRequest.Steps, RetryRequest.Steps): written by workflow and
//     Name, inserting or replacing the record of that name. ID and WorkflowID are ignored (the
//     store assigns the ID when the record is first inserted and keeps it on every replace;
//     the workflow is the lease's or the request's). CreatedAt is the given one, or the
//     request's Now when zero, on insert, and the stored one on replace. UpdatedAt is always
//     the request's Now. CompletedAt is the given one when set; otherwise, for a completed
//     step, the earlier of the stored CompletedAt and Now (so replacing a completed record
//     keeps when it completed), and unset for any other state. All other fields replace the
//     stored ones as given.
//   - ErrorRecord (in Commit.Errors): appended. ID and WorkflowID are ignored (assigned, and
//     the lease's workflow); CreatedAt zero means the request's Now. The workflow's LastError
//     becomes the last record's Message.
//   - NewWorkflow: see CreateWorkflow and SpawnBatch; a SpawnRequest's children take
//     ParentStepID from the branch step.
//
// # Wakes during a run
//
// A Wake of a running workflow cannot move RunAt (RunAt belongs to the run's lease while it
// runs), so the store keeps the earliest such wake time with the workflow, invisible in
// Workflow, until the run ends: Claim drops a kept wake due by its Now (the run it starts
// covers it) and keeps a later one; FinishRun to idle makes RunAt the earlier of its own and
// the kept wake; every other end (a final or stalled state, Release, which makes the workflow
// runnable at once, Cancel) drops it. The WakeDuringRun cases of storagetest check this.
//
// # Errors
//
// Writes under a lease report, in this order: ErrCancelled when the workflow was cancelled,
// ErrLeaseLost when another lease superseded it, it was released, or it expired by the
// store's clock (Fence decides and words it; use it). A lease its own holder ended (its run
// finished or released it) also matches ErrLeaseReleased, so a heartbeat racing its run's
// final write can tell that nothing was lost. A method given an unknown workflow ID
// returns ErrNotFound (ListErrors included: no records for an unknown workflow is
// ErrNotFound, an empty list means a workflow without errors).
//
// A backend retries transient failures itself, inside the method, where running the unit
// again is safe: serialization failures, deadlocks, lock wait timeouts, and connections lost
// before a statement was sent or before a transaction committed. It returns any other error,
// including a write whose connection broke after it was sent, whose outcome is unknown; the
// caller treats a returned error as "may or may not have happened", which the units'
// idempotence (by name and key, by step name) and fencing make safe to run again.
//
// After Close, every method returns an error wrapping ErrClosed and writes nothing; a
// second Close returns nil. A method whose ctx is done returns an error wrapping ctx's error
// and, if it had not committed, writes nothing. Checks come in this order: input (the
// Validate functions), then ctx and Close, then the unit itself. An ID that is zero or
// negative, or a name or key that is not valid, names no stored workflow: lookups by it
// return ErrNotFound.
//
// UpdatedAt is the Now of the last write that changed the workflow (CreateWorkflow and
// CreateWorkflows, Claim, SaveSteps, ConsumeMessage, FinishRun, Release, Retry, Cancel, and
// SpawnBatch for the parent; SendMessage, like Wake, carries a Now for the message only). Heartbeat
// only extends the lease and leaves it, and Wake and WakeMergeWaiters carry no Now.
//
// # Identities
//
// Workflow, step and error record IDs are positive, unique within the store (step IDs
// across all workflows, so a bare step ID names one branch step), and increase in the order
// the records were first inserted. A workflow created by CreateWorkflow with a ParentStepID
// counts as a child of that step everywhere children count (CountChildren, WakeMergeWaiters,
// ListFilter.ParentStepID, SpawnBatch's own-branch rule), exactly like a spawned one.
//
// # Flow control
//
// A workflow created with a Flow key (NewWorkflow.Flow) is governed by the Flow stored under
// that key: a workflow name's own key, or a group several names share. The key is fixed when
// the workflow is created (a branch child takes it from its definition, like its name); the
// Flow's numbers are stored, so every worker and process sees the same ones and an operator
// can change them while workflows run (PutFlow). A key with no stored Flow governs nothing:
// its workflows run with priority 0 and no limits.
//
// Claim enforces a Flow inside its one statement or transaction:
//   - Priority orders a claim: among due workflows, those of a higher priority are claimed
//     first (a workflow without a flow has priority 0), then by RunAt, then by ID.
//   - Concurrency: a claim never leaves more than Concurrency workflows of the flow running
//     with a live lease (by the store's clock), counting every running workflow of the key,
//     whoever claimed it and whenever the limit was set. A run stops counting when it ends
//     (FinishRun, FinishRuns, Release, Cancel) or its lease expires, so a dead worker's runs
//     stop counting once their leases expire.
//   - Rate: at most Rate workflows of the flow are claimed in any window of length Per by
//     the store's clock (a sliding window: a claim counts for Per after it was made).
//
// Both hold exactly across any number of concurrent claims in any number of processes. A
// workflow its flow holds back stays due and holds back nothing else: a claim of Limit n
// still returns up to n workflows of other flows or of none, and its cost does not grow
// with the held-back backlog (a backend keeps flow-governed runnable rows apart from the
// others, by key). Zero means no limit; lowering a limit below the running count stops new
// claims of the key until enough runs end.
//
// Stores that implement FlowController honour NewWorkflow.Flow; the SDK sets it only on
// them. The FlowControl cases of storagetest check all of the above.
package storage

import (
	"context"
	"time"
)

// Storage is the durable home of workflows, their steps and their error records.
//
// Implementations must be safe for concurrent use by many goroutines and, for server
// databases, by many processes. Every method validates its input first and, when it is bad,
// returns an error wrapping ErrInvalid (or ErrTooLarge) and writes nothing. The checks are
// the Validate functions of this package, so every backend refuses the same input: among
// them, a time passed in must be zero where zero means "none", or within MinTime..MaxTime.
//
// "The store's clock" below is the clock a lease's expiry is kept by (see the package doc):
// a lease is live while the store's clock is before its LeaseUntil and expired from that
// instant on, whatever Now a request carries.
type Storage interface {
	// CreateWorkflow stores a new idle workflow runnable at w.RunAt, or, if a workflow with
	// the same name and key exists, returns that one unchanged with created == false (the
	// stored input wins). It is atomic: concurrent calls for one name and key create one row.
	CreateWorkflow(ctx context.Context, w NewWorkflow) (wf Workflow, created bool, err error)

	// CreateWorkflows is CreateWorkflow for a batch (ValidateCreateBatch: 1..MaxCreateBatch
	// workflows, no name and key twice) in one statement or transaction, never one per
	// workflow: each workflow of ws is created, or, when its name and key exist, returned
	// unchanged. out and created follow the order of ws. It is all or nothing: an error
	// means none was created (unless it came after the commit: a lost reply).
	CreateWorkflows(ctx context.Context, ws []NewWorkflow) (out []Workflow, created []bool, err error)

	// GetWorkflow returns the workflow with the given id, or ErrNotFound.
	GetWorkflow(ctx context.Context, id int64) (Workflow, error)

	// FindWorkflow returns the workflow with the given name and key, or ErrNotFound.
	FindWorkflow(ctx context.Context, name, key string) (Workflow, error)

	// Load returns the workflow and all its step records, ordered by step ID, in one round
	// trip however many steps it has. It returns ErrNotFound for an unknown id.
	Load(ctx context.Context, id int64) (Workflow, []Step, error)

	// Claim takes up to r.Limit runnable workflows and returns them leased to r.Owner.
	// A workflow is runnable when it is idle, or running with a lease expired by the store's
	// clock (LeaseUntil at or before it), and its RunAt is set and RunAt <= r.Now (due by the
	// caller's clock). Claimed rows are returned in RunAt order with state running, a lease
	// until the store's clock plus r.TTL, RunAt = r.Now+r.TTL (so the row leaves the runnable
	// range for the caller's clock and comes back by itself) and a LeaseToken greater than
	// any before it. Among equal RunAt, lower IDs come first; a name given twice in r.Names
	// counts once. On a FlowController store, a higher flow priority comes before RunAt, and
	// a flow's limits hold back its workflows (see "Flow control" in the package doc). Every other field is returned as stored: in particular Wait keeps the
	// wait of the workflow's last suspension (the SDK reads a merge wait from the claimed
	// row), and UpdatedAt becomes r.Now. It is one statement or transaction per call, reading
	// the store's clock inside it, and concurrent claims never return the same workflow twice
	// while its lease is live, whatever Now they carry.
	Claim(ctx context.Context, r ClaimRequest) ([]Workflow, error)

	// Heartbeat extends a held lease: LeaseUntil becomes the store's clock plus ttl (a
	// shorter ttl than the lease has left shortens it) and RunAt becomes now+ttl, in one
	// statement or transaction fenced like SaveSteps. It returns ErrLeaseLost if the token no
	// longer matches or the lease has expired by the store's clock, and ErrCancelled if the
	// workflow was cancelled meanwhile.
	Heartbeat(ctx context.Context, l Lease, ttl time.Duration, now time.Time) error

	// SaveSteps writes c (step records, durable values, error records) in one transaction,
	// fenced by the lease: it returns ErrLeaseLost or ErrCancelled and writes nothing unless
	// the lease is still the workflow's current lease, live by the store's clock (c.Now plays
	// no part in the fence), and the workflow is running. Every fenced write (Heartbeat,
	// SaveSteps, FinishRun, Release, SpawnBatch) refuses with the error Fence returns, so the
	// message says why: a superseded lease names the current holder, an expired one says so.
	SaveSteps(ctx context.Context, l Lease, c Commit) error

	// FinishRun ends a run in one transaction, fenced like SaveSteps: it writes the commit,
	// sets state, output, attempt, wait and next RunAt, and releases the lease (LeaseUntil
	// zeroed; LeaseOwner and LeaseToken stay as the record of the last lease). A wake that
	// arrived during the run (see Wake) makes RunAt the earlier of f.RunAt and the wake time.
	// For stalled and final states RunAt is cleared whatever f.RunAt says; final states also
	// get FinishedAt = f.Now (stalled does not: it is not final). UpdatedAt becomes f.Now.
	FinishRun(ctx context.Context, l Lease, f Finish) error

	// Release gives a lease back without changing the workflow's progress: the workflow
	// becomes idle with RunAt = now (runnable at once), LeaseUntil zeroed, Wait and
	// everything else kept. Used when a worker shuts down mid-run. It returns ErrLeaseLost or
	// ErrCancelled like SaveSteps.
	Release(ctx context.Context, l Lease, now time.Time) error

	// Wake makes a waiting workflow runnable no later than at: RunAt becomes the earlier of
	// RunAt and at (wake-ups coalesce). If the workflow is running, the wake is remembered and
	// applied when the run finishes. It reports true for an idle or running workflow (even
	// when RunAt was already earlier) and false, changing nothing, for a final or stalled one;
	// ErrNotFound for an unknown id. It carries no Now, so UpdatedAt is left alone.
	Wake(ctx context.Context, id int64, at time.Time) (bool, error)

	// SendMessage appends a message to a workflow's mailbox, in one statement or
	// transaction. A message with a Key the workflow already holds is not stored again: the
	// stored one is returned with created == false (even after it was consumed, and even
	// once the workflow is final). Otherwise it returns ErrNotFound for an unknown workflow
	// and ErrWrongState, storing nothing, for a final one (completed, failed, cancelled); a
	// stalled workflow keeps the message for when it is retried.
	//
	// A stored message wakes the workflow as Wake would at m.Now when it is idle and waiting
	// for a message on m.Topic (Wait.Kind WaitMessage, Wait.Data the topic) or running (the
	// wake is remembered, so a run that looked at the mailbox just before still suspends no
	// later than m.Now); other workflows are left alone. On a Notifier store a wake that makes
	// the workflow runnable at once is announced.
	SendMessage(ctx context.Context, m NewMessage) (msg Message, created bool, err error)

	// ConsumeMessage takes the next message of the leased workflow's mailbox on r.Topic (the
	// unconsumed one with the lowest ID), in one transaction fenced like SaveSteps: it writes
	// r.Commit as SaveSteps would, and, if a message was waiting, marks it consumed by r.Step
	// at r.Now and upserts the step record r.Step as completed (Attempts 1, Result the
	// message's payload, Meta and LastError empty) in the same transaction, then returns it
	// with ok == true. With no message waiting it writes the commit alone and returns
	// ok == false. A message is consumed at most once: the step record and the mark commit
	// together or not at all.
	ConsumeMessage(ctx context.Context, l Lease, r ConsumeRequest) (msg Message, ok bool, err error)

	// Retry moves a stalled or failed workflow back to idle, runnable at r.Now, resets its
	// workflow-level attempt count, clears Wait and FinishedAt (LastError and Output stay)
	// and writes r.Steps, in one transaction. It returns ErrWrongState for any other state
	// (so of two concurrent retries one wins).
	Retry(ctx context.Context, id int64, r RetryRequest) (Workflow, error)

	// Cancel marks a workflow that is not final as cancelled: RunAt, Wait and LeaseUntil are
	// cleared (owner and token stay), FinishedAt and UpdatedAt become now. A run in progress
	// loses its lease's write rights (writes return ErrCancelled). It returns ErrWrongState if
	// the workflow is already final.
	Cancel(ctx context.Context, id int64, now time.Time) error

	// CancelChildren cancels up to r.Limit children of the branch steps r.StepIDs that are
	// not final (idle, running or stalled), each as Cancel cancels one workflow: state
	// cancelled, RunAt, wait and a remembered wake cleared, FinishedAt set to r.Now, and a run
	// in progress loses its lease's write rights (its writes return ErrCancelled). Completed,
	// failed and cancelled children are left alone. A child that a worker is claiming, writing
	// or finishing meanwhile is waited for, never skipped: it ends cancelled unless it reached
	// a final state first. The children of one call are cancelled in one transaction, all or
	// none, with a fixed number of statements, never one per child.
	//
	// The result names the children cancelled (IDs, in ID order) and their own branch steps
	// (step records named with BranchStepPrefix, in ID order) as they stand once the children
	// are cancelled: a branch step a child recorded just before is among them, and none can
	// follow. Passing those step IDs to the next call cancels the grandchildren, so a tree is
	// cancelled level by level without loading any child. More reports that the call found
	// r.Limit unfinished children: call again with the same step IDs until it is false; then
	// none of the steps has an unfinished child left (a cancelled parent spawns no more; a
	// child moved back from failed by a concurrent Retry may be missed). An error means no
	// child of the call was cancelled, unless it came after the commit (a lost reply, or a
	// read of branch steps a backend makes after it): then the caller learns neither.
	//
	// Its cost is bounded by r.Limit (at most MaxCancelChildren) and the number of step IDs
	// (at most MaxCancelSteps), not by the number of children: one probe per step and
	// unfinished state of the index on parent step and state, stopping when r.Limit children
	// are found (on MVCC databases, index entries of children cancelled by earlier calls and
	// not yet vacuumed may be stepped over), one write per cancelled child and one read of
	// each cancelled child's step records.
	CancelChildren(ctx context.Context, r CancelChildrenRequest) (CancelChildrenResult, error)

	// SpawnBatch writes one batch of a branch's children in one transaction fenced by the
	// parent's lease (like SaveSteps): it upserts r.Steps, then inserts every child of
	// r.Children that does not exist yet (insert-or-ignore on name and key), runnable at once
	// and linked to the branch step. It is a fixed number of statements per batch, never one
	// per child. Refusals come in this order: bad input (ErrInvalid, ErrTooLarge), the
	// fence (ErrCancelled, ErrLeaseLost), a branch step neither in r.Steps nor stored
	// (ErrInvalid), then conflicts (below); each writes nothing.
	//
	// A child whose name and key are stored already is left as it is when it is a child of
	// this same branch step: applying the same batch twice leaves the children as the first
	// application made them, and the second inserts none. When they are held by a workflow
	// with any other ParentStepID (another branch's child, or a root workflow: 0), the whole
	// batch is refused: nothing of it is written (no child, no step record, the cursor stays
	// where it was), and the error wraps a *ConflictError (matching ErrConflict) that names
	// the existing workflow (ID, name, key, parent step) and the branch step. This holds
	// against concurrent transactions too: a key another transaction commits while the batch
	// runs is a conflict, never a silent skip.
	//
	// Keys are unique by name and key, so a workflow of another name with a child's key is a
	// different workflow and no conflict; the store does not look for one. The SDK never
	// sends one key under two names for one branch step: each key belongs to one Spawn or to
	// one item of one SpawnEach, and the batch that first writes it also advances that
	// spawn's cursor past it, so no later batch carries it again.
	SpawnBatch(ctx context.Context, l Lease, r SpawnRequest) (SpawnResult, error)

	// CountChildren counts the children of q.StepIDs whose state is in q.States, stopping at
	// q.Cap: its cost is bounded by the cap (an index on parent step and state), not by the
	// number of children. A step ID or state given twice counts once.
	CountChildren(ctx context.Context, q ChildQuery) (int, error)

	// WakeMergeWaiters wakes the parents of drained branches. For each step of r.StepIDs that
	// has no child in r.States, the workflow owning the step is woken as Wake would wake it at
	// r.At, if it is idle and waiting on a merge (Wait.Kind WaitMerge) or running: an idle one's
	// RunAt becomes the earlier of RunAt and r.At; a running one remembers the wake for
	// FinishRun, so a run that counted the children just before the last one finished still
	// suspends no later than r.At. Owners in any other state or wait, and unknown steps, are
	// left alone. It returns how many workflows it woke.
	//
	// The check stops at the first child found per step and state (the index on parent step
	// and state), so the cost grows with the number of step IDs (at most MaxMergeWake), not
	// with the number of live children (on MVCC databases, index entries of old child versions
	// not yet vacuumed may still be stepped over), and no row is written per child. It is one
	// statement or transaction per call (on backends without UPDATE ... RETURNING, a fixed
	// number of statements; an embedded store may read first and write only when it wakes
	// something). Call it after the children's final writes committed: of children
	// finishing at once, the last to commit then finds no sibling left in r.States. Step IDs should name branch steps
	// (SpawnResult.BranchStepID): for any other step a backend may do nothing or wake its
	// workflow as if it were a branch without children, which a merge wait tolerates.
	WakeMergeWaiters(ctx context.Context, r MergeWakeRequest) (woken int, err error)

	// ListWorkflows returns one page of workflows matching f, in ID order. A filter on tags
	// may scan (no index is required for it); every other filter uses one.
	ListWorkflows(ctx context.Context, f ListFilter) ([]Workflow, error)

	// ListErrors returns the error records of a workflow in the order they were written (ID
	// order; their CreatedAt, which callers may set, is not the order), at most limit (0 or
	// less means DefaultErrorsLimit, 100), in one round trip. It returns ErrNotFound for an
	// unknown workflow.
	ListErrors(ctx context.Context, workflowID int64, limit int) ([]ErrorRecord, error)

	// DeleteFinished deletes up to r.Limit final workflows in r.States (every final state when
	// empty) whose FinishedAt is before r.Before, earliest FinishedAt first, with their steps
	// and error records. It never deletes an idle, running or stalled workflow, however old.
	//
	// Cost is bounded by a step budget: one call deletes at most r.StepBudget step rows (0
	// means DefaultCleanupSteps, 1,000) besides the selected workflow rows and their error
	// records. It deletes steps of the selected workflows first, then those selected
	// workflows that have no step left; a workflow whose steps did not fit stays, with part of
	// its steps gone, and the result reports More, so the next call resumes it (a final
	// workflow being cleaned may thus be read with some steps missing, and a failed one
	// retried between those calls may run again steps whose records went). Every call that
	// reports More has deleted StepBudget step rows, so repeated calls always progress: a
	// workflow with 10,000 steps, alone in its batch, is gone after ceil(10,000 / StepBudget)
	// calls. Error records are not counted against the budget.
	//
	// The messages of a deleted workflow are deleted with it, like its error records and not
	// counted against the budget.
	//
	// The call is one atomic unit (one transaction); it returns the workflows and step rows
	// it deleted. Rows another cleanup holds may be skipped, so concurrent cleanups share the
	// work. Children of a deleted workflow are not deleted with it (they are deleted by their
	// own FinishedAt) and keep running; their ParentStepID then names a step that is gone.
	DeleteFinished(ctx context.Context, r CleanupRequest) (CleanupResult, error)

	// Close releases the store's resources. Stores built over a pool the application owns
	// leave that pool open. Every later call returns an error wrapping ErrClosed; a second
	// Close returns nil.
	Close() error
}

// Notifier is implemented by stores that can push wake-ups between processes (Postgres
// LISTEN/NOTIFY). Workers listen in addition to polling, so work started or signalled by
// another process is picked up at once rather than at the next poll. Stores without it are
// polled only.
type Notifier interface {
	// Listen returns a channel that receives a value, coalesced, whenever a workflow may have
	// become runnable at once in any process, this one included: created or spawned, woken,
	// retried, released, or finished to idle with a RunAt already due. Sends never block the
	// store. The channel is closed when ctx ends, the store is closed, or the listener fails
	// for good; a listener that loses its connection reconnects by itself.
	Listen(ctx context.Context) (<-chan struct{}, error)
}

// GroupFinisher is implemented by stores that can end many runs in one transaction (group
// commit). A worker whose runs finish close together hands their final writes over together,
// so one round trip and one commit serve them all; the SDK uses it when the store has it and
// calls FinishRun for a run that ends alone.
type GroupFinisher interface {
	// FinishRuns ends the runs of ends in one transaction (one round trip where the database
	// allows it), each exactly as FinishRun would end it, fenced by its own lease: errs has
	// one entry per end, nil for an end that was written and, for one that was refused, the
	// error FinishRun would have returned (bad input, ErrCancelled, ErrLeaseLost). A refused
	// end writes nothing and does not affect the others; two ends must not name one workflow
	// (ErrInvalid for the whole call). err reports a failure of the whole call (its context,
	// Close, a connection lost): then errs is nil and, as for any write, the ends may or may
	// not have been written.
	FinishRuns(ctx context.Context, ends []RunEnd) (errs []error, err error)
}

// RunEnd is one run's final write in a FinishRuns call: the lease it holds and the finish.
type RunEnd struct {
	Lease  Lease
	Finish Finish
}

// FinishAll ends the runs of ends on s: with one FinishRuns call when s is a GroupFinisher,
// else with one FinishRun per end (for wrappers of stores of either kind).
func FinishAll(ctx context.Context, s Storage, ends []RunEnd) ([]error, error) {
	if g, ok := s.(GroupFinisher); ok {
		return g.FinishRuns(ctx, ends)
	}
	if err := ValidateRunEnds(ends); err != nil {
		return nil, err
	}
	errs := make([]error, len(ends))
	for i, e := range ends {
		errs[i] = s.FinishRun(ctx, e.Lease, e.Finish)
	}
	return errs, nil
}
