package sdk_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// records is a slog.Handler that keeps every record with its attributes (those added with
// Logger.With included), flattened to strings.
type records struct {
	mu    sync.Mutex
	attrs []slog.Attr
	out   *[]map[string]string
}

func newRecords() *records { return &records{out: &[]map[string]string{}} }

func (h *records) Enabled(context.Context, slog.Level) bool { return true }

func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[string]string{"msg": r.Message}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	*h.out = append(*h.out, m)
	return nil
}

func (h *records) WithAttrs(as []slog.Attr) slog.Handler {
	return &records{attrs: append(append([]slog.Attr(nil), h.attrs...), as...), out: h.out}
}

func (h *records) WithGroup(string) slog.Handler { return h }

func (h *records) all() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]string(nil), *h.out...)
}

func (h *records) messages() []string {
	var out []string
	for _, r := range h.all() {
		out = append(out, r["msg"])
	}
	return out
}

// TestLoggerQuietWhileReplaying: workflow code logs each line once, in the run that first
// reaches it, not again on every replay; records carry the workflow and the run's trace.
func TestLoggerQuietWhileReplaying(t *testing.T) {
	logs := newRecords()
	var replaying []bool
	wf := sdk.New("log.quiet", func(c *sdk.Context, _ int) (int, error) {
		log := c.Logger()
		replaying = append(replaying, c.Replaying())
		log.Info("begin")
		a, err := sdk.Step(c, "a", func(context.Context) (int, error) { return 1, nil })
		if err != nil {
			return 0, err
		}
		log.Info("after a")
		if err := sdk.Sleep(c, "nap", time.Minute); err != nil {
			log.Info("sleeping")
			return 0, err
		}
		log.Info("after nap")
		replaying = append(replaying, c.Replaying())
		b, err := sdk.Step(c, "b", func(context.Context) (int, error) { return 2, nil })
		if err != nil {
			return 0, err
		}
		log.Info("done")
		return a + b, nil
	})
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	e := newEnv(t, sdk.WithWorkflows(wf), sdk.WithLogger(slog.New(logs)), sdk.WithTracerProvider(tp))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	e.clock.Advance(time.Minute)
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, out)

	require.Equal(t, []string{"begin", "after a", "sleeping", "after nap", "done"}, logs.messages(),
		"the second run replays begin and after a quietly, and logs from the sleep it ends on")
	require.Equal(t, []bool{false, true, false}, replaying, "Replaying: first run no; second run yes until the sleep ends")

	var runs []sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() == "run log.quiet" {
			runs = append(runs, s)
		}
	}
	require.Len(t, runs, 2)
	for i, r := range logs.all() {
		require.Equal(t, "log.quiet", r["workflow"], r["msg"])
		require.Equal(t, "k", r["key"], r["msg"])
		require.Equal(t, "1", r["id"], r["msg"])
		run := runs[0]
		if i >= 3 {
			run = runs[1]
		}
		require.Equal(t, run.SpanContext().TraceID().String(), r[telemetry.LogTraceID], r["msg"])
		require.Equal(t, run.SpanContext().SpanID().String(), r[telemetry.LogSpanID], r["msg"])
	}
}

// TestStepFailureLogCarriesStepSpan: the engine's record of a failed step names the step
// and carries the step span's IDs.
func TestStepFailureLogCarriesStepSpan(t *testing.T) {
	logs := newRecords()
	failed := false
	wf := sdk.New("log.step", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "flaky", func(context.Context) (int, error) {
			if !failed {
				failed = true
				return 0, errors.New("try again")
			}
			return 1, nil
		}, sdk.WithRetry(sdk.Policy{MaxAttempts: 2, Base: time.Second, Cap: time.Second}))
	})
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	e := newEnv(t, sdk.WithWorkflows(wf), sdk.WithLogger(slog.New(logs)), sdk.WithTracerProvider(tp))
	_, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.drain()
	var step sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() == "step flaky" {
			step = s
		}
	}
	require.NotNil(t, step)
	var got map[string]string
	for _, r := range logs.all() {
		if r["msg"] == "step failed; will retry" {
			got = r
		}
	}
	require.NotNil(t, got, "the failure is logged")
	require.Equal(t, "flaky", got["step"])
	require.Equal(t, "log.step", got["workflow"])
	require.Equal(t, "try again", got["error"])
	require.Equal(t, step.SpanContext().SpanID().String(), got[telemetry.LogSpanID])
	require.Equal(t, step.SpanContext().TraceID().String(), got[telemetry.LogTraceID])
}

