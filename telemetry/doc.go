// Package telemetry is chronoforge's OpenTelemetry instrumentation: the tracer and meter
// (instrumentation scope ScopeName), every span, metric and attribute name in one place, and
// the helpers the SDK calls to start spans, record measurements, store trace context on
// workflow rows and read it back.
//
// It uses the OpenTelemetry API only. The application chooses the SDK and exporters and hands
// its providers to the engine (sdk.WithTracerProvider, sdk.WithMeterProvider,
// sdk.WithPropagator); by default the global ones are used. With no provider configured every
// helper is a no-op that allocates nothing: no span is started at all while the tracer
// provider is the no-op one or the global one the application never set, attributes are
// built only for recording spans and enabled instruments, no span is started below a run
// whose own span does not record, and metric label sets are built once and cached.
//
// # Traces
//
// There is no workflow semantic convention yet, so names live under "chronoforge.*" and the
// general keys are reused where they exist (error.type, messaging.batch.message_count).
// Span names are low-cardinality: an operation and a workflow, step or branch name, never a
// key or an ID.
//
//	start <workflow>   producer  Start, in the caller's trace; its context is stored on the row
//	signal|retry|cancel producer  Signal, Retry, Cancel, in the caller's trace
//	run <workflow>     consumer  one run (replay) of a workflow: a new root that links to the
//	                             stored context (its start, or for a child its spawn batch),
//	                             or, with RunsAsChildren, a child of it
//	step <step>        internal  one execution of a step's function; none for a step whose
//	                             result is read back from storage on replay
//	spawn <branch>     producer  one spawn batch; each child row stores its context
//	probe <workflow>   internal  one merge probe: inside a run, its child; by a worker without a
//	                             replay, a new root linked like a run
//	claim              client    a claim that took at least one workflow (idle polls: none)
//
// A wait adds an event (EventWait) with its wake time to the run span; it has no span.
//
// # Metrics
//
// Metrics lists every instrument with its unit and label keys. Labels are workflow names,
// step names, outcomes, states and reasons only: never a key, an ID, an error message or a
// payload, so the number of series stays bounded by the code, not by the data.
//
// # Logs
//
// LogAttrs gives the trace and span IDs of a span context as slog attributes, and Quiet wraps
// a handler so that it drops records while a flag says the workflow is replaying.
package telemetry
