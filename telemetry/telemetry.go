package telemetry

import (
	"context"
	"encoding/json"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options are what an application configures; zero values mean the global providers.
type Options struct {
	// TracerProvider makes the tracer (default: otel.GetTracerProvider(), which forwards to
	// whatever otel.SetTracerProvider installs, and is a no-op until then).
	TracerProvider trace.TracerProvider
	// MeterProvider makes the meter (default: otel.GetMeterProvider(), likewise).
	MeterProvider metric.MeterProvider
	// Propagator encodes the trace context stored on workflow rows (default: the global
	// propagator; while no global one is set, W3C trace context and baggage).
	Propagator propagation.TextMapPropagator
	// RunsAsChildren makes each run a child of the context stored on its workflow row (its
	// start, or its spawn batch) instead of a new root linked to it: one trace per workflow,
	// or per tree of workflows.
	RunsAsChildren bool
}

// Telemetry is the instrumentation of one engine. It is safe for concurrent use. Its methods
// do nothing measurable when no provider is configured.
type Telemetry struct {
	tracer trace.Tracer
	// off reports that no span can record: see New.
	off      func() bool
	meter    metric.Meter
	prop     propagation.TextMapPropagator
	propSet  bool
	children bool
	m        instruments
	cache    labelCache
}

// w3c is the propagator used while the application configures none.
var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// New builds the instrumentation from o. It fails only if the meter refuses an instrument.
func New(o Options) (*Telemetry, error) {
	tp, mp := o.TracerProvider, o.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	t := &Telemetry{
		off:      tracingOff(o.TracerProvider),
		tracer:   tp.Tracer(ScopeName),
		meter:    mp.Meter(ScopeName),
		prop:     o.Propagator,
		propSet:  o.Propagator != nil,
		children: o.RunsAsChildren,
	}
	if t.prop == nil {
		t.prop = otel.GetTextMapPropagator()
	}
	m, err := newInstruments(t.meter)
	if err != nil {
		return nil, err
	}
	t.m = m
	return t, nil
}

// tracingOff returns the test that no span can record, so that none is started at all: a
// span of the global provider allocates even while that provider is a no-op. It holds for
// the no-op provider (go.opentelemetry.io/otel/trace/noop), and for the global default
// while the application has not replaced it: otel.SetTracerProvider installs another
// provider, which otel.GetTracerProvider then returns and the test sees at once.
func tracingOff(configured trace.TracerProvider) func() bool {
	switch configured.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return func() bool { return true }
	case nil:
		def := otel.GetTracerProvider()
		// The default is otel's internal delegating provider. Should its type name ever
		// change, spans are simply always started: correct, only dearer (and
		// TestNoProviderAllocatesNothing says so).
		if fmt.Sprintf("%T", def) != "*global.tracerProvider" {
			return func() bool { return false } // the application set a global provider before
		}
		return func() bool { return otel.GetTracerProvider() == def }
	}
	return func() bool { return false }
}

// start starts a span with the tracer, or returns ctx and a non-recording span at no cost
// when tracing is off.
// The span is named SpanName(op, target), built only then.
func (t *Telemetry) start(ctx context.Context, op, target string, opts []trace.SpanStartOption) (context.Context, trace.Span) {
	if t.off() {
		return ctx, trace.SpanFromContext(context.Background()) // the shared no-op span
	}
	return t.tracer.Start(ctx, SpanName(op, target), opts...)
}

// Tracer returns the tracer of scope ScopeName.
func (t *Telemetry) Tracer() trace.Tracer { return t.tracer }

// Meter returns the meter of scope ScopeName.
func (t *Telemetry) Meter() metric.Meter { return t.meter }

// propagator returns the configured propagator, or W3C trace context and baggage when the
// default global one has nothing set (it then injects nothing).
func (t *Telemetry) propagator() propagation.TextMapPropagator {
	if !t.propSet && len(t.prop.Fields()) == 0 {
		return w3c
	}
	return t.prop
}

// Inject encodes the trace context and baggage of ctx for a workflow row: a JSON object of
// the propagator's headers ({"traceparent": "00-...", "baggage": "..."}), at most limit
// bytes (baggage is left out if it does not fit). It returns nil when there is nothing to
// carry (no valid span and no baggage), so rows written without tracing carry nothing.
func (t *Telemetry) Inject(ctx context.Context, limit int) []byte {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return nil
	}
	carrier := propagation.MapCarrier{}
	t.propagator().Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	data, err := json.Marshal(carrier)
	if err == nil && len(data) <= limit {
		return data
	}
	// Too large: baggage is what grows; keep the trace context alone.
	carrier = propagation.MapCarrier{}
	t.propagator().Inject(baggage.ContextWithoutBaggage(ctx), carrier)
	if data, err = json.Marshal(carrier); err != nil || len(carrier) == 0 || len(data) > limit {
		return nil
	}
	return data
}

// Extract decodes a context stored by Inject. It returns ctx with the stored baggage added
// (so step functions see it) and the stored span context (invalid when none was stored or
// it cannot be read: telemetry never fails a run).
func (t *Telemetry) Extract(ctx context.Context, stored []byte) (context.Context, trace.SpanContext) {
	if len(stored) == 0 {
		return ctx, trace.SpanContext{}
	}
	carrier := propagation.MapCarrier{}
	if err := json.Unmarshal(stored, &carrier); err != nil {
		return ctx, trace.SpanContext{}
	}
	got := t.propagator().Extract(context.Background(), carrier)
	if b := baggage.FromContext(got); b.Len() > 0 {
		ctx = baggage.ContextWithBaggage(ctx, b)
	}
	return ctx, trace.SpanContextFromContext(got)
}

// TraceID returns the trace ID of a context stored by Inject, as operators look it up in a
// tracing backend (the W3C traceparent's 32 hex digits), or "" when none was stored or it
// cannot be read.
func TraceID(stored []byte) string {
	if len(stored) == 0 {
		return ""
	}
	carrier := propagation.MapCarrier{}
	if json.Unmarshal(stored, &carrier) != nil {
		return ""
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
	if !sc.TraceID().IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
