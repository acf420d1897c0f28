package telemetry

import "go.opentelemetry.io/otel/attribute"

// ScopeName is the instrumentation scope of chronoforge's tracer and meter.
const ScopeName = "github.com/chronoforge/chronoforge"

// Operations name the spans: a span is named "<operation> <target>" (SpanName), the target
// being a workflow, step or branch name, or the operation alone when there is none.
const (
	OpStart  = "start"
	OpSignal = "signal"
	OpRetry  = "retry"
	OpCancel = "cancel"
	OpSend   = "send"
	OpRun    = "run"
	OpStep   = "step"
	OpSpawn  = "spawn"
	OpProbe  = "probe"
	OpClaim  = "claim"
)

// SpanName is "<op> <target>", or op alone when target is empty.
func SpanName(op, target string) string {
	if target == "" {
		return op
	}
	return op + " " + target
}

// EventWait is the span event a wait adds to its run's span.
const EventWait = "chronoforge.wait"

// Attribute keys. Those marked "span only" identify one workflow and never label a metric.
const (
	// AttrWorkflowName is the registered workflow name.
	AttrWorkflowName = attribute.Key("chronoforge.workflow.name")
	// AttrWorkflowKey is the workflow's key (span only).
	AttrWorkflowKey = attribute.Key("chronoforge.workflow.key")
	// AttrWorkflowID is the workflow's storage ID (span only).
	AttrWorkflowID = attribute.Key("chronoforge.workflow.id")
	// AttrWorkflowCreated says whether a Start created the workflow (false: it existed).
	AttrWorkflowCreated = attribute.Key("chronoforge.workflow.created")
	// AttrWorkflowState is a workflow state (storage.State), as a metric label: the final state
	// of the end-to-end duration, the state of the queue depth.
	AttrWorkflowState = attribute.Key("chronoforge.workflow.state")
	// AttrFlow is a flow key (storage.Flow), as a metric label of the flow gauges.
	AttrFlow = attribute.Key("chronoforge.flow")

	// AttrRunAttempt is the run's workflow-level attempt: 1 + the failed runs before it.
	AttrRunAttempt = attribute.Key("chronoforge.run.attempt")
	// AttrRunOutcome is how a run ended (Outcome).
	AttrRunOutcome = attribute.Key("chronoforge.run.outcome")
	// AttrRunStepsReplayed counts the steps a run read back from storage without running them.
	AttrRunStepsReplayed = attribute.Key("chronoforge.run.steps.replayed")
	// AttrRunStepsExecuted counts the step functions a run called.
	AttrRunStepsExecuted = attribute.Key("chronoforge.run.steps.executed")
	// AttrSuspensionReason is why a suspended run waits (Reason).
	AttrSuspensionReason = attribute.Key("chronoforge.suspension.reason")
	// AttrRunNextAt is when a suspended run's workflow is due again (RFC 3339, engine clock).
	AttrRunNextAt = attribute.Key("chronoforge.run.next_run_at")
	// AttrRunClaimLag is how long the workflow was due before it was claimed, in seconds.
	AttrRunClaimLag = attribute.Key("chronoforge.run.claim_lag")
	// AttrWorkerOwner is the lease owner of the worker that runs or claims (span only).
	AttrWorkerOwner = attribute.Key("chronoforge.worker.owner")
	// AttrStallReason is why a workflow stalled (StallReason).
	AttrStallReason = attribute.Key("chronoforge.stall.reason")

	// AttrStepName is the user's step name.
	AttrStepName = attribute.Key("chronoforge.step.name")
	// AttrStepAttempt is the execution's attempt number, from 1.
	AttrStepAttempt = attribute.Key("chronoforge.step.attempt")
	// AttrStepOutcome is how one execution of a step ended (StepOutcome).
	AttrStepOutcome = attribute.Key("chronoforge.step.outcome")

	// AttrWaitStep names the wait (or retried step) a wait event belongs to.
	AttrWaitStep = attribute.Key("chronoforge.wait.step")
	// AttrWaitWakeAt is when a wait is due (RFC 3339, engine clock); absent for a signal wait.
	AttrWaitWakeAt = attribute.Key("chronoforge.wait.wake_at")

	// AttrBranchName is the branch a spawn batch belongs to.
	AttrBranchName = attribute.Key("chronoforge.branch.name")
	// AttrSpawnName is the Spawn or SpawnEach that wrote a batch.
	AttrSpawnName = attribute.Key("chronoforge.spawn.name")
	// AttrSpawnBatchIndex is the batch's index within its SpawnEach, from 0.
	AttrSpawnBatchIndex = attribute.Key("chronoforge.spawn.batch.index")
	// AttrSpawnInserted counts the children a batch newly inserted (a repeated batch inserts 0).
	AttrSpawnInserted = attribute.Key("chronoforge.spawn.inserted")
	// AttrBatchMessageCount is the general key for the number of items in a batch: children in
	// a spawn batch, workflows in a claim.
	AttrBatchMessageCount = attribute.Key("messaging.batch.message_count")
	// AttrClaimLimit is the most workflows a claim asked for.
	AttrClaimLimit = attribute.Key("chronoforge.claim.limit")

	// AttrMergePending counts a probe's unfinished children, up to the cap.
	AttrMergePending = attribute.Key("chronoforge.merge.pending")
	// AttrMergeCapped says the count stopped at the cap (there may be more).
	AttrMergeCapped = attribute.Key("chronoforge.merge.capped")
	// AttrMergeDone says the probe found the merge over.
	AttrMergeDone = attribute.Key("chronoforge.merge.done")
	// AttrMergeNextProbeIn is the delay to the next probe, in seconds, while waiting.
	AttrMergeNextProbeIn = attribute.Key("chronoforge.merge.next_probe_in")
	// AttrMergeBranches counts the branches a probe covers.
	AttrMergeBranches = attribute.Key("chronoforge.merge.branches")

	// AttrErrorType is the general key for the class of an error: its Go type, or an outcome.
	AttrErrorType = attribute.Key("error.type")
)

