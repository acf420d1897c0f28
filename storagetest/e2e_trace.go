package storagetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// traceCases prove the telemetry promises end to end on the backend: the span tree and
// links of runs, what a replay leaves out, the stored trace context shared by two
// processes, and metrics that carry names, never keys.
func traceCases() []storageCase {
	return []storageCase{
		{"TraceRunsLinkToStartAcrossProcesses", testE2ETraceRuns},
		{"TraceBranchChildrenLinkToSpawnBatch", testE2ETraceBranch},
		{"TraceRunsAsChildren", testE2ETraceRunsAsChildren},
	}
}

// process is one process's telemetry: an in-memory span recorder and a manual metric
// reader behind providers of its own.
type process struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newProcess(t *testing.T) *process {
	p := &process{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	p.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(p.spans))
	p.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(p.reader))
	t.Cleanup(func() {
		_ = p.tp.Shutdown(context.Background())
		_ = p.mp.Shutdown(context.Background())
	})
	return p
}

func (p *process) options() []sdk.Option {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	return []sdk.Option{sdk.WithTracerProvider(p.tp), sdk.WithMeterProvider(p.mp), sdk.WithLogger(quiet)}
}

// driveOnce claims every due workflow of the given names as a worker named worker-1 would
// and runs each once, in claim order. It returns how many it ran.
func driveOnce(t *testing.T, eng *sdk.Engine, clock *sdk.FakeClock, names ...string) int {
	t.Helper()
	ctx := context.Background()
	claimed, err := eng.Claim(ctx, storage.ClaimRequest{Owner: "worker-1", Limit: 10, Names: names, TTL: time.Minute, Now: clock.Now()})
	require.NoError(t, err)
	for _, wf := range claimed {
		require.NoError(t, eng.Execute(ctx, wf))
	}
	return len(claimed)
}

// traceClock is a fake clock near the real time in whole seconds: every backend stores
// these times exactly, and rendered times are offsets from it.
func traceClock() *sdk.FakeClock {
	return sdk.NewFakeClock(time.Now().UTC().Truncate(time.Second))
}

