package storage

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// check is one validation outcome: err must wrap want, or be nil when want is nil.
type check struct {
	what string
	err  error
	want error
}

func requireChecks(t *testing.T, checks []check) {
	t.Helper()
	for _, tc := range checks {
		if !errors.Is(tc.err, tc.want) || (tc.want == nil) != (tc.err == nil) {
			t.Errorf("%s: got %v, want %v", tc.what, tc.err, tc.want)
		}
	}
}

func TestValidateNamesAndKeys(t *testing.T) {
	t.Parallel()
	requireChecks(t, []check{
		{"plain name", ValidateName("order.charge"), nil},
		{"unicode name", ValidateName("commande.payée"), nil},
		{"empty name", ValidateName(""), ErrInvalid},
		{"dollar name", ValidateName("a$b"), ErrInvalid},
		{"newline name", ValidateName("a\nb"), ErrInvalid},
		{"long name", ValidateName(strings.Repeat("n", MaxNameLen+1)), ErrInvalid},
		{"max name", ValidateName(strings.Repeat("n", MaxNameLen)), nil},
		{"bad utf8", ValidateName("a\xffb"), ErrInvalid},
		{"step with dollar", ValidateStepName("sleep$nap"), nil},
		{"step with NUL", ValidateStepName("a\x00"), ErrInvalid},
		{"child key", ValidateKey("order-1$fanout$item_7"), nil},
		{"empty key", ValidateKey(""), ErrInvalid},
		{"long key", ValidateKey(strings.Repeat("k", MaxKeyLen+1)), ErrInvalid},
		{"DEL in key", ValidateKey("a\x7f"), ErrInvalid},
		{"find ok", ValidateFind("order.charge", "order-1"), nil},
		{"find bad name", ValidateFind("a$b", "k"), ErrInvalid},
		{"find empty key", ValidateFind("w", ""), ErrInvalid},
	})
}

func TestValidateRequests(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	big := make([]byte, MaxPayload+1)
	requireChecks(t, []check{
		{"new ok", ValidateNew(NewWorkflow{Name: "w", Key: "k", Now: now}), nil},
		{"new big input", ValidateNew(NewWorkflow{Name: "w", Key: "k", Input: big, Now: now}), ErrTooLarge},
		{"new no now", ValidateNew(NewWorkflow{Name: "w", Key: "k"}), ErrInvalid},
		{"claim ok", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, TTL: time.Second, Now: now}), nil},
		{"claim no owner", ValidateClaim(ClaimRequest{Limit: 1, TTL: time.Second, Now: now}), ErrInvalid},
		{"claim over max", ValidateClaim(ClaimRequest{Owner: "o", Limit: MaxClaim + 1, TTL: time.Second, Now: now}), ErrInvalid},
		{"claim no ttl", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, Now: now}), ErrInvalid},
		{"commit big result", ValidateCommit(Commit{Steps: []Step{{Name: "s", State: StepCompleted, Result: big}}, Now: now}), ErrTooLarge},
		{"commit bad state", ValidateCommit(Commit{Steps: []Step{{Name: "s", State: "done"}}, Now: now}), ErrInvalid},
		{"commit big values", ValidateCommit(Commit{Values: make([]byte, MaxValues+1), Now: now}), ErrTooLarge},
		{"finish running", ValidateFinish(Finish{State: StateRunning, Commit: Commit{Now: now}}), ErrInvalid},
		{"finish cancelled", ValidateFinish(Finish{State: StateCancelled, Commit: Commit{Now: now}}), ErrInvalid},
		{"finish completed", ValidateFinish(Finish{State: StateCompleted, Commit: Commit{Now: now}}), nil},
	})
}