// Outcome is how a run ended.
type Outcome string

// Run outcomes.
const (
	// OutcomeCompleted: the workflow completed.
	OutcomeCompleted Outcome = "completed"
	// OutcomeSuspended: the workflow waits (SuspensionReason says for what); this includes a
	// failed run that the workflow's policy retries.
	OutcomeSuspended Outcome = "suspended"
	// OutcomeFailed: the workflow failed for good.
	OutcomeFailed Outcome = "failed"
	// OutcomeStalled: a step's retries are spent or a wait timed out (StallReason says which).
	OutcomeStalled Outcome = "stalled"
	// OutcomeCancelled: the workflow was cancelled during the run; nothing more was written.
	OutcomeCancelled Outcome = "cancelled"
	// OutcomeLeaseLost: the run lost its lease; another worker owns the workflow now.
	OutcomeLeaseLost Outcome = "lease_lost"
	// OutcomeReleased: the worker shut down mid-run and gave the workflow back.
	OutcomeReleased Outcome = "released"
	// OutcomeError: the run's outcome could not be written (a storage error); the workflow
	// runs again when its lease expires.
	OutcomeError Outcome = "error"
)

// Reason is what a suspended run waits for.
type Reason string

// Suspension reasons.
const (
	ReasonSleep  Reason = "sleep"  // Sleep
	ReasonWait   Reason = "wait"   // WaitUntil, checked again at its next interval
	ReasonSignal Reason = "signal" // ContinueIf, until a signal
	ReasonMerge  Reason = "merge"  // Merge or AutoMerge, until the probe finds it done
	ReasonRetry  Reason = "retry"  // a step or the workflow function between retries
)

// StallReason is why a workflow stalled.
type StallReason string

// Stall reasons.
const (
	StallRetriesSpent StallReason = "retries_spent" // a step failed with its retries spent
	StallPermanent    StallReason = "permanent"     // a step returned a Permanent error
	StallWaitTimeout  StallReason = "wait_timeout"  // a WaitUntil timed out
	StallWaitError    StallReason = "wait_error"    // a wait condition returned an error
	StallMergeTimeout StallReason = "merge_timeout" // a merge timed out
)

// StepOutcome is how one execution of a step ended.
type StepOutcome string

// Step outcomes.
const (
	StepCompleted StepOutcome = "completed" // its result is stored
	StepRetrying  StepOutcome = "retrying"  // it failed and runs again after its policy's delay
	StepFailed    StepOutcome = "failed"    // it failed for good: the workflow stalls
	StepAborted   StepOutcome = "aborted"   // the run was cancelled, lost its lease or shut down
)
