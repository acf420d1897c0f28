package storage

import (
	"errors"
	"testing"
	"time"
)

// The validators are what every backend runs first on outside data, so their property is
// the contract's: whatever the input, a clear error wrapping ErrInvalid or ErrTooLarge, or
// nil, and never a panic. `make fuzz` runs each target for a bounded time; plain `go test`
// runs the seeds.

// refused requires err to be nil or to wrap one of the input sentinels.
func refused(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%s: error %v wraps neither ErrInvalid nor ErrTooLarge", what, err)
	}
	if err != nil && err.Error() == "" {
		t.Fatalf("%s: an empty error message", what)
	}
}

func FuzzValidateNew(f *testing.F) {
	f.Add("orders", "k-1", []byte(`{"n":1}`), "tenant", "acme", int64(0), int64(0))
	f.Add("a$b", "", []byte{0xff, 0x00}, "", "", int64(-1), int64(1<<62))
	f.Add("ü\x00", "key\nnewline", []byte(nil), "k\u0085", "v", int64(5), int64(-1<<62))
	f.Fuzz(func(t *testing.T, name, key string, input []byte, tagKey, tagValue string, parent, runAtNanos int64) {
		w := NewWorkflow{Name: name, Key: key, Input: input, ParentStepID: parent,
			Now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), RunAt: time.Unix(0, runAtNanos).UTC()}
		if tagKey != "" || tagValue != "" {
			w.Tags = map[string]string{tagKey: tagValue}
		}
		refused(t, "ValidateNew", ValidateNew(w))
		refused(t, "ValidateFind", ValidateFind(name, key))
		refused(t, "ValidateCreateBatch", ValidateCreateBatch([]NewWorkflow{w, w}))
	})
}

func FuzzValidateList(f *testing.F) {
	f.Add("orders", "k-", "idle", int64(0), int64(0), 10)
	f.Add("", "%_\\", "bogus", int64(-5), int64(-1), -1)
	f.Add("a$b", "\xff", "", int64(1<<62), int64(3), 1<<30)
	f.Fuzz(func(t *testing.T, name, prefix, state string, after, before int64, limit int) {
		l := ListFilter{Name: name, KeyPrefix: prefix, AfterID: after, BeforeID: before, Limit: limit, Desc: after%2 == 0}
		if state != "" {
			l.States = []State{State(state)}
		}
		refused(t, "ValidateList", ValidateList(l))
		if got := ListLimit(l); got < 1 || got > MaxListLimit {
			t.Fatalf("ListLimit(%d) = %d, outside 1..%d", limit, got, MaxListLimit)
		}
		refused(t, "ValidateCountStates", ValidateCountStates(CountStatesQuery{Name: name, Sample: limit}))
		refused(t, "ValidateBranchQuery", ValidateBranchQuery(BranchQuery{StepID: after, Cap: limit}))
	})
}
