package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Span start options, shared read-only so that starting a span allocates no option slice.
var (
	optsProducer     = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	optsConsumer     = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	optsRootConsumer = []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer)}
	optsInternal     = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
)

// Workflow identifies one workflow on a span. Its key and ID go on spans only, never on
// metrics.
type Workflow struct {
	Name string
	Key  string
	ID   int64
}

// set puts the workflow's identity on a recording span; empty fields are left out.
func (w Workflow) set(span trace.Span) {
	kvs := make([]attribute.KeyValue, 0, 3)
	if w.Name != "" {
		kvs = append(kvs, AttrWorkflowName.String(w.Name))
	}
	if w.Key != "" {
		kvs = append(kvs, AttrWorkflowKey.String(w.Key))
	}
	if w.ID != 0 {
		kvs = append(kvs, AttrWorkflowID.Int64(w.ID))
	}
	span.SetAttributes(kvs...)
}

// fail marks a recording span as failed by err, whose class is errType (a Go type name or
// a reason; empty: none is set).
func fail(span trace.Span, err error, errType string) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	if errType != "" {
		span.SetAttributes(AttrErrorType.String(errType))
	}
}

// StartProducer starts the producer span of a Start, Signal, Retry or Cancel (op), a child
// of the caller's span in ctx. wf holds what is known before the operation.
func (t *Telemetry) StartProducer(ctx context.Context, op string, wf Workflow) (context.Context, trace.Span) {
	ctx, span := t.start(ctx, op, wf.Name, optsProducer)
	if span.IsRecording() {
		wf.set(span)
	}
	return ctx, span
}

// EndProducer ends a producer span. wf adds what the operation learnt (an ID, the name: a
// span started without a name is renamed "<op> <name>"); err, if any, fails the span.
func EndProducer(span trace.Span, op string, wf Workflow, err error, errType string) {
	if span.IsRecording() {
		if wf.Name != "" {
			span.SetName(SpanName(op, wf.Name))
		}
		wf.set(span)
		if err != nil {
			fail(span, err, errType)
		}
	}
	span.End()
}

// EndStart ends the producer span of a Start: created says whether it created the
// workflow or found it.
func EndStart(span trace.Span, wf Workflow, created bool, err error, errType string) {
	if span.IsRecording() {
		span.SetAttributes(AttrWorkflowCreated.Bool(created))
	}
	EndProducer(span, OpStart, wf, err, errType)
}

// startLinked starts a consumer span for work on a stored workflow: a new root linked to
// the stored context, or its child when runs are children.
func (t *Telemetry) startLinked(ctx context.Context, op, target string, stored []byte) (context.Context, trace.Span) {
	ctx, sc := t.Extract(ctx, stored)
	switch {
	case !sc.IsValid() || t.off():
		return t.start(ctx, op, target, optsRootConsumer)
	case t.children:
		return t.start(trace.ContextWithRemoteSpanContext(ctx, sc), op, target, optsConsumer)
	}
	return t.start(ctx, op, target, []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(trace.Link{SpanContext: sc})})
}

// RunStart describes a run as it starts.
type RunStart struct {
	Workflow Workflow
	// Stored is the trace context stored on the workflow row (Inject's encoding).
	Stored []byte
	// Attempt is the run's workflow-level attempt, from 1.
	Attempt int
	// Owner is the lease owner running it.
	Owner string
	// ClaimLag is how long the workflow was due before its claim, when HasLag.
	ClaimLag time.Duration
	HasLag   bool
}

// Run is the instrumentation of one run, kept by value in the run it observes. Replayed and
// Executed count its steps.
type Run struct {
	t      *Telemetry
	span   trace.Span
	name   string
	start  time.Time
	timed  bool
	active bool
	// Replayed counts steps read back from storage; Executed, step functions called.
	Replayed, Executed int
}

