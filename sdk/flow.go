package sdk

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// Limits is the flow control of a workflow name, or of a group of names that share it: a
// priority and limits that hold across every worker and process, enforced by the store when it
// claims (see "Flow control" in package storage). Zero limits mean none.
//
// The values given in code are defaults: a worker stores them when it starts unless the key
// already has a stored flow, and an operator's change (chronoforge flows set, the dashboard,
// or Engine.PutFlow) wins over them from the next claim on. Delete the stored flow to go back
// to the defaults of the next worker that starts.
type Limits struct {
	// Priority orders claims among due workflows: higher first; workflows without a flow
	// have priority 0. storage.MinPriority..storage.MaxPriority.
	Priority int
	// Concurrency is the most workflows of the key running at once, across all workers.
	Concurrency int
	// Rate is the most runs started in any window of length Per.
	Rate int
	// Per is the rate's window; set exactly when Rate is.
	Per time.Duration
}

func (l Limits) flow(key string) storage.Flow {
	return storage.Flow{Key: key, Priority: l.Priority, Concurrency: l.Concurrency, Rate: l.Rate, Per: l.Per}
}

// flowEpoch is a valid time for checking Limits before there is a clock.
var flowEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// WithLimits governs the workflow by a flow of its own, keyed by its name, with l as its
// defaults. Every workflow of the name (a branch child too) counts against it. It cannot be
// combined with InFlowGroup.
func WithLimits(l Limits) WorkflowOption {
	return workflowOption(func(d *definition) {
		if d.flowKey != "" && d.err == nil {
			d.err = fmt.Errorf("%w: workflow %q: WithLimits and InFlowGroup both given", ErrInvalid, d.name)
		}
		if err := storage.ValidateFlow(l.flow(d.name), flowEpoch); err != nil && d.err == nil {
			d.err = fmt.Errorf("workflow %q: WithLimits: %w", d.name, err)
		}
		d.flowKey, d.limits = d.name, &l
	})
}

// InFlowGroup governs the workflow by the flow of group, which several workflow names share:
// their workflows count together against the group's limits and share its priority. The
// engine that registers the workflow must declare the group's defaults with WithFlowGroup.
func InFlowGroup(group string) WorkflowOption {
	return workflowOption(func(d *definition) {
		if d.flowKey != "" && d.err == nil {
			d.err = fmt.Errorf("%w: workflow %q: InFlowGroup and WithLimits both given", ErrInvalid, d.name)
		}
		if err := storage.ValidateFlowKey(group); err != nil && d.err == nil {
			d.err = fmt.Errorf("workflow %q: InFlowGroup: %w", d.name, err)
		}
		d.flowKey = group
	})
}

// WithFlowGroup declares the defaults of the flow group that workflows join with InFlowGroup.
func WithFlowGroup(group string, l Limits) Option {
	return engineOption(func(e *Engine) error {
		f := l.flow(group)
		if err := storage.ValidateFlow(f, flowEpoch); err != nil {
			return fmt.Errorf("WithFlowGroup(%q): %w", group, err)
		}
		if _, dup := e.groups[group]; dup {
			return fmt.Errorf("%w: WithFlowGroup(%q) given twice", ErrInvalid, group)
		}
		if e.groups == nil {
			e.groups = map[string]storage.Flow{}
		}
		e.groups[group] = f
		return nil
	})
}

// resolveFlows checks the flows of the registered workflows and collects their defaults by
// key: a group a workflow joins must be declared, a key must not get two sets of defaults,
// and the store must enforce flows.
func (e *Engine) resolveFlows() error {
	e.flowDefaults = map[string]storage.Flow{}
	for _, name := range e.names {
		d := e.defs[name]
		switch {
		case d.flowKey == "":
			continue
		case d.limits != nil:
			if _, clash := e.groups[d.flowKey]; clash {
				return fmt.Errorf("%w: workflow %q has WithLimits, and a flow group of the same name is declared", ErrInvalid, name)
			}
			e.flowDefaults[d.flowKey] = d.limits.flow(d.flowKey)
		default:
			g, ok := e.groups[d.flowKey]
			if !ok {
				return fmt.Errorf("%w: workflow %q joins flow group %q, which is not declared: add WithFlowGroup(%q, sdk.Limits{...})", ErrInvalid, name, d.flowKey, d.flowKey)
			}
			e.flowDefaults[d.flowKey] = g
		}
	}
	for group, f := range e.groups {
		e.flowDefaults[group] = f // declared groups are stored even before a member registers
	}
	if len(e.flowDefaults) > 0 && e.flows == nil {
		return fmt.Errorf("%w: flow control is declared (%d flows) but the store %T does not enforce it (storage.FlowController)", ErrInvalid, len(e.flowDefaults), e.store)
	}
	return nil
}