// TestNoProviderStoresNoTraceContext: with no provider configured (the global no-op ones)
// the engine runs as before and writes no trace context on the rows it creates.
func TestNoProviderStoresNoTraceContext(t *testing.T) {
	child := sdk.New("plain.child", func(c *sdk.Context, n int) (int, error) { return n, nil })
	wf := sdk.New("plain", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", child, 1) }); err != nil {
			return 0, err
		}
		return 0, sdk.Merge(c, "b")
	})
	e := newEnv(t, sdk.WithWorkflows(wf, child))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	require.Equal(t, storage.StateCompleted, e.state(h.ID()).State)
	all, err := e.store.ListWorkflows(ctx, storage.ListFilter{})
	require.NoError(t, err)
	require.Len(t, all, 2)
	for _, w := range all {
		require.Nil(t, w.TraceContext, "workflow %s", w.Key)
	}
}

// TestObserveQueue: the opt-in gauges report the queue by state, the due workflows and how
// long the oldest has been due, by the engine's clock.
func TestObserveQueue(t *testing.T) {
	wf := sdk.New("queue.wf", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "s", func(context.Context) (int, error) { return 0, sdk.Permanent(errors.New("stuck")) })
	})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	e := newEnv(t, sdk.WithWorkflows(wf), sdk.WithMeterProvider(mp))
	_, err := e.eng.ObserveQueue(1001)
	require.ErrorIs(t, err, sdk.ErrInvalid)
	reg, err := e.eng.ObserveQueue(2)
	require.NoError(t, err)
	defer func() { require.NoError(t, reg.Unregister()) }()

	h, err := wf.Start(ctx, e.eng, "stalls", 0)
	require.NoError(t, err)
	e.drain()
	require.Equal(t, storage.StateStalled, e.state(h.ID()).State)
	for _, k := range []string{"a", "b", "c"} {
		_, err := wf.Start(ctx, e.eng, k, 0)
		require.NoError(t, err)
		e.clock.Advance(10 * time.Second)
	}

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	got := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					state, _ := dp.Attributes.Value(telemetry.AttrWorkflowState)
					got[m.Name+" "+state.AsString()] = float64(dp.Value)
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					got[m.Name] = dp.Value
				}
			}
		}
	}
	require.Equal(t, map[string]float64{
		telemetry.MetricQueueDepth + " idle":    2, // three idle, counted up to the cap of 2
		telemetry.MetricQueueDepth + " running": 0,
		telemetry.MetricQueueDepth + " stalled": 1,
		telemetry.MetricQueueDue + " ":          2,
		telemetry.MetricQueueOldestDueAge:       30, // "a", due since it started 30 s ago
	}, got)
}

// TestRepeatTickSpans: each tick is a step span named after the Repeat's record, with its
// outcome; the tick's function gets the span's context.
func TestRepeatTickSpans(t *testing.T) {
	ticks := 0
	wf := sdk.New("span.repeat", func(c *sdk.Context, _ int) (int, error) {
		err := sdk.Repeat(c, "beat", sdk.Every(time.Minute), func(time.Time) bool { return ticks >= 2 },
			func(ctx context.Context, _ time.Time) error {
				ticks++
				if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
					return errors.New("no span in the tick's context")
				}
				return nil
			}, sdk.WithRetry(sdk.NoRetry))
		return ticks, err
	})
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	e := newEnv(t, sdk.WithWorkflows(wf), sdk.WithTracerProvider(tp))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	for e.next(h.ID(), 0) {
	}
	require.Empty(t, e.errors(h.ID()))
	n := 0
	for _, s := range spans.Ended() {
		if s.Name() == "step repeat$beat" {
			n++
			require.Contains(t, s.Attributes(), telemetry.AttrStepOutcome.String(string(telemetry.StepCompleted)))
		}
	}
	require.Equal(t, 2, n)
}
