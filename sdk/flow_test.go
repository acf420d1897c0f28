package sdk_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
	"github.com/chronoforge/chronoforge/telemetry"
)

func noop(c *sdk.Context, i int) (int, error) { return i, nil }

// plainStore hides every optional interface of the store it wraps: a store without flow
// control.
type plainStore struct{ storage.Storage }

// TestFlowOptionsChecked: bad limits, a workflow with both WithLimits and InFlowGroup, a
// group nobody declared, a group declared twice, a group and a workflow with limits under one
// key, and flows on a store that cannot enforce them all fail NewEngine with a clear error.
func TestFlowOptionsChecked(t *testing.T) {
	store := memory.New()
	cases := []struct {
		name string
		opts []sdk.Option
		want string
	}{
		{"bad limits", []sdk.Option{sdk.WithWorkflows(sdk.New("f.bad", noop, sdk.WithLimits(sdk.Limits{Concurrency: -1})))},
			`workflow "f.bad": WithLimits: storage: invalid input: flow "f.bad": concurrency -1 must be 0 (no limit)..1048576`},
		{"rate without period", []sdk.Option{sdk.WithWorkflows(sdk.New("f.bad", noop, sdk.WithLimits(sdk.Limits{Rate: 3})))},
			`rate 3 per 0s: the period must be`},
		{"both", []sdk.Option{sdk.WithWorkflows(sdk.New("f.both", noop, sdk.WithLimits(sdk.Limits{}), sdk.InFlowGroup("g")))},
			`workflow "f.both": InFlowGroup and WithLimits both given`},
		{"undeclared group", []sdk.Option{sdk.WithWorkflows(sdk.New("f.member", noop, sdk.InFlowGroup("g")))},
			`workflow "f.member" joins flow group "g", which is not declared: add WithFlowGroup("g", sdk.Limits{...})`},
		{"group twice", []sdk.Option{sdk.WithFlowGroup("g", sdk.Limits{}), sdk.WithFlowGroup("g", sdk.Limits{})},
			`WithFlowGroup("g") given twice`},
		{"bad group", []sdk.Option{sdk.WithFlowGroup("g", sdk.Limits{Priority: 5000})},
			`WithFlowGroup("g"): storage: invalid input: flow "g": priority 5000 must be -1000..1000`},
		{"group clash", []sdk.Option{sdk.WithFlowGroup("f.own", sdk.Limits{}), sdk.WithWorkflows(sdk.New("f.own", noop, sdk.WithLimits(sdk.Limits{})))},
			`workflow "f.own" has WithLimits, and a flow group of the same name is declared`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := sdk.NewEngine(store, c.opts...)
			require.ErrorIs(t, err, sdk.ErrInvalid)
			require.ErrorContains(t, err, c.want)
		})
	}
	_, err := sdk.NewEngine(plainStore{store}, sdk.WithWorkflows(sdk.New("f.limited", noop, sdk.WithLimits(sdk.Limits{Concurrency: 1}))))
	require.ErrorIs(t, err, sdk.ErrInvalid)
	require.ErrorContains(t, err, "flow control is declared (1 flows) but the store sdk_test.plainStore does not enforce it")
	// Without flows, such a store is fine.
	_, err = sdk.NewEngine(plainStore{store}, sdk.WithWorkflows(sdk.New("f.plain", noop)))
	require.NoError(t, err)
}

