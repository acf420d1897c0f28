// Package sdk is chronoforge's public API: typed workflows (Workflow[In, Out]), the Engine
// that starts and runs them over a storage.Storage, durable steps, waits, durable values and
// retry policies.
//
// A workflow is a plain Go function. Each run executes it from the top; a step whose result
// is already stored returns that result without running again, so after a crash or restart
// the workflow carries on where it stopped. Steps are identified by name, not position.
//
// Calls that must wait (Sleep, WaitUntil, ContinueIf) either return at once or suspend the
// run: they return an error that errors.Is(err, ErrSuspended). Suspension is sticky: every
// later SDK call in the run returns it again and whatever the workflow function returns is
// ignored, so swallowing the error cannot corrupt the workflow. Return it.
//
// Workflow code between steps must be deterministic: it runs again on every replay. Do I/O
// inside steps, and do not call SDK functions from other goroutines.
//
// The engine is instrumented with OpenTelemetry (package telemetry): spans for starts, runs,
// executed steps, spawn batches, merge probes and claims, metrics, and trace IDs on its log
// records. It uses the application's providers (WithTracerProvider, WithMeterProvider,
// WithPropagator; the global ones by default) and costs nothing measurable without one.
package sdk
