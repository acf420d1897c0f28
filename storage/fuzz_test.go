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

// FuzzValidateMessage: the checks of SendMessage, ConsumeMessage and Claim on their outside
// data (topic, message key, payload, step name, lease owner).
func FuzzValidateMessage(f *testing.F) {
	f.Add(int64(1), "orders", "", []byte(`{"n":1}`), "receive$a")
	f.Add(int64(0), "", "k", []byte(nil), "")
	f.Add(int64(-1), "t\x00", "\xff", []byte{0xff}, "s\n")
	f.Add(int64(1<<62), "ü🔑", "k\u2028", []byte("x"), "receive$ü")
	f.Fuzz(func(t *testing.T, id int64, topic, key string, payload []byte, step string) {
		now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		refused(t, "ValidateMessage", ValidateMessage(NewMessage{WorkflowID: id, Topic: topic, Key: key, Payload: payload, Now: now}))
		lease := Lease{WorkflowID: id, Owner: key, Token: id}
		refused(t, "ValidateConsume", ValidateConsume(lease, ConsumeRequest{Commit: Commit{Now: now}, Topic: topic, Step: step}))
		refused(t, "ValidateClaim", ValidateClaim(ClaimRequest{Owner: key, Limit: int(id % 2000), TTL: time.Duration(id), Now: now}))
	})
}

// FuzzValidateFlow: PutFlow's checks of a flow key and its limits, and FlowCapacity of an
// accepted flow, which never goes below zero or above the claim's limit.
func FuzzValidateFlow(f *testing.F) {
	f.Add("orders", 0, 0, 0, int64(0), 10, 0, 0)
	f.Add("orders", -3, 2, 5, int64(time.Second), 1, 1, 4)
	f.Add("", MaxPriority+1, -1, 1, int64(0), -1, -1, -1)
	f.Add("a$b\x00", MinPriority, MaxConcurrency+1, MaxRate+1, int64(MaxPer+1), 1<<30, 1<<30, 1<<30)
	f.Fuzz(func(t *testing.T, key string, priority, concurrency, rate int, per int64, limit, running, inWindow int) {
		fl := Flow{Key: key, Priority: priority, Concurrency: concurrency, Rate: rate, Per: time.Duration(per)}
		err := ValidateFlow(fl, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		refused(t, "ValidateFlow", err)
		refused(t, "ValidateFlowKey", ValidateFlowKey(key))
		if err != nil {
			return
		}
		// A stored flow's capacity is never negative and never above the claim's limit.
		if n := FlowCapacity(fl, limit, running, inWindow); n < 0 || n > max(limit, 0) {
			t.Fatalf("FlowCapacity(%+v, %d, %d, %d) = %d, outside 0..limit", fl, limit, running, inWindow, n)
		}
	})
}

// FuzzValidateFinish: the checks of the step records, durable values, error records, output
// and wait that SaveSteps, FinishRun and Retry write.
func FuzzValidateFinish(f *testing.F) {
	f.Add("a", "completed", []byte(`1`), []byte(`{}`), "merge", "branch$b", []byte(`{"ids":[1]}`), "idle", 1)
	f.Add("", "bogus", []byte(nil), []byte(nil), "", "", []byte(nil), "running", 0)
	f.Add("s\x00", "pending", []byte{0xff}, []byte{0}, "k\n", "\xff", []byte("x"), "cancelled", -1)
	f.Fuzz(func(t *testing.T, step, stepState string, result, meta []byte, waitKind, waitStep string, waitData []byte, state string, attempt int) {
		now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		st := Step{Name: step, State: StepState(stepState), Result: result, Meta: meta, Attempts: attempt, CreatedAt: now}
		c := Commit{Steps: []Step{st}, Values: meta, Errors: []ErrorRecord{{Step: step, Attempt: attempt, Message: string(result)}}, Now: now}
		refused(t, "ValidateSteps", ValidateSteps(c.Steps))
		refused(t, "ValidateCommit", ValidateCommit(c))
		refused(t, "ValidateFinish", ValidateFinish(Finish{State: State(state), Commit: c, Output: result, Attempt: attempt,
			Wait: Wait{Kind: WaitKind(waitKind), Step: waitStep, Data: waitData}, RunAt: now}))
		refused(t, "ValidateRetry", ValidateRetry(RetryRequest{Steps: c.Steps, Now: now}))
	})
}
