package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// TestFlowFlagsApply changes only the flags given, and drops the window with the rate.
func TestFlowFlagsApply(t *testing.T) {
	t.Parallel()
	stored := storage.Flow{Key: "k", Priority: 3, Concurrency: 4, Rate: 5, Per: time.Second}
	n := func(v int) *int { return &v }
	d := func(v time.Duration) *time.Duration { return &v }
	cases := []struct {
		name  string
		flags flowFlags
		want  storage.Flow
	}{
		{"nothing", flowFlags{}, stored},
		{"priority", flowFlags{priority: n(-2)}, storage.Flow{Key: "k", Priority: -2, Concurrency: 4, Rate: 5, Per: time.Second}},
		{"no concurrency", flowFlags{concurrency: n(0)}, storage.Flow{Key: "k", Priority: 3, Rate: 5, Per: time.Second}},
		{"rate keeps the window", flowFlags{rate: n(9)}, storage.Flow{Key: "k", Priority: 3, Concurrency: 4, Rate: 9, Per: time.Second}},
		{"window", flowFlags{per: d(time.Minute)}, storage.Flow{Key: "k", Priority: 3, Concurrency: 4, Rate: 5, Per: time.Minute}},
		{"no rate drops the window", flowFlags{rate: n(0)}, storage.Flow{Key: "k", Priority: 3, Concurrency: 4}},
		{"no rate with a window", flowFlags{rate: n(0), per: d(time.Minute)}, storage.Flow{Key: "k", Priority: 3, Concurrency: 4, Per: time.Minute}},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, tc.flags.apply(stored), tc.name)
	}
}

// TestFmtProbe marks a count that stopped at storage.FlowProbe.
func TestFmtProbe(t *testing.T) {
	t.Parallel()
	require.Equal(t, "7", fmtProbe(7, true), "the other count stopped, not this one")
	require.Equal(t, "≥10000", fmtProbe(storage.FlowProbe, true))
	require.Equal(t, "10000", fmtProbe(storage.FlowProbe, false))
	var out bytes.Buffer
	printFlows(&cli{stdout: &out}, []flowRow{{Key: "big", Concurrency: 3, Running: 3, Due: storage.FlowProbe, Capped: true}})
	require.Contains(t, out.String(), "big  0         3            -     3        ≥10000  -")
}

// noFlows is a store without flow control.
type noFlows struct{ storage.Storage }

// TestFlowsWithoutFlowControl gives a clear error for a store that does not implement
// storage.FlowController.
func TestFlowsWithoutFlowControl(t *testing.T) {
	t.Parallel()
	st := memory.New()
	defer st.Close()
	c := &cli{store: noFlows{st}, kind: "bolt"}
	_, err := c.flowController()
	require.EqualError(t, err, "the bolt store does not support flow control (storage.FlowController)")
	c.store = st
	_, err = c.flowController()
	require.NoError(t, err)
}
