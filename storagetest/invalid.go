package storagetest

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testInvalidCreate: a bad name, key, payload or time is refused with ErrInvalid or
// ErrTooLarge, and no workflow is stored.
func testInvalidCreate(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	good := storage.NewWorkflow{Name: "order.charge", Key: "order-1", Input: []byte(`{}`), RunAt: at(0), Now: at(0)}
	for _, tc := range []struct {
		name   string
		modify func(w *storage.NewWorkflow)
		want   error
	}{
		{"empty name", func(w *storage.NewWorkflow) { w.Name = "" }, storage.ErrInvalid},
		{"overlong name", func(w *storage.NewWorkflow) { w.Name = strings.Repeat("n", storage.MaxNameLen+1) }, storage.ErrInvalid},
		{"overlong multi-byte name", func(w *storage.NewWorkflow) { w.Name = strings.Repeat("é", storage.MaxNameLen/2) + "x" }, storage.ErrInvalid},
		{"newline in name", func(w *storage.NewWorkflow) { w.Name = "order\ncharge" }, storage.ErrInvalid},
		{"NUL in name", func(w *storage.NewWorkflow) { w.Name = "order\x00charge" }, storage.ErrInvalid},
		{"DEL in name", func(w *storage.NewWorkflow) { w.Name = "order\x7fcharge" }, storage.ErrInvalid},
		{"'$' in name", func(w *storage.NewWorkflow) { w.Name = "order$charge" }, storage.ErrInvalid},
		{"invalid UTF-8 name", func(w *storage.NewWorkflow) { w.Name = "order\xffcharge" }, storage.ErrInvalid},
		{"empty key", func(w *storage.NewWorkflow) { w.Key = "" }, storage.ErrInvalid},
		{"overlong key", func(w *storage.NewWorkflow) { w.Key = strings.Repeat("k", storage.MaxKeyLen+1) }, storage.ErrInvalid},
		{"tab in key", func(w *storage.NewWorkflow) { w.Key = "order\t1" }, storage.ErrInvalid},
		{"C1 control in key", func(w *storage.NewWorkflow) { w.Key = "order\u00851" }, storage.ErrInvalid},
		{"invalid UTF-8 key", func(w *storage.NewWorkflow) { w.Key = "order\xc3" }, storage.ErrInvalid},
		{"oversize input", func(w *storage.NewWorkflow) { w.Input = make([]byte, storage.MaxPayload+1) }, storage.ErrTooLarge},
		{"oversize trace context", func(w *storage.NewWorkflow) { w.TraceContext = make([]byte, storage.MaxMeta+1) }, storage.ErrTooLarge},
		{"zero now", func(w *storage.NewWorkflow) { w.Now = time.Time{} }, storage.ErrInvalid},
	} {
		w := good
		tc.modify(&w)
		_, created, err := f.s.CreateWorkflow(f.ctx, w)
		require.ErrorIs(t, err, tc.want, "CreateWorkflow with %s", tc.name)
		require.False(t, created, "CreateWorkflow with %s reports created", tc.name)
	}
	_, err := f.s.FindWorkflow(f.ctx, good.Name, good.Key)
	require.ErrorIs(t, err, storage.ErrNotFound, "a refused create stored a workflow")
	require.Empty(t, f.list(storage.ListFilter{}), "refused creates stored workflows")
	f.requireNoClaim(at(time.Hour), "refused creates stored runnable workflows")
}

// testInvalidClaim: a malformed claim is refused with ErrInvalid and leases nothing.
func testInvalidClaim(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("job", "k", at(0))
	good := storage.ClaimRequest{Owner: "w", Limit: 1, TTL: ttl, Now: at(time.Second)}
	for _, tc := range []struct {
		name   string
		modify func(r *storage.ClaimRequest)
	}{
		{"empty owner", func(r *storage.ClaimRequest) { r.Owner = "" }},
		{"overlong owner", func(r *storage.ClaimRequest) { r.Owner = strings.Repeat("o", storage.MaxOwnerLen+1) }},
		{"zero limit", func(r *storage.ClaimRequest) { r.Limit = 0 }},
		{"negative limit", func(r *storage.ClaimRequest) { r.Limit = -1 }},
		{"limit above MaxClaim", func(r *storage.ClaimRequest) { r.Limit = storage.MaxClaim + 1 }},
		{"zero TTL", func(r *storage.ClaimRequest) { r.TTL = 0 }},
		{"negative TTL", func(r *storage.ClaimRequest) { r.TTL = -time.Second }},
		{"zero now", func(r *storage.ClaimRequest) { r.Now = time.Time{} }},
	} {
		r := good
		tc.modify(&r)
		got, err := f.s.Claim(f.ctx, r)
		require.ErrorIs(t, err, storage.ErrInvalid, "Claim with %s", tc.name)
		require.Empty(t, got, "Claim with %s returned workflows", tc.name)
	}
	requireLeaseUnchanged(t, w, f.get(w.ID))
	f.claimOne(w, "w", at(time.Second))
}

