package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/chronoforge/chronoforge/telemetry"
)

// The tests of this file run in order: the last one sets the global tracer provider, which
// cannot be unset, so those before it see the process as an application that set none.

// everything exercises every helper once, as a run with a step, a spawn, a probe and a claim.
// The run lives in r, as it lives in the SDK's (heap-allocated) run.
func everything(tel *telemetry.Telemetry, r *telemetry.Run) {
	ctx := context.Background()
	ctx, *r = tel.StartRun(ctx, telemetry.RunStart{Workflow: telemetry.Workflow{Name: "wf", Key: "k", ID: 1}, Attempt: 1, Owner: "w", HasLag: true})
	sctx, s := r.StartStep(ctx, "step", 1)
	s.End(sctx, telemetry.StepCompleted, nil, "")
	bctx, b := r.StartSpawn(ctx, "branch", "each", 0, 10)
	_ = tel.Inject(bctx, 1<<10)
	b.End(bctx, 10, nil)
	pctx, p := r.StartProbe(ctx, 1)
	p.End(pctx, telemetry.ProbeEnd{Pending: 3, NextIn: time.Second})
	r.Wait(telemetry.ReasonSleep, "nap", time.Time{})
	r.End(ctx, telemetry.RunEnd{Outcome: telemetry.OutcomeSuspended, Reason: telemetry.ReasonSleep})
	pctx, p = tel.StartProbe(context.Background(), telemetry.Workflow{Name: "wf"}, nil, "w", 1)
	p.End(pctx, telemetry.ProbeEnd{Done: true})
	tel.Claimed(context.Background(), time.Now(), "w", 8, 3)
	sctx, span := tel.StartProducer(context.Background(), telemetry.OpStart, telemetry.Workflow{Name: "wf", Key: "k"})
	_ = tel.Inject(sctx, 1<<10)
	telemetry.EndStart(span, telemetry.Workflow{ID: 1}, true, nil, "")
}

// TestNoProviderAllocatesNothing: with no provider configured (the global ones, never set)
// a run's whole instrumentation allocates nothing.
func TestNoProviderAllocatesNothing(t *testing.T) {
	tel, err := telemetry.New(telemetry.Options{})
	require.NoError(t, err)
	var r telemetry.Run
	require.Zero(t, testing.AllocsPerRun(100, func() { everything(tel, &r) }))
	// An explicit no-op provider is as cheap.
	tel, err = telemetry.New(telemetry.Options{TracerProvider: noop.NewTracerProvider()})
	require.NoError(t, err)
	require.Zero(t, testing.AllocsPerRun(100, func() { everything(tel, &r) }))
}

// BenchmarkNoProvider: the cost of a run's whole instrumentation with no provider.
func BenchmarkNoProvider(b *testing.B) {
	tel, err := telemetry.New(telemetry.Options{})
	require.NoError(b, err)
	var r telemetry.Run
	b.ReportAllocs()
	for b.Loop() {
		everything(tel, &r)
	}
}

// BenchmarkRecording: the same with a recording SDK tracer provider.
func BenchmarkRecording(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(telemetry.Options{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	require.NoError(b, err)
	var r telemetry.Run
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		everything(tel, &r)
		if i++; i%1000 == 0 {
			rec.Reset()
		}
	}
}

func TestInjectExtractDefaultW3C(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	// No propagator configured and no global one set: W3C trace context and baggage.
	tel, err := telemetry.New(telemetry.Options{TracerProvider: tp})
	require.NoError(t, err)
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	ctx, span := tp.Tracer("t").Start(baggage.ContextWithBaggage(context.Background(), bag), "op")
	defer span.End()

	stored := tel.Inject(ctx, 1<<10)
	var carrier map[string]string
	require.NoError(t, json.Unmarshal(stored, &carrier))
	require.Equal(t, "tenant=acme", carrier["baggage"])
	require.True(t, strings.HasPrefix(carrier["traceparent"], "00-"+span.SpanContext().TraceID().String()+"-"+span.SpanContext().SpanID().String()))

	got, sc := tel.Extract(context.Background(), stored)
	require.Equal(t, span.SpanContext().TraceID(), sc.TraceID())
	require.Equal(t, span.SpanContext().SpanID(), sc.SpanID())
	require.True(t, sc.IsRemote())
	require.Equal(t, "acme", baggage.FromContext(got).Member("tenant").Value())
	require.False(t, trace.SpanContextFromContext(got).IsValid(), "Extract adds the baggage only; the caller decides link or parent")

	// Too large for the limit: the baggage is left out, the trace context kept.
	small := tel.Inject(ctx, len(stored)-1)
	require.NotNil(t, small)
	require.NotContains(t, string(small), "baggage")
	require.Nil(t, tel.Inject(ctx, 10), "nothing fits")

	// Nothing to carry, nothing stored; unreadable input is no context, not an error.
	require.Nil(t, tel.Inject(context.Background(), 1<<10))
	_, sc = tel.Extract(context.Background(), []byte("{not json"))
	require.False(t, sc.IsValid())
}

func TestInjectConfiguredPropagator(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	tel, err := telemetry.New(telemetry.Options{TracerProvider: tp, Propagator: propagation.TraceContext{}})
	require.NoError(t, err)
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	ctx, span := tp.Tracer("t").Start(baggage.ContextWithBaggage(context.Background(), bag), "op")
	defer span.End()
	stored := tel.Inject(ctx, 1<<10)
	require.Contains(t, string(stored), "traceparent")
	require.NotContains(t, string(stored), "baggage", "the configured propagator decides what is stored")
}

func TestMetricsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range telemetry.Metrics() {
		require.False(t, seen[m.Name], "metric %s listed twice", m.Name)
		seen[m.Name] = true
		require.True(t, strings.HasPrefix(m.Name, "chronoforge."), m.Name)
		require.True(t, m.Unit == "s" || strings.HasPrefix(m.Unit, "{"), "unit of %s: %s", m.Name, m.Unit)
		require.Contains(t, []string{"histogram", "counter", "updowncounter", "gauge"}, m.Kind, m.Name)
		for _, l := range m.Labels {
			require.NotContains(t, []string{string(telemetry.AttrWorkflowKey), string(telemetry.AttrWorkflowID), string(telemetry.AttrErrorType)}, string(l),
				"metric %s is labelled with a key, an ID or an error", m.Name)
		}
	}
}

