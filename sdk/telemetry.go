package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// WithTracerProvider sets the tracer provider of the engine's spans (default: the global
// one, otel.GetTracerProvider(), a no-op until the application sets one). See package
// telemetry for the spans.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return engineOption(func(e *Engine) error { e.telOpts.TracerProvider = tp; return nil })
}

// WithMeterProvider sets the meter provider of the engine's metrics (default: the global
// one, otel.GetMeterProvider(), a no-op until the application sets one).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return engineOption(func(e *Engine) error { e.telOpts.MeterProvider = mp; return nil })
}

// WithPropagator sets how the trace context of a Start (or a spawn batch) is stored on the
// workflow row, for its runs to link to (default: the global propagator, otel.
// GetTextMapPropagator(); while no global one is set, W3C trace context and baggage). Every
// engine sharing a store should use the same one.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return engineOption(func(e *Engine) error { e.telOpts.Propagator = p; return nil })
}

// WithRunsAsChildren makes each run's span a child of the context stored on its workflow
// row (its Start, or for a branch child its spawn batch) instead of a new root that links to
// it. Then a workflow, with its children, is one trace however long it lives; by default
// every run is a trace of its own, so a workflow sleeping for days or a branch of a million
// children never makes one endless trace.
func WithRunsAsChildren() Option {
	return engineOption(func(e *Engine) error { e.telOpts.RunsAsChildren = true; return nil })
}

// observed is a run's telemetry: its span and counts, and whether it is still replaying.
type observed struct {
	run telemetry.Run
	// stepCtx is the context of the step function running now (its span), if any.
	stepCtx context.Context
	// replaying is true from the start of a run that found records stored by earlier runs
	// until the run first does something no earlier run did (live); Context.Logger drops
	// records while it is true.
	replaying atomic.Bool
	quiet     *slog.Logger
}

// startRun begins the telemetry of run r (claimed as claimed, with its stored steps): its
// span, which r.ctx carries from now on, the trace IDs on r.log, and the replay flag.
func (e *Engine) startRun(r *run, claimed storage.Workflow, steps []storage.Step) {
	s := telemetry.RunStart{
		Workflow: telemetry.Workflow{Name: r.wf.Name, Key: r.wf.Key, ID: r.wf.ID},
		Stored:   r.wf.TraceContext,
		Attempt:  r.wf.Attempt + 1,
		Owner:    claimed.LeaseOwner,
	}
	if due, ok := dueAt(claimed, steps); ok {
		s.ClaimLag, s.HasLag = claimed.UpdatedAt.Sub(due), true
	}
	r.ctx, r.tel.run = e.tel.StartRun(r.ctx, s)
	if attrs := telemetry.LogAttrs(r.tel.run.Span().SpanContext()); attrs != nil {
		r.log = r.log.With(attrs...)
	}
	r.tel.replaying.Store(len(steps) > 0)
}

// dueAt is when a claimed workflow became due, where the SDK knows it: its creation for a
// first run, the wake time of a sleep, the retry time of a step. Other waits (a signal, a
// WaitUntil's next check, a workflow-level retry, a release) leave no trace of it once
// claimed, and a workflow woken before it was due has none: ok is false then.
func dueAt(claimed storage.Workflow, steps []storage.Step) (time.Time, bool) {
	var due time.Time
	switch claimed.Wait.Kind {
	case storage.WaitNone:
		if len(steps) == 0 && claimed.Attempt == 0 {
			due = claimed.CreatedAt
		}
	case storage.WaitSleep, storage.WaitRetry:
		for _, s := range steps {
			if s.Name == claimed.Wait.Step && claimed.Wait.Step != "" {
				m := readMeta(s)
				due = m.WakeAt
				if claimed.Wait.Kind == storage.WaitRetry {
					due = m.NextAt
				}
				break
			}
		}
	}
	if due.IsZero() || claimed.UpdatedAt.Before(due) {
		return time.Time{}, false
	}
	return due, true
}

// live marks the run as doing new work: Context.Logger logs from now on.
func (r *run) live() { r.tel.replaying.Store(false) }

// userLogger is Context.Logger's logger: the run's, quiet while replaying.
func (r *run) userLogger() *slog.Logger {
	if r.tel.quiet == nil {
		r.tel.quiet = slog.New(telemetry.Quiet(r.log.Handler(), &r.tel.replaying))
	}
	return r.tel.quiet
}