// testInvalidCommit: a commit with a bad step, oversize values or error records, or no time
// is refused whole: none of its records are written and the lease stays usable.
func testInvalidCommit(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("commits")
	f.save(l, storage.Commit{Steps: []storage.Step{step("kept", []byte("1"))}, Values: []byte(`{"v":1}`), Now: at(time.Second)})
	before, stepsBefore := f.load(w.ID)

	for _, tc := range []struct {
		name   string
		modify func(c *storage.Commit)
		want   error
	}{
		{"empty step name", func(c *storage.Commit) { c.Steps[1].Name = "" }, storage.ErrInvalid},
		{"overlong step name", func(c *storage.Commit) { c.Steps[1].Name = strings.Repeat("s", storage.MaxNameLen+1) }, storage.ErrInvalid},
		{"control character in step name", func(c *storage.Commit) { c.Steps[1].Name = "a\rb" }, storage.ErrInvalid},
		{"unknown step state", func(c *storage.Commit) { c.Steps[1].State = "done" }, storage.ErrInvalid},
		{"oversize step result", func(c *storage.Commit) { c.Steps[1].Result = make([]byte, storage.MaxPayload+1) }, storage.ErrTooLarge},
		{"oversize step meta", func(c *storage.Commit) { c.Steps[1].Meta = make([]byte, storage.MaxMeta+1) }, storage.ErrTooLarge},
		{"oversize step error", func(c *storage.Commit) { c.Steps[1].LastError = strings.Repeat("e", storage.MaxErrorText+1) }, storage.ErrTooLarge},
		{"oversize values", func(c *storage.Commit) {
			c.Values = []byte(`{"v":"` + strings.Repeat("x", storage.MaxValues) + `"}`)
		}, storage.ErrTooLarge},
		{"oversize error message", func(c *storage.Commit) { c.Errors[0].Message = strings.Repeat("m", storage.MaxErrorText+1) }, storage.ErrTooLarge},
		{"oversize error values", func(c *storage.Commit) { c.Errors[0].Values = make([]byte, storage.MaxErrorText+1) }, storage.ErrTooLarge},
		{"zero now", func(c *storage.Commit) { c.Now = time.Time{} }, storage.ErrInvalid},
	} {
		// Each bad commit also carries good records, which must not be written either.
		c := storage.Commit{
			Steps:  []storage.Step{step("kept", []byte("2")), step("new", []byte("3"))},
			Values: []byte(`{"v":2}`),
			Errors: []storage.ErrorRecord{{Step: "new", Attempt: 1, Message: "boom"}},
			Now:    at(2 * time.Second),
		}
		tc.modify(&c)
		require.ErrorIs(t, f.s.SaveSteps(f.ctx, l, c), tc.want, "SaveSteps with %s", tc.name)
		require.ErrorIs(t, f.s.FinishRun(f.ctx, l, storage.Finish{Commit: c, State: storage.StateCompleted}), tc.want, "FinishRun with %s", tc.name)
	}

	after, stepsAfter := f.load(w.ID)
	requireLeaseUnchanged(t, before, after)
	require.Equal(t, stepsBefore, stepsAfter, "refused commits wrote steps")
	requireJSON(t, before.Values, after.Values, "values after refused commits")
	require.Empty(t, after.LastError, "refused commits wrote an error record")
	errs, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	require.Empty(t, errs, "refused commits wrote error records")

	f.save(l, storage.Commit{Steps: []storage.Step{step("new", []byte("3"))}, Now: at(3 * time.Second)})
}

// testInvalidFinish: an oversize output is refused with ErrTooLarge and the run stays as it
// was.
func testInvalidFinish(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("finish")
	before := f.get(w.ID)
	err := f.s.FinishRun(f.ctx, l, storage.Finish{
		Commit: storage.Commit{Steps: []storage.Step{step("last", nil)}, Now: at(time.Second)},
		State:  storage.StateCompleted,
		Output: make([]byte, storage.MaxPayload+1),
	})
	require.ErrorIs(t, err, storage.ErrTooLarge)
	after, steps := f.load(w.ID)
	requireLeaseUnchanged(t, before, after)
	require.Empty(t, after.Output)
	require.Empty(t, steps)
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateCompleted, Output: []byte(`"ok"`)})
}

// testInvalidRetry: a retry with bad steps or no time is refused and the workflow stays
// stalled with its steps as they were.
func testInvalidRetry(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, _ := f.stall("stalled")
	before, stepsBefore := f.load(w.ID)
	for _, tc := range []struct {
		name string
		r    storage.RetryRequest
		want error
	}{
		{"empty step name", storage.RetryRequest{Steps: []storage.Step{{State: storage.StepPending}}, Now: at(time.Hour)}, storage.ErrInvalid},
		{"unknown step state", storage.RetryRequest{Steps: []storage.Step{{Name: "charge", State: "reset"}}, Now: at(time.Hour)}, storage.ErrInvalid},
		{"oversize step result", storage.RetryRequest{Steps: []storage.Step{{Name: "charge", State: storage.StepPending, Result: make([]byte, storage.MaxPayload+1)}}, Now: at(time.Hour)}, storage.ErrTooLarge},
		{"zero now", storage.RetryRequest{Steps: []storage.Step{{Name: "charge", State: storage.StepPending}}}, storage.ErrInvalid},
	} {
		_, err := f.s.Retry(f.ctx, w.ID, tc.r)
		require.ErrorIs(t, err, tc.want, "Retry with %s", tc.name)
	}
	after, stepsAfter := f.load(w.ID)
	require.Equal(t, storage.StateStalled, after.State)
	require.Equal(t, before.Attempt, after.Attempt)
	require.Equal(t, stepsBefore, stepsAfter, "refused retries wrote steps")
}

// testInvalidList: a filter naming an unknown state is refused with ErrInvalid.
func testInvalidList(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	f.create("job", "k", at(0))
	_, err := f.s.ListWorkflows(f.ctx, storage.ListFilter{States: []storage.State{storage.StateIdle, "sleeping"}})
	require.ErrorIs(t, err, storage.ErrInvalid)
}
