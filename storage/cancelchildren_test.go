package storage

import (
	"testing"
	"time"
)

func TestValidateCancelChildren(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	full := make([]int64, MaxCancelSteps)
	for i := range full {
		full[i] = int64(i + 1)
	}
	req := func(ids []int64, limit int, at time.Time) error {
		return ValidateCancelChildren(CancelChildrenRequest{StepIDs: ids, Limit: limit, Now: at})
	}
	requireChecks(t, []check{
		{"one step", req([]int64{7}, 1, now), nil},
		{"MaxCancelSteps steps, MaxCancelChildren limit", req(full, MaxCancelChildren, now), nil},
		{"repeated steps", req([]int64{7, 7}, 10, now), nil},
		{"no steps", req(nil, 10, now), ErrInvalid},
		{"too many steps", req(append(full, 1), 10, now), ErrInvalid},
		{"zero step", req([]int64{7, 0}, 10, now), ErrInvalid},
		{"negative step", req([]int64{-7}, 10, now), ErrInvalid},
		{"zero limit", req([]int64{7}, 0, now), ErrInvalid},
		{"limit over MaxCancelChildren", req([]int64{7}, MaxCancelChildren+1, now), ErrInvalid},
		{"zero time", req([]int64{7}, 10, time.Time{}), ErrInvalid},
		{"time before MinTime", req([]int64{7}, 10, MinTime.Add(-time.Nanosecond)), ErrInvalid},
	})
}