// StartRun starts the span of a run (see startLinked) and counts it as active. The returned
// context carries the span and the stored baggage; pass it to everything the run does.
func (t *Telemetry) StartRun(ctx context.Context, s RunStart) (context.Context, Run) {
	ctx, span := t.startLinked(ctx, OpRun, s.Workflow.Name, s.Stored)
	r := Run{t: t, span: span, name: s.Workflow.Name}
	if span.IsRecording() {
		s.Workflow.set(span)
		span.SetAttributes(AttrRunAttempt.Int(s.Attempt))
		if s.Owner != "" {
			span.SetAttributes(AttrWorkerOwner.String(s.Owner))
		}
		if s.HasLag {
			span.SetAttributes(AttrRunClaimLag.Float64(s.ClaimLag.Seconds()))
		}
	}
	if s.HasLag {
		t.RecordClaimLag(ctx, s.Workflow.Name, s.ClaimLag)
	}
	if t.m.runActive.Enabled(ctx) {
		r.active = true
		t.m.runActive.Add(ctx, 1, t.labels(r.name, none, none).add...)
	}
	if r.timed = span.IsRecording() || t.m.runDuration.Enabled(ctx); r.timed {
		r.start = time.Now()
	}
	return ctx, r
}

// Span returns the run's span.
func (r *Run) Span() trace.Span { return r.span }

// Tracing reports whether the run's span records; spans below it are started only then.
func (r *Run) Tracing() bool { return r.span != nil && r.span.IsRecording() }

// RunEnd describes how a run ended.
type RunEnd struct {
	Outcome Outcome
	// Reason is what a suspended run waits for; NextAt when it is due again (zero: a signal).
	Reason Reason
	NextAt time.Time
	// Stall is why a stalled run stalled.
	Stall StallReason
	// Err is the error that failed, stalled or errored the run, or that the workflow
	// function returned before a retry; ErrType its class (error.type).
	Err     error
	ErrType string
}

// End ends the run's span and records its measurements. Call it once per StartRun.
func (r *Run) End(ctx context.Context, e RunEnd) {
	if r.t == nil {
		return
	}
	t := r.t
	if r.span.IsRecording() {
		r.span.SetAttributes(AttrRunOutcome.String(string(e.Outcome)),
			AttrRunStepsReplayed.Int(r.Replayed), AttrRunStepsExecuted.Int(r.Executed))
		if e.Reason != "" {
			r.span.SetAttributes(AttrSuspensionReason.String(string(e.Reason)))
		}
		if !e.NextAt.IsZero() {
			r.span.SetAttributes(AttrRunNextAt.String(e.NextAt.UTC().Format(time.RFC3339Nano)))
		}
		if e.Stall != "" {
			r.span.SetAttributes(AttrStallReason.String(string(e.Stall)))
		}
		if e.Err != nil {
			fail(r.span, e.Err, e.ErrType)
		}
	}
	r.span.End()
	if r.timed && t.m.runDuration.Enabled(ctx) {
		reason := none
		if e.Reason != "" {
			reason = AttrSuspensionReason.String(string(e.Reason))
		}
		t.m.runDuration.Record(ctx, time.Since(r.start).Seconds(), t.labels(r.name, AttrRunOutcome.String(string(e.Outcome)), reason).record...)
	}
	if t.m.runReplayed.Enabled(ctx) {
		t.m.runReplayed.Record(ctx, int64(r.Replayed), t.labels(r.name, none, none).record...)
	}
	if e.Outcome == OutcomeStalled && t.m.stalls.Enabled(ctx) {
		t.m.stalls.Add(ctx, 1, t.labels(r.name, AttrStallReason.String(string(e.Stall)), none).add...)
	}
	if e.Outcome == OutcomeLeaseLost && t.m.leasesLost.Enabled(ctx) {
		t.m.leasesLost.Add(ctx, 1, t.labels(r.name, none, none).add...)
	}
	if r.active {
		t.m.runActive.Add(ctx, -1, t.labels(r.name, none, none).add...)
	}
	r.t = nil // ended
}