// testE2ETraceRuns: a workflow started by one process (its own providers) and run three
// times by another: a step fails and is retried, a sleep, a completion. The start is a
// producer span in the caller's trace; each run is a new root linking to it (the link
// carries the start span's trace and span IDs across the store); only executed steps have
// spans; waits are events. The default propagator (none configured) stores W3C context.
func testE2ETraceRuns(t *testing.T, factory Factory) {
	var attempts atomic.Int32
	wf := sdk.New("e2e.trace.runs", func(c *sdk.Context, in int) (int, error) {
		a, err := sdk.Step(c, "charge", func(context.Context) (int, error) {
			if attempts.Add(1) == 1 {
				return 0, errors.New("card declined")
			}
			return in * 2, nil
		}, sdk.WithRetry(sdk.Policy{MaxAttempts: 3, Base: time.Second, Cap: time.Second}))
		if err != nil {
			return 0, err
		}
		if err := sdk.Sleep(c, "settle", time.Minute); err != nil {
			return 0, err
		}
		return sdk.Step(c, "capture", func(context.Context) (int, error) { return a + 1, nil })
	})
	store := factory(t)
	clock := traceClock()
	t0 := clock.Now()
	app, worker := newProcess(t), newProcess(t)
	starter, err := sdk.NewEngine(store, append(app.options(), sdk.WithWorkflows(wf), sdk.WithClock(clock))...)
	require.NoError(t, err)
	runner, err := sdk.NewEngine(store, append(worker.options(), sdk.WithWorkflows(wf), sdk.WithClock(clock))...)
	require.NoError(t, err)

	ctx, caller := app.tp.Tracer("app").Start(context.Background(), "caller")
	h, err := wf.Start(ctx, starter, "order-1", 20)
	require.NoError(t, err)
	caller.End()

	require.Equal(t, 1, driveOnce(t, runner, clock, wf.Name())) // charge fails: retry in 1s
	clock.Advance(3 * time.Second)
	require.Equal(t, 1, driveOnce(t, runner, clock, wf.Name())) // charge again, then the sleep
	clock.Advance(time.Minute + 5*time.Second)
	require.Equal(t, 1, driveOnce(t, runner, clock, wf.Name())) // capture, complete
	out, err := h.Result(resultCtx(t))
	require.NoError(t, err)
	require.Equal(t, 41, out)

	tree := renderSpans(t, store, t0, app, worker)
	want := `
caller [internal]
  start e2e.trace.runs [producer] chronoforge.workflow.created=true chronoforge.workflow.id=<order-1> chronoforge.workflow.key=order-1 chronoforge.workflow.name=e2e.trace.runs
claim#1 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
run e2e.trace.runs#1 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=0 chronoforge.run.next_run_at=t0+1s chronoforge.run.outcome=suspended chronoforge.run.steps.executed=1 chronoforge.run.steps.replayed=0 chronoforge.suspension.reason=retry chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<order-1> chronoforge.workflow.key=order-1 chronoforge.workflow.name=e2e.trace.runs
  link -> start e2e.trace.runs
  event chronoforge.wait chronoforge.suspension.reason=retry chronoforge.wait.step=charge chronoforge.wait.wake_at=t0+1s
  step charge#1 [internal] error(card declined) chronoforge.step.attempt=1 chronoforge.step.name=charge chronoforge.step.outcome=retrying error.type=*errors.errorString
    event exception exception.message=card declined exception.type=*errors.errorString
claim#2 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
run e2e.trace.runs#2 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=2 chronoforge.run.next_run_at=t0+1m3s chronoforge.run.outcome=suspended chronoforge.run.steps.executed=1 chronoforge.run.steps.replayed=0 chronoforge.suspension.reason=sleep chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<order-1> chronoforge.workflow.key=order-1 chronoforge.workflow.name=e2e.trace.runs
  link -> start e2e.trace.runs
  event chronoforge.wait chronoforge.suspension.reason=sleep chronoforge.wait.step=settle chronoforge.wait.wake_at=t0+1m3s
  step charge#2 [internal] chronoforge.step.attempt=2 chronoforge.step.name=charge chronoforge.step.outcome=completed
claim#3 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
run e2e.trace.runs#3 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=5 chronoforge.run.outcome=completed chronoforge.run.steps.executed=1 chronoforge.run.steps.replayed=1 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<order-1> chronoforge.workflow.key=order-1 chronoforge.workflow.name=e2e.trace.runs
  link -> start e2e.trace.runs
  step capture [internal] chronoforge.step.attempt=1 chronoforge.step.name=capture chronoforge.step.outcome=completed
`
	require.Equal(t, strings.TrimLeft(want, "\n"), tree)

	// Across the two processes, each run's link is the start span's trace and span IDs, and
	// the start is in the caller's trace.
	start := findSpans(app, "start e2e.trace.runs")
	require.Len(t, start, 1)
	require.Equal(t, caller.SpanContext().TraceID(), start[0].SpanContext().TraceID(), "the start is in the caller's trace")
	runs := findSpans(worker, "run e2e.trace.runs")
	require.Len(t, runs, 3)
	for i, run := range runs {
		require.Len(t, run.Links(), 1, "run %d", i+1)
		link := run.Links()[0].SpanContext
		require.Equal(t, start[0].SpanContext().TraceID(), link.TraceID(), "run %d links to the start's trace", i+1)
		require.Equal(t, start[0].SpanContext().SpanID(), link.SpanID(), "run %d links to the start span", i+1)
		require.False(t, run.Parent().IsValid(), "run %d is a new root", i+1)
		require.NotEqual(t, start[0].SpanContext().TraceID(), run.SpanContext().TraceID(), "run %d is a trace of its own", i+1)
	}
	// A replay emits no step span for steps returned from storage: charge ran twice (one
	// failure, one success) and capture once, whatever the number of replays.
	require.Len(t, findSpans(worker, "step charge"), 2)
	require.Len(t, findSpans(worker, "step capture"), 1)

	metrics := renderMetrics(t, worker, []string{"order-1", fmt.Sprint(h.ID())})
	wantMetrics := `
chronoforge.claim.batch.size {workflow} {} count=3 sum=3
chronoforge.claim.lag s {chronoforge.workflow.name=e2e.trace.runs} count=3 sum=7
chronoforge.run.active {run} {chronoforge.workflow.name=e2e.trace.runs} value=0
chronoforge.run.duration s {chronoforge.run.outcome=completed chronoforge.workflow.name=e2e.trace.runs} count=1
chronoforge.run.duration s {chronoforge.run.outcome=suspended chronoforge.suspension.reason=retry chronoforge.workflow.name=e2e.trace.runs} count=1
chronoforge.run.duration s {chronoforge.run.outcome=suspended chronoforge.suspension.reason=sleep chronoforge.workflow.name=e2e.trace.runs} count=1
chronoforge.run.steps.replayed {step} {chronoforge.workflow.name=e2e.trace.runs} count=3 sum=1
chronoforge.step.duration s {chronoforge.step.name=capture chronoforge.step.outcome=completed chronoforge.workflow.name=e2e.trace.runs} count=1
chronoforge.step.duration s {chronoforge.step.name=charge chronoforge.step.outcome=completed chronoforge.workflow.name=e2e.trace.runs} count=1
chronoforge.step.duration s {chronoforge.step.name=charge chronoforge.step.outcome=retrying chronoforge.workflow.name=e2e.trace.runs} count=1
chronoforge.step.retries {retry} {chronoforge.step.name=charge chronoforge.workflow.name=e2e.trace.runs} value=1
chronoforge.workflow.duration s {chronoforge.workflow.name=e2e.trace.runs chronoforge.workflow.state=completed} count=1 sum=68
`
	require.Equal(t, strings.TrimLeft(wantMetrics, "\n"), metrics)
	require.Empty(t, renderMetrics(t, app, nil), "a Start records no metric")
}

