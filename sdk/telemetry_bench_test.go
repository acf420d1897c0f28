package sdk_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// BenchmarkTelemetryThreeSteps measures one op = Start, Claim and Execute of a three-step
// workflow (one run, one final write) on the in-memory store, so that what telemetry costs
// is not hidden behind disk or network time:
//
//   - none: no provider configured (the global ones, never set): every span and instrument
//     is a no-op;
//   - recording: an SDK tracer provider recording every span in memory (tracetest) and an
//     SDK meter provider with a manual reader: the full cost of the spans, attributes and
//     measurements, without an exporter's.
//
// go test -run '^$' -bench TelemetryThreeSteps -benchmem ./sdk/
func BenchmarkTelemetryThreeSteps(b *testing.B) {
	for _, mode := range []string{"none", "recording"} {
		b.Run(mode, func(b *testing.B) {
			var opts []sdk.Option
			every := func() {}
			if mode == "recording" {
				spans := tracetest.NewSpanRecorder()
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
				opts = append(opts, sdk.WithTracerProvider(tp), sdk.WithMeterProvider(mp))
				every = spans.Reset // the recorder keeps every span: drop them so memory stays flat
			}
			benchThreeSteps(b, every, opts...)
		})
	}
}

// benchThreeSteps runs the benchmark, calling every once per 1,000 ops.
func benchThreeSteps(b *testing.B, every func(), opts ...sdk.Option) {
	wf := sdk.New("bench.three", func(c *sdk.Context, in int) (int, error) {
		x := in
		for _, name := range []string{"one", "two", "three"} {
			v, err := sdk.Step(c, name, func(context.Context) (int, error) { return x + 1, nil })
			if err != nil {
				return 0, err
			}
			x = v
		}
		return x, nil
	})
	store := memory.New()
	defer store.Close()
	clock := sdk.NewFakeClock(t0)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := sdk.NewEngine(store, append([]sdk.Option{sdk.WithWorkflows(wf), sdk.WithClock(clock), sdk.WithLogger(quiet)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	names := eng.Names()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wf.Start(ctx, eng, fmt.Sprint("k", i), i); err != nil {
			b.Fatal(err)
		}
		claimed, err := eng.Claim(ctx, storage.ClaimRequest{Owner: "bench", Limit: 1, Names: names, TTL: time.Minute, Now: clock.Now()})
		if err != nil || len(claimed) != 1 {
			b.Fatal(len(claimed), err)
		}
		if err := eng.Execute(ctx, claimed[0]); err != nil {
			b.Fatal(err)
		}
		if i++; i%1000 == 0 {
			every()
		}
	}
}