// flowOf returns the flow key a new workflow of d is created with: its definition's, on a
// store that enforces flows, and none otherwise.
func (e *Engine) flowOf(d *definition) string {
	if e.flows == nil || d == nil {
		return ""
	}
	return d.flowKey
}

// SyncFlows stores the flow defaults declared in code (WithLimits, WithFlowGroup) for every
// key that has no stored flow yet, leaving stored ones alone. Workers (package dispatch) call
// it before their first claim, so a governed workflow is never claimed before its limits are
// stored; call it yourself when you claim by other means.
func (e *Engine) SyncFlows(ctx context.Context) error {
	if len(e.flowDefaults) == 0 {
		return nil
	}
	now := e.clock.Now()
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(e.flowDefaults)) {
		stored, wrote, err := e.flows.PutFlow(ctx, e.flowDefaults[key], true, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("store the flow %q: %w", key, err))
			continue
		}
		if wrote {
			e.logger.Info("flow stored from code", "flow", key, "priority", stored.Priority,
				"concurrency", stored.Concurrency, "rate", stored.Rate, "per", stored.Per)
		}
	}
	return errors.Join(errs...)
}

// PutFlow stores f (an operator's change: it replaces the stored flow of its key), returning
// what was stored. It fails with ErrInvalid on a store that does not enforce flows.
func (e *Engine) PutFlow(ctx context.Context, f storage.Flow) (storage.Flow, error) {
	if e.flows == nil {
		return storage.Flow{}, fmt.Errorf("%w: the store %T does not enforce flows", ErrInvalid, e.store)
	}
	stored, _, err := e.flows.PutFlow(ctx, f, false, e.clock.Now())
	return stored, err
}

// Flows lists the stored flows with their running and due counts (by the engine's clock).
// It fails with ErrInvalid on a store that does not enforce flows.
func (e *Engine) Flows(ctx context.Context) ([]storage.FlowState, error) {
	if e.flows == nil {
		return nil, fmt.Errorf("%w: the store %T does not enforce flows", ErrInvalid, e.store)
	}
	return e.flows.ListFlows(ctx, e.clock.Now())
}

// ObserveFlows registers the flow gauges with the engine's meter: per stored flow key, the
// workflows running with a live lease (telemetry.MetricFlowRunning) and those due now
// (telemetry.MetricFlowDue; when the flow is at a limit, these are held back), read with one
// ListFlows per collection, each count capped at storage.FlowProbe. Call Unregister on the
// result to stop.
func (e *Engine) ObserveFlows() (metric.Registration, error) {
	if e.flows == nil {
		return nil, fmt.Errorf("%w: ObserveFlows: the store %T does not enforce flows", ErrInvalid, e.store)
	}
	m := e.tel.Meter()
	running, err := gauge(m, telemetry.MetricFlowRunning)
	if err != nil {
		return nil, err
	}
	due, err := gauge(m, telemetry.MetricFlowDue)
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		flows, err := e.flows.ListFlows(ctx, e.clock.Now())
		if err != nil {
			return fmt.Errorf("flow metrics: %w", err)
		}
		for _, f := range flows {
			attrs := metric.WithAttributes(telemetry.AttrFlow.String(f.Key))
			o.ObserveInt64(running, int64(f.Running), attrs)
			o.ObserveInt64(due, int64(f.Due), attrs)
		}
		return nil
	}, running, due)
}

// gauge makes the Int64 observable gauge of the telemetry metric named name.
func gauge(m metric.Meter, name string) (metric.Int64ObservableGauge, error) {
	for _, d := range telemetry.Metrics() {
		if d.Name == name {
			g, err := m.Int64ObservableGauge(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
			if err != nil {
				return nil, fmt.Errorf("metric %s: %w", name, err)
			}
			return g, nil
		}
	}
	return nil, fmt.Errorf("metric %s: not described in package telemetry", name)
}