// A time every backend can hold is accepted everywhere; one outside MinTime..MaxTime is
// refused everywhere, even where a backend's own columns could hold it (MySQL, year 9999).
func TestValidateTimeRange(t *testing.T) {
	t.Parallel()
	before, after := MinTime.Add(-time.Nanosecond), MaxTime.Add(time.Nanosecond)
	y9999 := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lease := Lease{WorkflowID: 1, Token: 1}
	requireChecks(t, []check{
		{"zero means none", ValidateTime("t", time.Time{}), nil},
		{"MinTime", ValidateTime("t", MinTime), nil},
		{"MaxTime", ValidateTime("t", MaxTime), nil},
		{"before MinTime", ValidateTime("t", before), ErrInvalid},
		{"after MaxTime", ValidateTime("t", after), ErrInvalid},
		{"year 9999", ValidateTime("t", y9999), ErrInvalid},

		{"new run time after MaxTime", ValidateNew(NewWorkflow{Name: "w", Key: "k", RunAt: after, Now: now}), ErrInvalid},
		{"new now before MinTime", ValidateNew(NewWorkflow{Name: "w", Key: "k", Now: before}), ErrInvalid},
		{"new negative parent", ValidateNew(NewWorkflow{Name: "w", Key: "k", ParentStepID: -1, Now: now}), ErrInvalid},
		{"new child of a step", ValidateNew(NewWorkflow{Name: "w", Key: "k", ParentStepID: 7, Now: now}), nil},

		{"claim now after MaxTime", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, TTL: time.Second, Now: after}), ErrInvalid},
		{"claim lease past MaxTime", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, TTL: time.Second, Now: MaxTime}), ErrInvalid},
		{"claim overflowing TTL", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, TTL: 1<<63 - 1, Now: now}), ErrInvalid},
		{"claim lease ending at MaxTime", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, TTL: time.Second, Now: MaxTime.Add(-time.Second)}), nil},

		{"claim longest TTL", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, TTL: MaxLeaseTTL, Now: now}), nil},
		{"claim TTL over MaxLeaseTTL", ValidateClaim(ClaimRequest{Owner: "o", Limit: 1, TTL: MaxLeaseTTL + 1, Now: now}), ErrInvalid},

		{"heartbeat ok", ValidateHeartbeat(lease, time.Minute, now), nil},
		{"heartbeat shortest", ValidateHeartbeat(lease, time.Nanosecond, now), nil},
		{"heartbeat zero ttl", ValidateHeartbeat(lease, 0, now), ErrInvalid},
		{"heartbeat negative ttl", ValidateHeartbeat(lease, -time.Second, now), ErrInvalid},
		{"heartbeat ttl over MaxLeaseTTL", ValidateHeartbeat(lease, MaxLeaseTTL+1, now), ErrInvalid},
		{"heartbeat zero now", ValidateHeartbeat(lease, time.Minute, time.Time{}), ErrInvalid},
		{"heartbeat run time past MaxTime", ValidateHeartbeat(lease, time.Second, MaxTime), ErrInvalid},
		{"heartbeat now after MaxTime", ValidateHeartbeat(lease, time.Second, after), ErrInvalid},
		{"heartbeat without workflow", ValidateHeartbeat(Lease{}, time.Minute, now), ErrInvalid},

		{"release ok", ValidateRelease(lease, now), nil},
		{"release without workflow", ValidateRelease(Lease{Token: 1}, now), ErrInvalid},
		{"release zero now", ValidateRelease(lease, time.Time{}), ErrInvalid},
		{"release before MinTime", ValidateRelease(lease, before), ErrInvalid},

		{"wake ok", ValidateWake(now), nil},
		{"wake zero", ValidateWake(time.Time{}), ErrInvalid},
		{"wake after MaxTime", ValidateWake(after), ErrInvalid},

		{"cancel ok", ValidateCancel(now), nil},
		{"cancel zero", ValidateCancel(time.Time{}), ErrInvalid},
		{"cancel year 9999", ValidateCancel(y9999), ErrInvalid},

		{"cleanup ok", ValidateCleanup(CleanupRequest{Before: now}), nil},
		{"cleanup zero", ValidateCleanup(CleanupRequest{Limit: 5}), ErrInvalid},
		{"cleanup after MaxTime", ValidateCleanup(CleanupRequest{Before: after}), ErrInvalid},
	})
}

func TestValidateLease(t *testing.T) {
	t.Parallel()
	requireChecks(t, []check{
		{"workflow named", ValidateLease(Lease{WorkflowID: 1}), nil},
		{"zero lease", ValidateLease(Lease{}), ErrInvalid},
		{"negative workflow", ValidateLease(Lease{WorkflowID: -1, Token: 3}), ErrInvalid},
	})
}