// stepContext is the context a step's function (or a wait's condition) receives.
func (r *run) stepContext() context.Context {
	if r.tel.stepCtx != nil {
		return r.tel.stepCtx
	}
	return r.ctx
}

// stepObs is one execution of a step, observed.
type stepObs struct {
	s       telemetry.Step
	name    string
	attempt int
}

// startStep begins the telemetry of an execution of step name (attempt from 1): its span,
// whose context the step's function receives.
func (r *run) startStep(name string, attempt int) stepObs {
	r.live()
	ctx, s := r.tel.run.StartStep(r.ctx, name, attempt)
	if ctx != r.ctx {
		r.tel.stepCtx = ctx
	}
	return stepObs{s: s, name: name, attempt: attempt}
}

// end ends the execution's telemetry once Step decided its fate: rec is the step's record
// as queued, err the error it failed with.
func (o *stepObs) end(r *run, rec *storage.Step, err *error) {
	ctx := r.stepContext()
	r.tel.stepCtx = nil
	var outcome telemetry.StepOutcome
	switch h := r.stopped; {
	case h == nil && rec.State == storage.StepCompleted:
		outcome = telemetry.StepCompleted
	case h != nil && h.kind == haltSuspend:
		outcome = telemetry.StepRetrying
	case h != nil && h.kind == haltAbort:
		outcome = telemetry.StepAborted
	default:
		outcome = telemetry.StepFailed
	}
	var e error
	if err != nil {
		e = *err
	}
	if e == nil && r.stopped != nil && outcome != telemetry.StepRetrying {
		e = r.stopped.cause
	}
	errType := ""
	if e != nil {
		errType = errorType(e)
	}
	o.s.End(ctx, outcome, e, errType)
	switch outcome {
	case telemetry.StepRetrying:
		r.stepLog(ctx, o.name).Info("step failed; will retry", "attempt", o.attempt, "at", r.stopped.runAt, "error", e)
	case telemetry.StepFailed:
		r.stepLog(ctx, o.name).Warn("step failed for good", "attempt", o.attempt, "error", e)
	}
}

// stepLog is the engine's logger for a step: the run's fields, the step's name and the
// trace and span IDs of ctx's span (the step's, when traced).
func (r *run) stepLog(ctx context.Context, name string) *slog.Logger {
	args := []any{"workflow", r.wf.Name, "key", r.wf.Key, "id", r.wf.ID, "step", name}
	return r.eng.logger.With(append(args, telemetry.LogAttrs(trace.SpanContextFromContext(ctx))...)...)
}

// waitEvent adds the event of a suspension to the run's span.
func (r *run) waitEvent(runAt time.Time, w storage.Wait) {
	r.live()
	if r.tel.run.Tracing() {
		r.tel.run.Wait(reasonOf(w.Kind), userName(w.Step), runAt)
	}
}

// userName is the user's name of a record (its prefix up to '$' dropped).
func userName(record string) string {
	if i := strings.LastIndexByte(record, '$'); i >= 0 {
		return record[i+1:]
	}
	return record
}

func reasonOf(k storage.WaitKind) telemetry.Reason {
	switch k {
	case storage.WaitSleep:
		return telemetry.ReasonSleep
	case storage.WaitUntil:
		return telemetry.ReasonWait
	case storage.WaitSignal:
		return telemetry.ReasonSignal
	case storage.WaitMerge:
		return telemetry.ReasonMerge
	case storage.WaitRetry:
		return telemetry.ReasonRetry
	}
	return telemetry.Reason(k)
}

// endRun ends the run's telemetry. f is what the run wrote (nil: nothing, the run was
// aborted with cause err), err the error of that write.
func (r *run) endRun(f *storage.Finish, fnErr, err error) {
	ctx := r.ctx
	var e telemetry.RunEnd
	switch {
	case f == nil || err != nil:
		cause := err
		switch {
		case errors.Is(cause, storage.ErrLeaseLost):
			e.Outcome = telemetry.OutcomeLeaseLost
		case errors.Is(cause, storage.ErrCancelled):
			e.Outcome = telemetry.OutcomeCancelled
		default:
			e.Outcome, e.Err = telemetry.OutcomeError, cause
		}
	case r.stopped != nil && r.stopped.kind == haltAbort:
		e.Outcome = telemetry.OutcomeReleased
	case f.State == storage.StateCompleted:
		e.Outcome = telemetry.OutcomeCompleted
	case f.State == storage.StateFailed:
		e.Outcome, e.Err = telemetry.OutcomeFailed, fnErr
		if r.stopped != nil {
			e.Err = r.stopped.cause
		}
	case f.State == storage.StateStalled:
		e.Outcome, e.Err = telemetry.OutcomeStalled, r.stopped.cause
		e.Stall = stallReason(r, r.stopped.cause)
	default:
		e.Outcome, e.Reason, e.NextAt = telemetry.OutcomeSuspended, reasonOf(f.Wait.Kind), f.RunAt
		if r.stopped == nil {
			e.Err = fnErr // the workflow function failed; its policy retries it
		}
	}
	if e.Err != nil {
		e.ErrType = errorType(innermost(e.Err))
	}
	r.tel.run.End(ctx, e)
	if f != nil && err == nil && f.State.Final() {
		r.eng.tel.RecordWorkflowEnd(ctx, r.wf.Name, string(f.State), f.Now.Sub(r.wf.CreatedAt))
	}
}

