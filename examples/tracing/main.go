// Command tracing runs a small order workflow with OpenTelemetry wired in and shows what it
// records: a step that fails once and is retried, a durable sleep and a branch of two
// children, on an embedded bbolt file in a temporary directory, driven by one in-process
// worker.
//
//	go run ./examples/tracing                  # spans printed to stdout, then a metrics summary
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 go run ./examples/tracing
//	                                           # spans sent to an OTLP/HTTP collector instead
//
// The engine gets the application's providers through sdk.WithTracerProvider and
// sdk.WithMeterProvider. The start is a producer span inside the caller's "checkout" span;
// every run of the workflow is a trace of its own that links back to it, and each child's
// runs link to the spawn batch that created them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// Order is the workflow's input.
type Order struct {
	ID    string   `json:"id"`
	Email string   `json:"email"`
	Items []string `json:"items"`
}

// reserveCalls makes the first reservation fail, so the step is retried.
var reserveCalls atomic.Int32

// Notify is a child workflow: one notification.
var Notify = sdk.New("tracing.notify", func(c *sdk.Context, channel string) (string, error) {
	return sdk.Step(c, "send", func(ctx context.Context) (string, error) {
		return "sent via " + channel, nil
	})
})

// Fulfil reserves stock (failing once), waits a moment, notifies on two channels in a
// branch, and confirms.
var Fulfil = sdk.New("tracing.order", func(c *sdk.Context, in Order) (string, error) {
	c.Logger().Info("fulfilling order", "items", len(in.Items)) // logged once, not on replays
	reservation, err := sdk.Step(c, "reserve", func(ctx context.Context) (string, error) {
		if reserveCalls.Add(1) == 1 {
			return "", errors.New("warehouse busy")
		}
		return "res-" + in.ID, nil
	}, sdk.WithRetry(sdk.Policy{MaxAttempts: 3, Base: 200 * time.Millisecond, Cap: time.Second}))
	if err != nil {
		return "", err
	}
	if err := sdk.Sleep(c, "cool-off", 300*time.Millisecond); err != nil {
		return "", err
	}
	if err := sdk.Branch(c, "notify", func(b *sdk.BranchScope) error {
		return sdk.SpawnEach(b, "channel", sdk.SliceSource([]string{"email", "sms"}), func(ch string) (sdk.Child, error) {
			return sdk.NewChild(Notify, ch), nil
		})
	}, sdk.ProbeInterval(50*time.Millisecond, 200*time.Millisecond)); err != nil {
		return "", err
	}
	if err := sdk.Merge(c, "notify"); err != nil {
		return "", err
	}
	return sdk.Step(c, "confirm", func(ctx context.Context) (string, error) {
		return "order " + in.ID + " confirmed with " + reservation, nil
	})
})

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tracing:", err)
		os.Exit(1)
	}
}

// run runs the example, writing spans (unless exported over OTLP) and a summary to out.
func run(ctx context.Context, out io.Writer) error {
	dir, err := os.MkdirTemp("", "chronoforge-tracing-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := bolt.Open(filepath.Join(dir, "tracing.db"))
	if err != nil {
		return err
	}
	defer store.Close()

	// Spans go to stdout, or to an OTLP/HTTP collector when the standard variable names one
	// (the exporter reads OTEL_EXPORTER_OTLP_* itself).
	var exporter sdktrace.SpanExporter
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		exporter, err = otlptracehttp.New(ctx)
		fmt.Fprintln(out, "exporting spans to", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	} else {
		exporter, err = stdouttrace.New(stdouttrace.WithWriter(out), stdouttrace.WithPrettyPrint())
	}
	if err != nil {
		return err
	}
	res := resource.NewSchemaless(attribute.String("service.name", "chronoforge-tracing-example"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	// The engine's records carry the workflow, key, id and the trace and span IDs.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	eng, err := sdk.NewEngine(store,
		sdk.WithWorkflows(Fulfil, Notify),
		sdk.WithLogger(logger),
		sdk.WithTracerProvider(tp),
		sdk.WithMeterProvider(mp),
	)
	if err != nil {
		return err
	}
	worker, err := dispatch.New(eng, dispatch.PollInterval(10*time.Millisecond, 100*time.Millisecond),
		dispatch.MergeWakeEvery(10*time.Millisecond))
	if err != nil {
		return err
	}
	workerCtx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- worker.Run(workerCtx) }()

	// The caller's own span: the start is a producer span inside it.
	callCtx, checkout := tp.Tracer("example").Start(ctx, "checkout")
	h, err := Fulfil.Start(callCtx, eng, "order-7", Order{ID: "7", Email: "ada@example.com", Items: []string{"book", "lamp"}})
	checkout.End()
	var result string
	if err == nil {
		waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
		result, err = h.Result(waitCtx)
		cancel()
	}
	stopWorker()
	err = errors.Join(err, <-workerDone)
	// Shutdown flushes the batch of spans to the exporter.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, tp.Shutdown(shutdownCtx))
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "result:", result)
	return printMetrics(ctx, out, reader)
}

// printMetrics writes one line per metric data point: name, unit, labels and count or value.
func printMetrics(ctx context.Context, out io.Writer, reader *sdkmetric.ManualReader) error {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return err
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			add := func(attrs []attribute.KeyValue, what string) {
				var kv []string
				for _, a := range attrs {
					kv = append(kv, string(a.Key)+"="+a.Value.Emit())
				}
				lines = append(lines, fmt.Sprintf("  %s (%s) {%s} %s", m.Name, m.Unit, strings.Join(kv, " "), what))
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					add(p.Attributes.ToSlice(), fmt.Sprintf("count=%d sum=%.3f", p.Count, p.Sum))
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					add(p.Attributes.ToSlice(), fmt.Sprintf("count=%d sum=%d", p.Count, p.Sum))
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					add(p.Attributes.ToSlice(), fmt.Sprintf("value=%d", p.Value))
				}
			}
		}
	}
	sort.Strings(lines)
	fmt.Fprintln(out, "metrics:")
	fmt.Fprintln(out, strings.Join(lines, "\n"))
	return nil
}
