package telemetry

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names.
const (
	MetricRunDuration        = "chronoforge.run.duration"
	MetricRunStepsReplayed   = "chronoforge.run.steps.replayed"
	MetricRunActive          = "chronoforge.run.active"
	MetricStepDuration       = "chronoforge.step.duration"
	MetricStepRetries        = "chronoforge.step.retries"
	MetricStalls             = "chronoforge.workflow.stalls"
	MetricWorkflowDuration   = "chronoforge.workflow.duration"
	MetricClaimLag           = "chronoforge.claim.lag"
	MetricClaimBatchSize     = "chronoforge.claim.batch.size"
	MetricLeasesLost         = "chronoforge.lease.lost"
	MetricSpawnChildren      = "chronoforge.spawn.children"
	MetricSpawnBatchSize     = "chronoforge.spawn.batch.size"
	MetricSpawnBatchDuration = "chronoforge.spawn.batch.duration"
	MetricMergeProbePending  = "chronoforge.merge.probe.pending"
	MetricQueueDepth         = "chronoforge.queue.depth"
	MetricQueueDue           = "chronoforge.queue.due"
	MetricQueueOldestDueAge  = "chronoforge.queue.oldest_due.age"
	MetricFlowRunning        = "chronoforge.flow.running"
	MetricFlowDue            = "chronoforge.flow.due"
)

// Metric describes one instrument: what the README's table shows and the tests check.
type Metric struct {
	Name string
	// Kind is the instrument: histogram, counter, updowncounter or gauge (observable).
	Kind string
	// Unit follows the OpenTelemetry conventions: "s" for durations, "{thing}" for counts.
	Unit        string
	Description string
	// Labels are the attribute keys a data point may carry; a point carries a subset.
	Labels []attribute.Key
	// OptIn instruments are reported only once enabled (sdk.Engine.ObserveQueue).
	OptIn bool
}

// Metrics lists every instrument chronoforge records, in a fixed order.
func Metrics() []Metric {
	return []Metric{
		{MetricRunDuration, "histogram", "s", "Duration of one run (replay) of a workflow, by how it ended.", []attribute.Key{AttrWorkflowName, AttrRunOutcome, AttrSuspensionReason}, false},
		{MetricRunStepsReplayed, "histogram", "{step}", "Steps a run read back from storage without running them.", []attribute.Key{AttrWorkflowName}, false},
		{MetricRunActive, "updowncounter", "{run}", "Runs in progress in this process.", []attribute.Key{AttrWorkflowName}, false},
		{MetricStepDuration, "histogram", "s", "Duration of one execution of a step's function, by how it ended.", []attribute.Key{AttrWorkflowName, AttrStepName, AttrStepOutcome}, false},
		{MetricStepRetries, "counter", "{retry}", "Step executions that failed and will be retried.", []attribute.Key{AttrWorkflowName, AttrStepName}, false},
		{MetricStalls, "counter", "{stall}", "Workflows that stalled, by reason.", []attribute.Key{AttrWorkflowName, AttrStallReason}, false},
		{MetricWorkflowDuration, "histogram", "s", "End to end: from a workflow's creation to its final state (engine clock).", []attribute.Key{AttrWorkflowName, AttrWorkflowState}, false},
		{MetricClaimLag, "histogram", "s", "How long a workflow was due before a worker claimed it (engine clock).", []attribute.Key{AttrWorkflowName}, false},
		{MetricClaimBatchSize, "histogram", "{workflow}", "Workflows taken by one claim that took any.", nil, false},
		{MetricLeasesLost, "counter", "{run}", "Runs stopped because their lease was lost.", []attribute.Key{AttrWorkflowName}, false},
		{MetricSpawnChildren, "counter", "{workflow}", "Children newly inserted by spawn batches.", []attribute.Key{AttrWorkflowName}, false},
		{MetricSpawnBatchSize, "histogram", "{workflow}", "Children per spawn batch.", []attribute.Key{AttrWorkflowName}, false},
		{MetricSpawnBatchDuration, "histogram", "s", "Duration of one spawn batch's write.", []attribute.Key{AttrWorkflowName}, false},
		{MetricMergeProbePending, "histogram", "{workflow}", "Unfinished children a merge probe counted (capped).", []attribute.Key{AttrWorkflowName}, false},
		{MetricQueueDepth, "gauge", "{workflow}", "Workflows by state (idle, running, stalled), counted up to a cap.", []attribute.Key{AttrWorkflowState}, true},
		{MetricQueueDue, "gauge", "{workflow}", "Workflows due now and not leased, counted up to a cap.", nil, true},
		{MetricQueueOldestDueAge, "gauge", "s", "How long the oldest due workflow (among the capped count) has been due.", nil, true},
		{MetricFlowRunning, "gauge", "{workflow}", "Workflows of a flow running with a live lease, counted up to a cap.", []attribute.Key{AttrFlow}, true},
		{MetricFlowDue, "gauge", "{workflow}", "Workflows of a flow due now (held back when the flow is at a limit), counted up to a cap.", []attribute.Key{AttrFlow}, true},
	}
}

