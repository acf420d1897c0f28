package storage

import (
	"testing"
	"time"
)

func TestValidateMergeWake(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	states := []State{StateIdle, StateRunning}
	full := make([]int64, MaxMergeWake)
	for i := range full {
		full[i] = int64(i + 1)
	}
	req := func(ids []int64, st []State, at time.Time) error {
		return ValidateMergeWake(MergeWakeRequest{StepIDs: ids, States: st, At: at})
	}
	requireChecks(t, []check{
		{"one step", req([]int64{7}, states, now), nil},
		{"MaxMergeWake steps", req(full, states, now), nil},
		{"repeated steps", req([]int64{7, 7}, states, now), nil},
		{"no steps", req(nil, states, now), ErrInvalid},
		{"too many steps", req(append(full, 1), states, now), ErrInvalid},
		{"zero step", req([]int64{7, 0}, states, now), ErrInvalid},
		{"negative step", req([]int64{-7}, states, now), ErrInvalid},
		{"no states", req([]int64{7}, nil, now), ErrInvalid},
		{"unknown state", req([]int64{7}, []State{"sleeping"}, now), ErrInvalid},
		{"zero time", req([]int64{7}, states, time.Time{}), ErrInvalid},
		{"time after MaxTime", req([]int64{7}, states, MaxTime.Add(time.Nanosecond)), ErrInvalid},
	})
}