// testE2ETraceBranch: a parent spawns three children in two batches and merges them. Each
// batch is a span of the parent's run whose context the children's rows store, so each
// child's run links to its own batch; the merge is probed once inside the run, once by a
// worker without a replay (a root linked to the start), and once more when it is done.
func testE2ETraceBranch(t *testing.T, factory Factory) {
	child := sdk.New("e2e.trace.child", func(c *sdk.Context, n int) (int, error) {
		return sdk.Step(c, "square", func(context.Context) (int, error) { return n * n, nil })
	})
	parent := sdk.New("e2e.trace.parent", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "fan", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource([]int{1, 2, 3}), func(n int) (sdk.Child, error) {
				return sdk.NewChild(child, n), nil
			}, sdk.BatchSize(2))
		}, sdk.ProbeInterval(time.Second, 10*time.Second)); err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "fan"); err != nil {
			return 0, err
		}
		sum := 0
		for res, err := range sdk.BranchResults[int](c, "fan", 10) {
			if err != nil {
				return 0, err
			}
			sum += res.Output
		}
		return sum, nil
	})
	store := factory(t)
	clock := traceClock()
	t0 := clock.Now()
	p := newProcess(t)
	w3c := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	eng, err := sdk.NewEngine(store, append(p.options(), sdk.WithWorkflows(parent, child), sdk.WithClock(clock), sdk.WithPropagator(w3c))...)
	require.NoError(t, err)

	h, err := parent.Start(context.Background(), eng, "p", 0)
	require.NoError(t, err)
	require.Equal(t, 1, driveOnce(t, eng, clock, parent.Name())) // spawns, probes, waits
	clock.Advance(time.Second)
	require.Equal(t, 1, driveOnce(t, eng, clock, parent.Name())) // a probe without replay
	require.Equal(t, 3, driveOnce(t, eng, clock, child.Name()))  // the children
	clock.Advance(2 * time.Second)
	require.Equal(t, 1, driveOnce(t, eng, clock, parent.Name())) // the probe finds them done: replay
	sum, err := h.Result(resultCtx(t))
	require.NoError(t, err)
	require.Equal(t, 14, sum)

	tree := renderSpans(t, store, t0, p)
	want := `
start e2e.trace.parent [producer] chronoforge.workflow.created=true chronoforge.workflow.id=<p> chronoforge.workflow.key=p chronoforge.workflow.name=e2e.trace.parent
claim#1 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
run e2e.trace.parent#1 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=0 chronoforge.run.next_run_at=t0+1s chronoforge.run.outcome=suspended chronoforge.run.steps.executed=0 chronoforge.run.steps.replayed=0 chronoforge.suspension.reason=merge chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<p> chronoforge.workflow.key=p chronoforge.workflow.name=e2e.trace.parent
  link -> start e2e.trace.parent
  event chronoforge.wait chronoforge.suspension.reason=merge chronoforge.wait.step=fan chronoforge.wait.wake_at=t0+1s
  spawn fan#1 [producer] chronoforge.branch.name=fan chronoforge.spawn.batch.index=0 chronoforge.spawn.inserted=2 chronoforge.spawn.name=each messaging.batch.message_count=2
  spawn fan#2 [producer] chronoforge.branch.name=fan chronoforge.spawn.batch.index=1 chronoforge.spawn.inserted=1 chronoforge.spawn.name=each messaging.batch.message_count=1
  probe e2e.trace.parent#1 [internal] chronoforge.merge.branches=1 chronoforge.merge.capped=false chronoforge.merge.done=false chronoforge.merge.next_probe_in=1 chronoforge.merge.pending=3
claim#2 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
probe e2e.trace.parent#2 [consumer] chronoforge.merge.branches=1 chronoforge.merge.capped=false chronoforge.merge.done=false chronoforge.merge.next_probe_in=2 chronoforge.merge.pending=3 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<p> chronoforge.workflow.key=p chronoforge.workflow.name=e2e.trace.parent
  link -> start e2e.trace.parent
claim#3 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=3
run e2e.trace.child#1 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=1 chronoforge.run.outcome=completed chronoforge.run.steps.executed=1 chronoforge.run.steps.replayed=0 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<p$fan$each$$0> chronoforge.workflow.key=p$fan$each$$0 chronoforge.workflow.name=e2e.trace.child
  link -> spawn fan#1
  step square#1 [internal] chronoforge.step.attempt=1 chronoforge.step.name=square chronoforge.step.outcome=completed
run e2e.trace.child#2 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=1 chronoforge.run.outcome=completed chronoforge.run.steps.executed=1 chronoforge.run.steps.replayed=0 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<p$fan$each$$1> chronoforge.workflow.key=p$fan$each$$1 chronoforge.workflow.name=e2e.trace.child
  link -> spawn fan#1
  step square#2 [internal] chronoforge.step.attempt=1 chronoforge.step.name=square chronoforge.step.outcome=completed
run e2e.trace.child#3 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=1 chronoforge.run.outcome=completed chronoforge.run.steps.executed=1 chronoforge.run.steps.replayed=0 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<p$fan$each$$2> chronoforge.workflow.key=p$fan$each$$2 chronoforge.workflow.name=e2e.trace.child
  link -> spawn fan#2
  step square#3 [internal] chronoforge.step.attempt=1 chronoforge.step.name=square chronoforge.step.outcome=completed
claim#4 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
probe e2e.trace.parent#3 [consumer] chronoforge.merge.branches=1 chronoforge.merge.capped=false chronoforge.merge.done=true chronoforge.merge.pending=0 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<p> chronoforge.workflow.key=p chronoforge.workflow.name=e2e.trace.parent
  link -> start e2e.trace.parent
run e2e.trace.parent#2 [consumer] chronoforge.run.attempt=1 chronoforge.run.outcome=completed chronoforge.run.steps.executed=0 chronoforge.run.steps.replayed=0 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<p> chronoforge.workflow.key=p chronoforge.workflow.name=e2e.trace.parent
  link -> start e2e.trace.parent
`
	require.Equal(t, strings.TrimLeft(want, "\n"), tree)

	kids, err := store.ListWorkflows(context.Background(), storage.ListFilter{Name: child.Name()})
	require.NoError(t, err)
	secrets := []string{"p", fmt.Sprint(h.ID())}
	for _, k := range kids {
		secrets = append(secrets, k.Key, fmt.Sprint(k.ID))
	}
	metrics := renderMetrics(t, p, secrets)
	wantMetrics := `
chronoforge.claim.batch.size {workflow} {} count=4 sum=6
chronoforge.claim.lag s {chronoforge.workflow.name=e2e.trace.child} count=3 sum=3
chronoforge.claim.lag s {chronoforge.workflow.name=e2e.trace.parent} count=3 sum=0
chronoforge.merge.probe.pending {workflow} {chronoforge.workflow.name=e2e.trace.parent} count=3 sum=6
chronoforge.run.active {run} {chronoforge.workflow.name=e2e.trace.child} value=0
chronoforge.run.active {run} {chronoforge.workflow.name=e2e.trace.parent} value=0
chronoforge.run.duration s {chronoforge.run.outcome=completed chronoforge.workflow.name=e2e.trace.child} count=3
chronoforge.run.duration s {chronoforge.run.outcome=completed chronoforge.workflow.name=e2e.trace.parent} count=1
chronoforge.run.duration s {chronoforge.run.outcome=suspended chronoforge.suspension.reason=merge chronoforge.workflow.name=e2e.trace.parent} count=1
chronoforge.run.steps.replayed {step} {chronoforge.workflow.name=e2e.trace.child} count=3 sum=0
chronoforge.run.steps.replayed {step} {chronoforge.workflow.name=e2e.trace.parent} count=2 sum=0
chronoforge.spawn.batch.duration s {chronoforge.workflow.name=e2e.trace.parent} count=2
chronoforge.spawn.batch.size {workflow} {chronoforge.workflow.name=e2e.trace.parent} count=2 sum=3
chronoforge.spawn.children {workflow} {chronoforge.workflow.name=e2e.trace.parent} value=3
chronoforge.step.duration s {chronoforge.step.name=square chronoforge.step.outcome=completed chronoforge.workflow.name=e2e.trace.child} count=3
chronoforge.workflow.duration s {chronoforge.workflow.name=e2e.trace.child chronoforge.workflow.state=completed} count=3 sum=3
chronoforge.workflow.duration s {chronoforge.workflow.name=e2e.trace.parent chronoforge.workflow.state=completed} count=1 sum=3
`
	require.Equal(t, strings.TrimLeft(wantMetrics, "\n"), metrics)
}

