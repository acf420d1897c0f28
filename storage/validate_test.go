package storage

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateNamesAndKeys(t *testing.T) {
	for _, tc := range []struct {
		what string
		err  error
		want error
	}{
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
	} {
		if !errors.Is(tc.err, tc.want) || (tc.want == nil) != (tc.err == nil) {
			t.Errorf("%s: got %v, want %v", tc.what, tc.err, tc.want)
		}
	}
}

func TestValidateRequests(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	big := make([]byte, MaxPayload+1)
	checks := []struct {
		what string
		err  error
		want error
	}{
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
	}
	for _, tc := range checks {
		if !errors.Is(tc.err, tc.want) || (tc.want == nil) != (tc.err == nil) {
			t.Errorf("%s: got %v, want %v", tc.what, tc.err, tc.want)
		}
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
