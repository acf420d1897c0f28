package sdk

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/metric"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// queueStates are the states the queue depth gauge reports: the ones a workflow leaves by
// itself or by an operator. Final states only grow and are not a queue.
func queueStates() []storage.State {
	return []storage.State{storage.StateIdle, storage.StateRunning, storage.StateStalled}
}

// ObserveQueue registers the opt-in queue gauges with the engine's meter: the number of
// workflows by state (idle, running, stalled: telemetry.MetricQueueDepth), of workflows due
// now and not leased (telemetry.MetricQueueDue), and how long the oldest of those has been
// due (telemetry.MetricQueueOldestDueAge), all by the engine's clock. They are read when the
// application's metric reader collects, with one capped listing per state and one for the
// due ones: each count stops at limit (1..1,000; 0 means 1,000), so a collection reads at
// most 4·limit rows whatever the size of the store. Above the cap a count reports the cap,
// and the oldest due age is that of the oldest among the limit due workflows of lowest ID
// (exact while at most limit are due). Call Unregister on the result to stop.
//
// The storage interface has no counting query for these yet, so each listing reads whole
// rows (payloads included): keep the limit modest where inputs are large.
func (e *Engine) ObserveQueue(limit int) (metric.Registration, error) {
	if limit < 0 || limit > 1000 {
		return nil, fmt.Errorf("%w: ObserveQueue limit %d must be 0..1000", ErrInvalid, limit)
	}
	if limit == 0 {
		limit = 1000
	}
	m := e.tel.Meter()
	desc := map[string]telemetry.Metric{}
	for _, d := range telemetry.Metrics() {
		desc[d.Name] = d
	}
	d := desc[telemetry.MetricQueueDepth]
	depth, err := m.Int64ObservableGauge(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	if err != nil {
		return nil, fmt.Errorf("queue metrics: %w", err)
	}
	d = desc[telemetry.MetricQueueDue]
	due, err := m.Int64ObservableGauge(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	if err != nil {
		return nil, fmt.Errorf("queue metrics: %w", err)
	}
	d = desc[telemetry.MetricQueueOldestDueAge]
	age, err := m.Float64ObservableGauge(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	if err != nil {
		return nil, fmt.Errorf("queue metrics: %w", err)
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, s := range queueStates() {
			page, err := e.store.ListWorkflows(ctx, storage.ListFilter{States: []storage.State{s}, Limit: limit})
			if err != nil {
				return fmt.Errorf("queue depth %s: %w", s, err)
			}
			o.ObserveInt64(depth, int64(len(page)), metric.WithAttributes(telemetry.AttrWorkflowState.String(string(s))))
		}
		now := e.clock.Now()
		page, err := e.store.ListWorkflows(ctx, storage.ListFilter{
			States: []storage.State{storage.StateIdle, storage.StateRunning}, DueBy: now, Limit: limit,
		})
		if err != nil {
			return fmt.Errorf("queue due: %w", err)
		}
		o.ObserveInt64(due, int64(len(page)))
		oldest := 0.0
		for _, w := range page {
			oldest = max(oldest, now.Sub(w.RunAt).Seconds())
		}
		o.ObserveFloat64(age, oldest)
		return nil
	}, depth, due, age)
}