// testE2ETraceRunsAsChildren: with WithRunsAsChildren every run is a child of the start, so
// the workflow is one trace; the caller's baggage, stored with the start, reaches the step
// functions of every run.
func testE2ETraceRunsAsChildren(t *testing.T, factory Factory) {
	var seen atomic.Value
	var tenant atomic.Value
	wf := sdk.New("e2e.trace.children", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Sleep(c, "nap", time.Second); err != nil {
			return 0, err
		}
		return sdk.Step(c, "look", func(ctx context.Context) (int, error) {
			seen.Store(trace.SpanContextFromContext(ctx))
			tenant.Store(baggage.FromContext(ctx).Member("tenant").Value())
			return 1, nil
		})
	})
	store := factory(t)
	clock := traceClock()
	t0 := clock.Now()
	p := newProcess(t)
	eng, err := sdk.NewEngine(store, append(p.options(), sdk.WithWorkflows(wf), sdk.WithClock(clock), sdk.WithRunsAsChildren())...)
	require.NoError(t, err)
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	_, err = wf.Start(baggage.ContextWithBaggage(context.Background(), bag), eng, "k", 0)
	require.NoError(t, err)
	require.Equal(t, 1, driveOnce(t, eng, clock, wf.Name()))
	clock.Advance(time.Second)
	require.Equal(t, 1, driveOnce(t, eng, clock, wf.Name()))

	tree := renderSpans(t, store, t0, p)
	want := `
start e2e.trace.children [producer] chronoforge.workflow.created=true chronoforge.workflow.id=<k> chronoforge.workflow.key=k chronoforge.workflow.name=e2e.trace.children
  run e2e.trace.children#1 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=0 chronoforge.run.next_run_at=t0+1s chronoforge.run.outcome=suspended chronoforge.run.steps.executed=0 chronoforge.run.steps.replayed=0 chronoforge.suspension.reason=sleep chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<k> chronoforge.workflow.key=k chronoforge.workflow.name=e2e.trace.children
    event chronoforge.wait chronoforge.suspension.reason=sleep chronoforge.wait.step=nap chronoforge.wait.wake_at=t0+1s
  run e2e.trace.children#2 [consumer] chronoforge.run.attempt=1 chronoforge.run.claim_lag=0 chronoforge.run.outcome=completed chronoforge.run.steps.executed=1 chronoforge.run.steps.replayed=0 chronoforge.worker.owner=worker-1 chronoforge.workflow.id=<k> chronoforge.workflow.key=k chronoforge.workflow.name=e2e.trace.children
    step look [internal] chronoforge.step.attempt=1 chronoforge.step.name=look chronoforge.step.outcome=completed
claim#1 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
claim#2 [client] chronoforge.claim.limit=10 chronoforge.worker.owner=worker-1 messaging.batch.message_count=1
`
	require.Equal(t, strings.TrimLeft(want, "\n"), tree)
	step := findSpans(p, "step look")
	require.Len(t, step, 1)
	require.Equal(t, step[0].SpanContext(), seen.Load(), "the step's function runs in its span")
	require.Equal(t, "acme", tenant.Load(), "the start's baggage reaches the steps of later runs")
}