// Wait adds a wait event to the run's span: what it waits for, the wait's (or retried
// step's) name and when it is due (zero: until a signal).
func (r *Run) Wait(reason Reason, step string, wakeAt time.Time) {
	if r.span == nil || !r.span.IsRecording() {
		return
	}
	kvs := []attribute.KeyValue{AttrSuspensionReason.String(string(reason))}
	if step != "" {
		kvs = append(kvs, AttrWaitStep.String(step))
	}
	if !wakeAt.IsZero() {
		kvs = append(kvs, AttrWaitWakeAt.String(wakeAt.UTC().Format(time.RFC3339Nano)))
	}
	r.span.AddEvent(EventWait, trace.WithAttributes(kvs...))
}

// Step is the instrumentation of one execution of a step's function.
type Step struct {
	run   *Run
	span  trace.Span // nil when the run is not traced
	name  string
	start time.Time
	timed bool
}

// StartStep counts an executed step and, when the run is traced, starts its span as a
// child of ctx (the run's context). attempt is the execution's number, from 1. The
// returned context is what the step's function receives.
func (r *Run) StartStep(ctx context.Context, name string, attempt int) (context.Context, Step) {
	r.Executed++
	s := Step{run: r, name: name}
	if r.t == nil {
		return ctx, s
	}
	if r.Tracing() {
		ctx, s.span = r.t.start(ctx, OpStep, name, optsInternal)
		if s.span.IsRecording() {
			s.span.SetAttributes(AttrStepName.String(name), AttrStepAttempt.Int(attempt))
		}
	}
	if s.timed = s.span != nil || r.t.m.stepDuration.Enabled(ctx); s.timed {
		s.start = time.Now()
	}
	return ctx, s
}

// End ends the step's span and records its measurements: how it ended and, if it failed,
// its error and that error's class.
func (s *Step) End(ctx context.Context, outcome StepOutcome, err error, errType string) {
	r := s.run
	if r == nil || r.t == nil {
		return
	}
	if s.span != nil {
		if s.span.IsRecording() {
			s.span.SetAttributes(AttrStepOutcome.String(string(outcome)))
			if err != nil {
				fail(s.span, err, errType)
			}
		}
		s.span.End()
	}
	m := &r.t.m
	if s.timed && m.stepDuration.Enabled(ctx) {
		m.stepDuration.Record(ctx, time.Since(s.start).Seconds(), r.t.labels(r.name, AttrStepName.String(s.name), AttrStepOutcome.String(string(outcome))).record...)
	}
	if outcome == StepRetrying && m.stepRetries.Enabled(ctx) {
		m.stepRetries.Add(ctx, 1, r.t.labels(r.name, AttrStepName.String(s.name), none).add...)
	}
	s.run = nil
}

// Spawn is the instrumentation of one spawn batch.
type Spawn struct {
	run      *Run
	span     trace.Span
	start    time.Time
	timed    bool
	children int
}

// StartSpawn starts the span of a spawn batch of branch (by the Spawn or SpawnEach named
// spawn, batch index) writing children children, when the run is traced. The returned
// context is what the children's rows store (Inject).
func (r *Run) StartSpawn(ctx context.Context, branch, spawn string, index int64, children int) (context.Context, Spawn) {
	s := Spawn{run: r, children: children}
	if r.t == nil {
		return ctx, s
	}
	if r.Tracing() {
		ctx, s.span = r.t.start(ctx, OpSpawn, branch, optsProducer)
		if s.span.IsRecording() {
			s.span.SetAttributes(AttrBranchName.String(branch), AttrSpawnName.String(spawn),
				AttrSpawnBatchIndex.Int64(index), AttrBatchMessageCount.Int(children))
		}
	}
	if s.timed = s.span != nil || r.t.m.spawnBatchDuration.Enabled(ctx); s.timed {
		s.start = time.Now()
	}
	return ctx, s
}