// TestREADMEMetricTable: the README's metric table lists every metric with its unit.
func TestREADMEMetricTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	for _, m := range telemetry.Metrics() {
		require.Contains(t, string(readme), fmt.Sprintf("| `%s` | %s |", m.Name, m.Unit), "README row of %s", m.Name)
	}
}

func TestQuietHandler(t *testing.T) {
	var buf bytes.Buffer
	var quiet atomic.Bool
	log := slog.New(telemetry.Quiet(slog.NewTextHandler(&buf, nil), &quiet)).With("workflow", "wf")
	quiet.Store(true)
	log.Info("dropped")
	quiet.Store(false)
	log.WithGroup("g").Info("kept", "n", 1)
	require.NotContains(t, buf.String(), "dropped")
	require.Contains(t, buf.String(), "msg=kept workflow=wf g.n=1")
}

func TestSpanHelpersRecord(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(telemetry.Options{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	require.NoError(t, err)
	everything(tel, new(telemetry.Run))
	var names []string
	for _, s := range rec.Ended() {
		names = append(names, s.Name()+" "+s.SpanKind().String())
	}
	require.ElementsMatch(t, []string{
		"step step internal", "spawn branch producer", "probe wf internal", "run wf consumer",
		"probe wf consumer", "claim client", "start wf producer",
	}, names)

	// A failed step records its error, class and outcome.
	ctx, r := tel.StartRun(context.Background(), telemetry.RunStart{Workflow: telemetry.Workflow{Name: "wf"}})
	sctx, s := r.StartStep(ctx, "s", 2)
	s.End(sctx, telemetry.StepRetrying, errors.New("boom"), "*errors.errorString")
	r.End(ctx, telemetry.RunEnd{Outcome: telemetry.OutcomeFailed, Err: errors.New("bad"), ErrType: "*errors.errorString"})
	for _, sp := range rec.Ended() {
		if sp.Name() == "step s" {
			require.Equal(t, "boom", sp.Status().Description)
			require.Len(t, sp.Events(), 1)
			require.Equal(t, "exception", sp.Events()[0].Name)
		}
	}
}

// TestGlobalProviderSetLater runs last: an engine built before the application sets its
// global provider traces from the moment it is set.
func TestGlobalProviderSetLater(t *testing.T) {
	tel, err := telemetry.New(telemetry.Options{})
	require.NoError(t, err)
	_, r := tel.StartRun(context.Background(), telemetry.RunStart{Workflow: telemetry.Workflow{Name: "wf"}})
	require.False(t, r.Tracing())
	r.End(context.Background(), telemetry.RunEnd{Outcome: telemetry.OutcomeCompleted})

	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	_, r = tel.StartRun(context.Background(), telemetry.RunStart{Workflow: telemetry.Workflow{Name: "wf"}})
	require.True(t, r.Tracing())
	r.End(context.Background(), telemetry.RunEnd{Outcome: telemetry.OutcomeCompleted})
	require.Len(t, rec.Ended(), 1)
	require.Equal(t, "run wf", rec.Ended()[0].Name())
}

// TestTraceID reads the trace ID of a stored context, and "" from anything else.
func TestTraceID(t *testing.T) {
	for in, want := range map[string]string{
		`{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`: "4bf92f3577b34da6a3ce929d0e0e4736",
		`{"traceparent":"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}`: "",
		`{"traceparent":"bogus"}`: "",
		`not json`:                "",
		``:                        "",
	} {
		if got := telemetry.TraceID([]byte(in)); got != want {
			t.Fatalf("TraceID(%s) = %q, want %q", in, got, want)
		}
	}
}