func TestValidateRecords(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	far := MaxTime.Add(time.Hour)
	commit := func(s ...Step) Commit { return Commit{Steps: s, Now: now} }
	errs := func(e ErrorRecord) Commit { return Commit{Errors: []ErrorRecord{e}, Now: now} }
	long := func(n int) string { return strings.Repeat("x", n) }
	requireChecks(t, []check{
		{"step ok", ValidateSteps([]Step{{Name: "s", State: StepCompleted, Attempts: MaxAttempt, CreatedAt: now, CompletedAt: now}}), nil},
		{"step negative attempts", ValidateSteps([]Step{{Name: "s", State: StepPending, Attempts: -1}}), ErrInvalid},
		{"step attempts over MaxAttempt", ValidateSteps([]Step{{Name: "s", State: StepPending, Attempts: MaxAttempt + 1}}), ErrInvalid},
		{"step created after MaxTime", ValidateSteps([]Step{{Name: "s", State: StepPending, CreatedAt: far}}), ErrInvalid},
		{"step completed after MaxTime", ValidateSteps([]Step{{Name: "s", State: StepCompleted, CompletedAt: far}}), ErrInvalid},
		{"commit bad step time", ValidateCommit(commit(Step{Name: "s", State: StepPending, CreatedAt: far})), ErrInvalid},
		{"commit now after MaxTime", ValidateCommit(Commit{Now: far}), ErrInvalid},

		{"error record ok", ValidateCommit(errs(ErrorRecord{Step: long(MaxErrorName), Type: long(MaxErrorName), Attempt: 1, CreatedAt: now})), nil},
		{"error record for the workflow", ValidateCommit(errs(ErrorRecord{Message: "m"})), nil},
		{"error record negative attempt", ValidateCommit(errs(ErrorRecord{Step: "s", Attempt: -1})), ErrInvalid},
		{"error record attempt over MaxAttempt", ValidateCommit(errs(ErrorRecord{Step: "s", Attempt: MaxAttempt + 1})), ErrInvalid},
		{"error record created after MaxTime", ValidateCommit(errs(ErrorRecord{Step: "s", CreatedAt: far})), ErrInvalid},
		{"error record long step", ValidateCommit(errs(ErrorRecord{Step: long(MaxErrorName + 1)})), ErrTooLarge},
		{"error record long type", ValidateCommit(errs(ErrorRecord{Type: long(MaxErrorName + 1)})), ErrTooLarge},
		{"error record long message", ValidateCommit(errs(ErrorRecord{Message: long(MaxErrorText + 1)})), ErrTooLarge},

		{"finish run time after MaxTime", ValidateFinish(Finish{Commit: Commit{Now: now}, State: StateIdle, RunAt: far}), ErrInvalid},
		{"finish negative attempt", ValidateFinish(Finish{Commit: Commit{Now: now}, State: StateFailed, Attempt: -1}), ErrInvalid},
		{"finish attempt over MaxAttempt", ValidateFinish(Finish{Commit: Commit{Now: now}, State: StateFailed, Attempt: MaxAttempt + 1}), ErrInvalid},
		{"finish long wait kind", ValidateFinish(Finish{Commit: Commit{Now: now}, State: StateIdle, Wait: Wait{Kind: WaitKind(long(MaxNameLen + 1))}}), ErrTooLarge},
		{"finish long wait step", ValidateFinish(Finish{Commit: Commit{Now: now}, State: StateIdle, Wait: Wait{Step: long(MaxNameLen + 1)}}), ErrTooLarge},
		{"finish big wait data", ValidateFinish(Finish{Commit: Commit{Now: now}, State: StateIdle, Wait: Wait{Data: make([]byte, MaxMeta+1)}}), ErrTooLarge},
		{"finish idle with wait", ValidateFinish(Finish{Commit: Commit{Now: now}, State: StateIdle, RunAt: now, Attempt: 2, Wait: Wait{Kind: "sleep", Step: "sleep$nap"}}), nil},

		{"retry ok", ValidateRetry(RetryRequest{Steps: []Step{{Name: "s", State: StepPending}}, Now: now}), nil},
		{"retry zero now", ValidateRetry(RetryRequest{Steps: []Step{{Name: "s", State: StepPending}}}), ErrInvalid},
		{"retry bad step", ValidateRetry(RetryRequest{Steps: []Step{{Name: "s", State: "reset"}}, Now: now}), ErrInvalid},
		{"retry step time after MaxTime", ValidateRetry(RetryRequest{Steps: []Step{{Name: "s", State: StepPending, CreatedAt: far}}, Now: now}), ErrInvalid},
	})
}