// TestFlowKeysAndSync: workflows are created with their definition's flow key (their name,
// or their group); SyncFlows stores the defaults declared in code once, and an operator's
// change wins over them; Flows lists what is stored.
func TestFlowKeysAndSync(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	own := sdk.New("f.own", noop, sdk.WithLimits(sdk.Limits{Concurrency: 2, Priority: 3}))
	a := sdk.New("f.a", noop, sdk.InFlowGroup("api"))
	b := sdk.New("f.b", noop, sdk.InFlowGroup("api"))
	plain := sdk.New("f.plain", noop)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(own, a, b, plain),
		sdk.WithFlowGroup("api", sdk.Limits{Rate: 10, Per: time.Second}), sdk.WithLogger(quietLogger()))
	require.NoError(t, err)
	for _, c := range []struct {
		start func() (int64, error)
		flow  string
	}{
		{func() (int64, error) { h, err := own.Start(ctx, eng, "k", 1); return h.ID(), err }, "f.own"},
		{func() (int64, error) { h, err := a.Start(ctx, eng, "k", 1); return h.ID(), err }, "api"},
		{func() (int64, error) { h, err := b.Start(ctx, eng, "k", 1); return h.ID(), err }, "api"},
		{func() (int64, error) { h, err := plain.Start(ctx, eng, "k", 1); return h.ID(), err }, ""},
	} {
		id, err := c.start()
		require.NoError(t, err)
		w, err := store.GetWorkflow(ctx, id)
		require.NoError(t, err)
		require.Equal(t, c.flow, w.Flow, "workflow %q", w.Name)
	}

	require.NoError(t, eng.SyncFlows(ctx))
	flows, err := eng.Flows(ctx)
	require.NoError(t, err)
	require.Len(t, flows, 2)
	require.Equal(t, "api", flows[0].Key)
	require.Equal(t, 10, flows[0].Rate)
	require.Equal(t, "f.own", flows[1].Key)
	require.Equal(t, 2, flows[1].Concurrency)
	require.Equal(t, 3, flows[1].Priority)

	// An operator raises the limit; a worker that starts later keeps it.
	_, err = eng.PutFlow(ctx, storage.Flow{Key: "f.own", Concurrency: 7})
	require.NoError(t, err)
	require.NoError(t, eng.SyncFlows(ctx))
	flows, err = eng.Flows(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, flows[1].Concurrency, "the stored flow wins over the code's defaults")

	_, err = eng.PutFlow(ctx, storage.Flow{Key: "f.own", Concurrency: -7})
	require.ErrorIs(t, err, storage.ErrInvalid)

	// On a store without flow control, an engine with no flows reports it plainly.
	bare, err := sdk.NewEngine(plainStore{memory.New()})
	require.NoError(t, err)
	_, err = bare.Flows(ctx)
	require.ErrorIs(t, err, sdk.ErrInvalid)
	_, err = bare.PutFlow(ctx, storage.Flow{Key: "x"})
	require.ErrorIs(t, err, sdk.ErrInvalid)
	require.NoError(t, bare.SyncFlows(ctx), "nothing to store")
}

// TestFlowGauges: ObserveFlows reports each stored flow's running and due workflows.
func TestFlowGauges(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	wf := sdk.New("f.gauge", noop, sdk.WithLimits(sdk.Limits{Concurrency: 1}))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	clock := sdk.NewFakeClock(t0)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(wf), sdk.WithMeterProvider(mp), sdk.WithClock(clock), sdk.WithLogger(quietLogger()))
	require.NoError(t, err)
	require.NoError(t, eng.SyncFlows(ctx))
	reg, err := eng.ObserveFlows()
	require.NoError(t, err)
	defer func() { require.NoError(t, reg.Unregister()) }()
	for _, k := range []string{"a", "b", "c"} {
		_, err := wf.Start(ctx, eng, k, 0)
		require.NoError(t, err)
	}
	claimed, err := store.Claim(ctx, storage.ClaimRequest{Owner: "t", Limit: 3, TTL: time.Minute, Now: clock.Now()})
	require.NoError(t, err)
	require.Len(t, claimed, 1, "a concurrency of 1")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Gauge[int64]); ok {
				for _, dp := range d.DataPoints {
					flow, _ := dp.Attributes.Value(telemetry.AttrFlow)
					got[m.Name+" "+flow.AsString()] = dp.Value
				}
			}
		}
	}
	require.Equal(t, map[string]int64{
		telemetry.MetricFlowRunning + " f.gauge": 1,
		telemetry.MetricFlowDue + " f.gauge":     2, // held back by the limit
	}, got)
	_, err = sdk.NewEngine(plainStore{memory.New()})
	require.NoError(t, err)
}
