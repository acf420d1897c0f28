package storage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSampledStateCounts: the workflow past the sample is taken off the group holding the
// lowest ID, a group it empties is dropped, and the counts come sorted.
func TestSampledStateCounts(t *testing.T) {
	groups := func() []SampledGroup {
		return []SampledGroup{
			{StateCount{Name: "b", State: StateIdle, Count: 2}, 7},
			{StateCount{Name: "a", State: StateFailed, Count: 1}, 3},
			{StateCount{Name: "a", State: StateIdle, Count: 3}, 5},
		}
	}
	require.Equal(t, StateCounts{Counted: 6, Counts: []StateCount{
		{Name: "a", State: StateIdle, Count: 3}, {Name: "a", State: StateFailed, Count: 1}, {Name: "b", State: StateIdle, Count: 2},
	}}, SampledStateCounts(groups(), 6), "all counted")
	require.Equal(t, StateCounts{Counted: 5, Sampled: true, Counts: []StateCount{
		{Name: "a", State: StateIdle, Count: 3}, {Name: "b", State: StateIdle, Count: 2},
	}}, SampledStateCounts(groups(), 5), "the oldest (ID 3) was the one past the sample")
	require.Equal(t, StateCounts{}, SampledStateCounts(nil, 5))
}

// TestNewBranchStats: counts in States order, those at the limit capped, the newest recent
// finish times by ID.
func TestNewBranchStats(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	got := NewBranchStats(map[State]int{StateIdle: 5, StateCompleted: 2, StateFailed: 1}, 5,
		[]FinishedChild{{ID: 4, At: at(40)}, {ID: 9, At: at(90)}, {ID: 6, At: at(60)}}, 2)
	require.Len(t, got.Counts, len(States))
	require.Equal(t, 5, got.Count(StateIdle))
	require.Equal(t, 0, got.Count(StateRunning))
	require.Equal(t, []State{StateIdle}, got.Capped)
	require.Equal(t, []time.Time{at(90), at(60)}, got.RecentFinished)
}

// TestDrainRate reckons finished children per second from finish times in any order.
func TestDrainRate(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rate := func(ts ...time.Time) float64 { return BranchStats{RecentFinished: ts}.DrainRate() }
	require.Zero(t, rate())
	require.Zero(t, rate(base))
	require.Zero(t, rate(base, base))
	require.InDelta(t, 2.0, rate(base.Add(time.Second), base, base.Add(500*time.Millisecond)), 1e-9)
}