func TestValidateSpawn(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	req := func(c NewWorkflow) SpawnRequest {
		c.Name, c.Key = "child", "k"
		return SpawnRequest{Branch: "branch$b", Steps: []Step{{Name: "branch$b", State: StepPending}}, Children: []NewWorkflow{c}, Now: now}
	}
	farStep := req(NewWorkflow{})
	farStep.Steps[0].CompletedAt = MaxTime.Add(time.Second)
	late := req(NewWorkflow{})
	late.Now = MaxTime.Add(time.Second)
	requireChecks(t, []check{
		{"ok", ValidateSpawn(req(NewWorkflow{RunAt: now.Add(time.Hour)})), nil},
		{"child ParentStepID is ignored", ValidateSpawn(req(NewWorkflow{ParentStepID: -5})), nil},
		{"child run time after MaxTime", ValidateSpawn(req(NewWorkflow{RunAt: MaxTime.Add(time.Second)})), ErrInvalid},
		{"child run time before MinTime", ValidateSpawn(req(NewWorkflow{RunAt: MinTime.Add(-time.Second)})), ErrInvalid},
		{"step time after MaxTime", ValidateSpawn(farStep), ErrInvalid},
		{"now after MaxTime", ValidateSpawn(late), ErrInvalid},
	})
}

func TestValidateList(t *testing.T) {
	t.Parallel()
	requireChecks(t, []check{
		{"everything", ValidateList(ListFilter{}), nil},
		{"full filter", ValidateList(ListFilter{Name: "w", States: []State{StateIdle, StateStalled}, ParentStepID: 3, AfterID: -1, Limit: 5000}), nil},
		{"unknown state", ValidateList(ListFilter{States: []State{StateIdle, "sleeping"}}), ErrInvalid},
		{"bad name", ValidateList(ListFilter{Name: "a$b"}), ErrInvalid},
		{"negative parent", ValidateList(ListFilter{ParentStepID: -1}), ErrInvalid},
		{"due by any time", ValidateList(ListFilter{DueBy: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}), nil},
	})
}

func TestDueByBound(t *testing.T) {
	t.Parallel()
	mid := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		what  string
		in    time.Time
		want  time.Time
		match bool
	}{
		{"zero: no filter", time.Time{}, time.Time{}, true},
		{"in range", mid, mid, true},
		{"MinTime", MinTime, MinTime, true},
		{"before MinTime: nothing is due", MinTime.Add(-time.Nanosecond), time.Time{}, false},
		{"after MaxTime: as MaxTime", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), MaxTime, true},
	} {
		got, ok := DueByBound(tc.in)
		if !got.Equal(tc.want) || ok != tc.match {
			t.Errorf("%s: DueByBound(%v) = %v, %v; want %v, %v", tc.what, tc.in, got, ok, tc.want, tc.match)
		}
	}
}

// The contract's range must fit the embedded backend's Unix nanoseconds.
func TestTimeRangeFitsUnixNanoseconds(t *testing.T) {
	t.Parallel()
	if !time.Unix(0, MinTime.UnixNano()).Equal(MinTime) {
		t.Fatalf("MinTime %v does not round-trip through Unix nanoseconds", MinTime)
	}
	if !time.Unix(0, MaxTime.UnixNano()).Equal(MaxTime) {
		t.Fatalf("MaxTime %v does not round-trip through Unix nanoseconds", MaxTime)
	}
}

func TestTruncateKeepsRunes(t *testing.T) {
	if got := Truncate("héllo", 2); got != "h" {
		t.Fatalf("Truncate cut inside a rune: %q", got)
	}
	if got := Truncate("abc", 10); got != "abc" {
		t.Fatalf("Truncate changed a short string: %q", got)
	}
}

func TestEarliestTreatsZeroAsNever(t *testing.T) {
	a := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := a.Add(time.Hour)
	for _, tc := range []struct{ x, y, want time.Time }{
		{a, b, a}, {b, a, a}, {time.Time{}, b, b}, {a, time.Time{}, a}, {time.Time{}, time.Time{}, time.Time{}},
	} {
		if got := Earliest(tc.x, tc.y); !got.Equal(tc.want) {
			t.Errorf("Earliest(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
	if State("idle").Final() || !StateCancelled.Final() || StateStalled.Final() {
		t.Fatal("Final: only completed, failed and cancelled are final")
	}
}