// findSpans returns the ended spans of p named name, in start order.
func findSpans(p *process, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range p.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartTime().Before(out[j].StartTime()) })
	return out
}

// renderSpans draws the ended spans of the processes as a forest, one line per span in
// start order, children indented under their parent: name (numbered "#n" when repeated),
// kind, error status, and attributes sorted by key, times as offsets from the clock's start
// and workflow IDs as the key they belong to. Links and events follow, indented.
func renderSpans(t *testing.T, store storage.Storage, t0 time.Time, procs ...*process) string {
	t.Helper()
	var spans []sdktrace.ReadOnlySpan
	for _, p := range procs {
		// Start order within a process; the processes are not concurrent here.
		order := map[trace.SpanID]int{}
		for i, s := range p.spans.Started() {
			order[s.SpanContext().SpanID()] = i
		}
		ended := p.spans.Ended()
		require.Len(t, ended, len(order), "every span started was ended")
		sort.SliceStable(ended, func(i, j int) bool {
			return order[ended[i].SpanContext().SpanID()] < order[ended[j].SpanContext().SpanID()]
		})
		spans = append(spans, ended...)
	}
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartTime().Before(spans[j].StartTime()) })

	// Labels: the name, numbered when the name repeats.
	total, seen := map[string]int{}, map[string]int{}
	for _, s := range spans {
		total[s.Name()]++
	}
	label := map[trace.SpanID]string{}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	var roots []sdktrace.ReadOnlySpan
	byID := map[trace.SpanID]bool{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = true
	}
	for _, s := range spans {
		l := s.Name()
		if total[l] > 1 {
			seen[l]++
			l = fmt.Sprintf("%s#%d", l, seen[l])
		}
		label[s.SpanContext().SpanID()] = l
		if s.Parent().IsValid() && byID[s.Parent().SpanID()] {
			children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
		} else {
			roots = append(roots, s)
		}
	}
	keys := map[int64]string{}
	keyOf := func(id int64) string {
		if k, ok := keys[id]; ok {
			return k
		}
		wf, err := store.GetWorkflow(context.Background(), id)
		require.NoError(t, err)
		keys[id] = wf.Key
		return wf.Key
	}
	value := func(kv attribute.KeyValue) string {
		switch kv.Key {
		case telemetry.AttrWorkflowID:
			return "<" + keyOf(kv.Value.AsInt64()) + ">"
		case telemetry.AttrRunNextAt, telemetry.AttrWaitWakeAt:
			at, err := time.Parse(time.RFC3339Nano, kv.Value.AsString())
			require.NoError(t, err)
			return "t0+" + at.Sub(t0).String()
		}
		return kv.Value.Emit()
	}
	attrs := func(kvs []attribute.KeyValue) string {
		kvs = slices.Clone(kvs)
		sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
		var b strings.Builder
		for _, kv := range kvs {
			fmt.Fprintf(&b, " %s=%s", kv.Key, value(kv))
		}
		return b.String()
	}
	var b strings.Builder
	var draw func(s sdktrace.ReadOnlySpan, depth int)
	draw = func(s sdktrace.ReadOnlySpan, depth int) {
		pad := strings.Repeat("  ", depth)
		status := ""
		if s.Status().Code == codes.Error {
			status = " error(" + s.Status().Description + ")"
		}
		fmt.Fprintf(&b, "%s%s [%s]%s%s\n", pad, label[s.SpanContext().SpanID()], s.SpanKind(), status, attrs(s.Attributes()))
		for _, l := range s.Links() {
			to := label[l.SpanContext.SpanID()]
			if to == "" {
				to = "?"
			}
			fmt.Fprintf(&b, "%s  link -> %s\n", pad, to)
		}
		for _, e := range s.Events() {
			fmt.Fprintf(&b, "%s  event %s%s\n", pad, e.Name, attrs(e.Attributes))
		}
		for _, c := range children[s.SpanContext().SpanID()] {
			draw(c, depth+1)
		}
	}
	for _, r := range roots {
		draw(r, 0)
	}
	return b.String()
}