// Bucket boundaries: durations from a millisecond to a day, counts from 0 to the merge cap.
var (
	durationBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400}
	countBuckets    = []float64{0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000}
)

// instruments are the synchronous instruments of Metrics (the gauges are registered on
// demand, by ObserveQueue).
type instruments struct {
	runDuration        metric.Float64Histogram
	runReplayed        metric.Int64Histogram
	runActive          metric.Int64UpDownCounter
	stepDuration       metric.Float64Histogram
	stepRetries        metric.Int64Counter
	stalls             metric.Int64Counter
	workflowDuration   metric.Float64Histogram
	claimLag           metric.Float64Histogram
	claimBatch         metric.Int64Histogram
	leasesLost         metric.Int64Counter
	spawnChildren      metric.Int64Counter
	spawnBatchSize     metric.Int64Histogram
	spawnBatchDuration metric.Float64Histogram
	probePending       metric.Int64Histogram
}

func newInstruments(m metric.Meter) (instruments, error) {
	var in instruments
	var errs []error
	desc := map[string]Metric{}
	for _, d := range Metrics() {
		desc[d.Name] = d
	}
	fh := func(name string) metric.Float64Histogram {
		d := desc[name]
		h, err := m.Float64Histogram(name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description), metric.WithExplicitBucketBoundaries(durationBuckets...))
		errs = append(errs, err)
		return h
	}
	ih := func(name string) metric.Int64Histogram {
		d := desc[name]
		h, err := m.Int64Histogram(name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description), metric.WithExplicitBucketBoundaries(countBuckets...))
		errs = append(errs, err)
		return h
	}
	ic := func(name string) metric.Int64Counter {
		d := desc[name]
		c, err := m.Int64Counter(name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
		errs = append(errs, err)
		return c
	}
	in.runDuration = fh(MetricRunDuration)
	in.runReplayed = ih(MetricRunStepsReplayed)
	d := desc[MetricRunActive]
	var err error
	in.runActive, err = m.Int64UpDownCounter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	errs = append(errs, err)
	in.stepDuration = fh(MetricStepDuration)
	in.stepRetries = ic(MetricStepRetries)
	in.stalls = ic(MetricStalls)
	in.workflowDuration = fh(MetricWorkflowDuration)
	in.claimLag = fh(MetricClaimLag)
	in.claimBatch = ih(MetricClaimBatchSize)
	in.leasesLost = ic(MetricLeasesLost)
	in.spawnChildren = ic(MetricSpawnChildren)
	in.spawnBatchSize = ih(MetricSpawnBatchSize)
	in.spawnBatchDuration = fh(MetricSpawnBatchDuration)
	in.probePending = ih(MetricMergeProbePending)
	for _, err := range errs {
		if err != nil {
			return in, fmt.Errorf("telemetry: create instruments: %w", err)
		}
	}
	return in, nil
}

// labelKey is one label set: a workflow name and up to two more labels (a zero KeyValue is
// none).
type labelKey struct {
	workflow string
	a, b     attribute.KeyValue
}

// measureOpts are the options of a measurement with one label set, built once.
type measureOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

// labelCache keeps the options of every label set seen: labels are names, outcomes and
// reasons, so there are as many as the code has, and a measurement then allocates nothing
// for its attributes.
type labelCache struct {
	mu sync.RWMutex
	m  map[labelKey]*measureOpts
}

// labels returns the measurement options for the label set (workflow, a, b).
func (t *Telemetry) labels(workflow string, a, b attribute.KeyValue) *measureOpts {
	k := labelKey{workflow, a, b}
	c := &t.cache
	c.mu.RLock()
	o := c.m[k]
	c.mu.RUnlock()
	if o != nil {
		return o
	}
	kvs := []attribute.KeyValue{AttrWorkflowName.String(workflow)}
	for _, kv := range []attribute.KeyValue{a, b} {
		if kv.Key != "" {
			kvs = append(kvs, kv)
		}
	}
	opt := metric.WithAttributeSet(attribute.NewSet(kvs...))
	o = &measureOpts{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[labelKey]*measureOpts{}
	}
	if held := c.m[k]; held != nil {
		return held
	}
	c.m[k] = o
	return o
}

// none is the absent label.
var none attribute.KeyValue

func seconds(d time.Duration) float64 { return d.Seconds() }

// RecordClaimLag records how long a workflow named workflow was due before its claim.
func (t *Telemetry) RecordClaimLag(ctx context.Context, workflow string, lag time.Duration) {
	if t.m.claimLag.Enabled(ctx) {
		t.m.claimLag.Record(ctx, seconds(max(lag, 0)), t.labels(workflow, none, none).record...)
	}
}

// RecordWorkflowEnd records the end-to-end duration of a workflow that reached a final
// state (completed, failed or cancelled), from its creation, by the engine's clock.
func (t *Telemetry) RecordWorkflowEnd(ctx context.Context, workflow, state string, age time.Duration) {
	if t.m.workflowDuration.Enabled(ctx) {
		t.m.workflowDuration.Record(ctx, seconds(max(age, 0)), t.labels(workflow, AttrWorkflowState.String(state), none).record...)
	}
}
