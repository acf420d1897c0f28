package storage

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFence(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mine := Lease{WorkflowID: 12, Owner: "worker-a", Token: 5}
	row := func(state State, owner string, token int64, until time.Time) Workflow {
		return Workflow{ID: 12, State: state, LeaseOwner: owner, LeaseToken: token, LeaseUntil: until}
	}
	for _, tc := range []struct {
		name string
		cur  Workflow
		want error
		says string
	}{
		{"live", row(StateRunning, "worker-a", 5, now.Add(time.Nanosecond)), nil, ""},
		{"expired at the instant", row(StateRunning, "worker-a", 5, now), ErrLeaseLost,
			`storage: lease lost: workflow 12: the lease of "worker-a" (token 5) expired at 2026-01-01T00:00:00Z by the store's clock`},
		{"expired", row(StateRunning, "worker-a", 5, now.Add(-time.Second)), ErrLeaseLost, "expired at 2025-12-31T23:59:59Z"},
		{"taken over", row(StateRunning, "worker-b", 7, now.Add(time.Minute)), ErrLeaseLost,
			`storage: lease lost: workflow 12 is now leased by "worker-b" (token 7); the lease of "worker-a" (token 5) was superseded`},
		{"taken over, expired", row(StateRunning, "worker-b", 7, now), ErrLeaseLost, `taken over by "worker-b" (token 7), whose lease has expired too`},
		{"taken over, finished", row(StateCompleted, "worker-b", 7, time.Time{}), ErrLeaseLost, `taken over by "worker-b" (token 7) and is now completed`},
		{"released", row(StateIdle, "worker-a", 5, time.Time{}), ErrLeaseLost, "was released and the workflow is idle"},
		{"never issued", row(StateRunning, "worker-a", 4, now.Add(time.Minute)), ErrLeaseLost, `never had lease token 5; the latest is 4, of "worker-a"`},
		{"cancelled", row(StateCancelled, "worker-a", 5, time.Time{}), ErrCancelled, "workflow 12 was cancelled"},
		{"cancelled after a takeover", row(StateCancelled, "worker-b", 7, time.Time{}), ErrCancelled, "workflow 12 was cancelled"},
	} {
		err := Fence(mine, tc.cur, now)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: message %q does not say %q", tc.name, err, tc.says)
		}
		if released := errors.Is(err, ErrLeaseReleased); released != (tc.name == "released") {
			t.Errorf("%s: errors.Is(err, ErrLeaseReleased) = %v", tc.name, released)
		}
	}
}