// renderMetrics collects p's metrics and draws one line per data point, sorted: name, unit,
// attributes, and the count (histograms; their sum too unless it is a real-time duration)
// or value. It fails t if a metric is not in telemetry.Metrics, its unit differs, a point
// carries an attribute key that is not one of the metric's labels, or an attribute value
// is one of secrets (workflow keys and IDs).
func renderMetrics(t *testing.T, p *process, secrets []string) string {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, p.reader.Collect(context.Background(), &rm))
	known := map[string]telemetry.Metric{}
	for _, m := range telemetry.Metrics() {
		known[m.Name] = m
	}
	// Engine-clock durations are exact under a fake clock; the others are real time.
	exact := map[string]bool{telemetry.MetricClaimLag: true, telemetry.MetricWorkflowDuration: true}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, telemetry.ScopeName, sm.Scope.Name, "instrumentation scope")
		for _, m := range sm.Metrics {
			def, ok := known[m.Name]
			require.True(t, ok, "metric %s is not in telemetry.Metrics", m.Name)
			require.Equal(t, def.Unit, m.Unit, "unit of %s", m.Name)
			point := func(set attribute.Set, tail string) {
				var kv []string
				for _, a := range set.ToSlice() {
					require.Contains(t, def.Labels, a.Key, "metric %s carries label %s", m.Name, a.Key)
					require.NotContains(t, secrets, a.Value.Emit(), "metric %s label %s carries a key or ID", m.Name, a.Key)
					kv = append(kv, fmt.Sprintf("%s=%s", a.Key, a.Value.Emit()))
				}
				lines = append(lines, fmt.Sprintf("%s %s {%s} %s", m.Name, m.Unit, strings.Join(kv, " "), tail))
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					tail := fmt.Sprintf("count=%d", dp.Count)
					if exact[m.Name] {
						tail += fmt.Sprintf(" sum=%g", dp.Sum)
					}
					point(dp.Attributes, tail)
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					point(dp.Attributes, fmt.Sprintf("count=%d sum=%d", dp.Count, dp.Sum))
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					point(dp.Attributes, fmt.Sprintf("value=%d", dp.Value))
				}
			default:
				t.Fatalf("metric %s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