// innermost follows a chain of wrapped errors to its end.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// stallReason classifies the cause of a stall by the record that stalled.
func stallReason(r *run, cause error) telemetry.StallReason {
	switch {
	case errors.Is(cause, ErrWaitTimeout):
		return telemetry.StallWaitTimeout
	case errors.Is(cause, ErrMergeTimeout):
		return telemetry.StallMergeTimeout
	}
	for _, s := range r.pending {
		if s.State == storage.StepFailed && (strings.HasPrefix(s.Name, "until$") || strings.HasPrefix(s.Name, "continue$")) {
			return telemetry.StallWaitError
		}
	}
	if IsPermanent(cause) {
		return telemetry.StallPermanent
	}
	return telemetry.StallRetriesSpent
}

// startSpawn begins the telemetry of a spawn batch of branch (spawn name, the spawn's
// record among steps) writing children: its span, a child of the run's, whose context each
// child row stores (or the run's when the run is not traced).
func (r *run) startSpawn(branch, name string, steps []storage.Step, children []storage.NewWorkflow) (context.Context, telemetry.Spawn) {
	r.live()
	if len(children) == 0 {
		return r.ctx, telemetry.Spawn{} // the branch record alone: no batch
	}
	ctx, s := r.tel.run.StartSpawn(r.ctx, branch, name, batchIndex(steps), len(children))
	if tc := r.eng.tel.Inject(ctx, storage.MaxMeta); tc != nil {
		for i := range children {
			children[i].TraceContext = tc
		}
	}
	return ctx, s
}

// batchIndex is the index, from 0, of the batch a SpawnEach writes with its record among
// steps (its cursor counts the batches, this one included); 0 for a Spawn.
func batchIndex(steps []storage.Step) int64 {
	for _, s := range steps {
		if strings.HasPrefix(s.Name, "spawn$") && len(s.Meta) > 0 {
			var m spawnMeta
			if json.Unmarshal(s.Meta, &m) == nil && m.Batches > 0 {
				return m.Batches - 1
			}
		}
	}
	return 0
}

// startProbe begins the telemetry of a merge probe a worker makes on claimed workflow wf
// without replaying it: a span linked like a run's, and the claim lag (the probe was due
// at its last probe plus its interval).
func (e *Engine) startProbe(ctx context.Context, wf storage.Workflow, w *mergeWait) (context.Context, telemetry.Probe) {
	if !w.LastAt.IsZero() {
		if due := w.LastAt.Add(time.Duration(w.Interval)); !wf.UpdatedAt.Before(due) {
			e.tel.RecordClaimLag(ctx, wf.Name, wf.UpdatedAt.Sub(due))
		}
	}
	return e.tel.StartProbe(ctx, telemetry.Workflow{Name: wf.Name, Key: wf.Key, ID: wf.ID}, wf.TraceContext, wf.LeaseOwner, len(w.StepIDs))
}

// probeEnd is what the telemetry of a probe reports of its result.
func probeEnd(res probeResult, w *mergeWait, err error) telemetry.ProbeEnd {
	p := telemetry.ProbeEnd{Err: err}
	if err != nil {
		return p
	}
	switch res {
	case probeWaiting:
		p.Pending, p.NextIn = w.LastCount, time.Duration(w.Interval)
	case probeTimeout:
		p.Pending, p.Done = w.LastCount, true // the count of the probe before: a timeout keeps none
	default:
		p.Done = true
	}
	p.Capped = p.Pending >= MergeCap
	return p
}