// End ends the batch's span and records its measurements: inserted children were new.
func (s *Spawn) End(ctx context.Context, inserted int, err error) {
	r := s.run
	if r == nil || r.t == nil {
		return
	}
	if s.span != nil {
		if s.span.IsRecording() {
			s.span.SetAttributes(AttrSpawnInserted.Int(inserted))
			if err != nil {
				fail(s.span, err, "")
			}
		}
		s.span.End()
	}
	m := &r.t.m
	if err == nil {
		if s.timed && m.spawnBatchDuration.Enabled(ctx) {
			m.spawnBatchDuration.Record(ctx, time.Since(s.start).Seconds(), r.t.labels(r.name, none, none).record...)
		}
		if m.spawnBatchSize.Enabled(ctx) {
			m.spawnBatchSize.Record(ctx, int64(s.children), r.t.labels(r.name, none, none).record...)
		}
		if m.spawnChildren.Enabled(ctx) {
			m.spawnChildren.Add(ctx, int64(inserted), r.t.labels(r.name, none, none).add...)
		}
	}
	s.run = nil
}

// Probe is the instrumentation of one merge probe.
type Probe struct {
	t    *Telemetry
	span trace.Span
	name string
}

// StartProbe starts the span of a merge probe made by a worker without replaying the
// workflow: linked to (or, with RunsAsChildren, a child of) the workflow's stored context,
// like a run.
func (t *Telemetry) StartProbe(ctx context.Context, wf Workflow, stored []byte, owner string, branches int) (context.Context, Probe) {
	ctx, span := t.startLinked(ctx, OpProbe, wf.Name, stored)
	if span.IsRecording() {
		wf.set(span)
		span.SetAttributes(AttrMergeBranches.Int(branches))
		if owner != "" {
			span.SetAttributes(AttrWorkerOwner.String(owner))
		}
	}
	return ctx, Probe{t: t, span: span, name: wf.Name}
}

// StartProbe starts the span of a merge probe made inside the run, its child, when the run
// is traced.
func (r *Run) StartProbe(ctx context.Context, branches int) (context.Context, Probe) {
	p := Probe{t: r.t, name: r.name}
	if r.t != nil && r.Tracing() {
		ctx, p.span = r.t.start(ctx, OpProbe, r.name, optsInternal)
		if p.span.IsRecording() {
			p.span.SetAttributes(AttrMergeBranches.Int(branches))
		}
	}
	return ctx, p
}

// ProbeEnd describes what a merge probe found.
type ProbeEnd struct {
	// Pending counts the unfinished children, up to the cap; Capped says it reached it.
	Pending int
	Capped  bool
	// Done: the merge is over (or failed or timed out: the workflow is replayed).
	Done bool
	// NextIn is the delay to the next probe while waiting.
	NextIn time.Duration
	Err    error
}

// End ends the probe's span and records the pending count.
func (p *Probe) End(ctx context.Context, e ProbeEnd) {
	if p.t == nil {
		return
	}
	if p.span != nil {
		if p.span.IsRecording() {
			p.span.SetAttributes(AttrMergePending.Int(e.Pending), AttrMergeCapped.Bool(e.Capped), AttrMergeDone.Bool(e.Done))
			if !e.Done && e.Err == nil {
				p.span.SetAttributes(AttrMergeNextProbeIn.Float64(e.NextIn.Seconds()))
			}
			if e.Err != nil {
				fail(p.span, e.Err, "")
			}
		}
		p.span.End()
	}
	if e.Err == nil && p.t.m.probePending.Enabled(ctx) {
		p.t.m.probePending.Record(ctx, int64(e.Pending), p.t.labels(p.name, none, none).record...)
	}
	p.t = nil
}

// Claimed instruments a claim that began at start (real time): when it took n > 0
// workflows it records a claim span (only then: idle polls would flood a backend) and the
// batch size.
func (t *Telemetry) Claimed(ctx context.Context, start time.Time, owner string, limit, n int) {
	if n <= 0 {
		return
	}
	if !t.off() {
		_, span := t.start(ctx, OpClaim, "", []trace.SpanStartOption{trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindClient)})
		if span.IsRecording() {
			span.SetAttributes(AttrBatchMessageCount.Int(n), AttrClaimLimit.Int(limit), AttrWorkerOwner.String(owner))
		}
		span.End()
	}
	if t.m.claimBatch.Enabled(ctx) {
		t.m.claimBatch.Record(ctx, int64(n))
	}
}
