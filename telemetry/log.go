package telemetry

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys of the trace and span IDs (hex, as in W3C trace context).
const (
	LogTraceID = "trace_id"
	LogSpanID  = "span_id"
)

// LogAttrs returns the trace and span IDs of sc as slog arguments (for Logger.With), or nil
// when sc is not valid (no tracing), so untraced records carry no empty IDs.
func LogAttrs(sc trace.SpanContext) []any {
	if !sc.IsValid() {
		return nil
	}
	return []any{slog.String(LogTraceID, sc.TraceID().String()), slog.String(LogSpanID, sc.SpanID().String())}
}

// Quiet wraps h so that it drops every record while quiet is true (it reports itself
// disabled then, so a dropped record costs no formatting).
func Quiet(h slog.Handler, quiet *atomic.Bool) slog.Handler {
	return quietHandler{inner: h, quiet: quiet}
}

type quietHandler struct {
	inner slog.Handler
	quiet *atomic.Bool
}

func (q quietHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return !q.quiet.Load() && q.inner.Enabled(ctx, level)
}

func (q quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if q.quiet.Load() {
		return nil
	}
	return q.inner.Handle(ctx, r)
}

func (q quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{inner: q.inner.WithAttrs(attrs), quiet: q.quiet}
}

func (q quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{inner: q.inner.WithGroup(name), quiet: q.quiet}
}
