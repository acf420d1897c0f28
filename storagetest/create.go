package storagetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testCreateIdempotent: creating the same name and key twice gives the first workflow back,
// unchanged, and stores one row.
func testCreateIdempotent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	first := storage.NewWorkflow{
		Name:         "order.charge",
		Key:          "order-1",
		Input:        payload(300, 1),
		TraceContext: []byte(`{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`),
		RunAt:        at(0),
		Now:          at(0),
	}
	w1, created, err := f.s.CreateWorkflow(f.ctx, first)
	require.NoError(t, err)
	require.True(t, created, "first create must report created")
	require.NotZero(t, w1.ID)
	require.Equal(t, "order.charge", w1.Name)
	require.Equal(t, "order-1", w1.Key)
	require.Equal(t, storage.StateIdle, w1.State)
	requireBytes(t, first.Input, w1.Input, "input")
	requireBytes(t, first.TraceContext, w1.TraceContext, "trace context")
	requireTime(t, at(0), w1.RunAt, "run at")
	requireTime(t, at(0), w1.CreatedAt, "created at (the request's Now)")
	require.Zero(t, w1.Attempt)
	require.Zero(t, w1.ParentStepID)
	require.Empty(t, w1.Output)
	require.Empty(t, w1.Values)

	second := first
	second.Input = payload(10, 2)
	second.RunAt = at(time.Hour)
	second.Now = at(time.Minute)
	w2, created, err := f.s.CreateWorkflow(f.ctx, second)
	require.NoError(t, err)
	require.False(t, created, "second create of the same name and key must not create")
	require.Equal(t, w1.ID, w2.ID)
	requireBytes(t, first.Input, w2.Input, "input returned by the second create (the stored input wins)")
	requireTime(t, at(0), w2.RunAt, "run at returned by the second create")

	got := f.get(w1.ID)
	requireBytes(t, first.Input, got.Input, "stored input after the second create")
	requireTime(t, at(0), got.RunAt, "stored run at after the second create")
	require.Equal(t, storage.StateIdle, got.State)

	all, err := f.s.ListWorkflows(f.ctx, storage.ListFilter{})
	require.NoError(t, err)
	require.Equal(t, []int64{w1.ID}, ids(all), "two creates of one name and key must store one row")
}

// testCreateConcurrent: many concurrent creates of one name and key make exactly one row, and
// every caller gets that row with the winner's input.
func testCreateConcurrent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const n = 16
	type result struct {
		w       storage.Workflow
		created bool
		err     error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			w, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{
				Name:  "order.charge",
				Key:   "order-1",
				Input: []byte(fmt.Sprintf(`{"caller":%d}`, i)),
				RunAt: at(0),
				Now:   at(0),
			})
			results[i] = result{w, created, err}
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, r := range results {
		require.NoError(t, r.err, "caller %d", i)
		if r.created {
			require.Equal(t, -1, winner, "callers %d and %d both report created", winner, i)
			winner = i
		}
	}
	require.NotEqual(t, -1, winner, "no caller reports created")
	wantInput := []byte(fmt.Sprintf(`{"caller":%d}`, winner))
	for i, r := range results {
		require.Equal(t, results[winner].w.ID, r.w.ID, "caller %d got another workflow", i)
		requireBytes(t, wantInput, r.w.Input, fmt.Sprintf("input returned to caller %d", i))
	}
	all, err := f.s.ListWorkflows(f.ctx, storage.ListFilter{})
	require.NoError(t, err)
	require.Len(t, all, 1, "concurrent creates of one name and key must store one row")
}

// testCreateDistinctKeys: uniqueness is by name and key together.
func testCreateDistinctKeys(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	a := f.create("order.charge", "order-1", at(0))
	b := f.create("order.charge", "order-2", at(0))
	c := f.create("order.refund", "order-1", at(0))
	require.NotEqual(t, a.ID, b.ID)
	require.NotEqual(t, a.ID, c.ID)
	require.NotEqual(t, b.ID, c.ID)

	all, err := f.s.ListWorkflows(f.ctx, storage.ListFilter{})
	require.NoError(t, err)
	require.ElementsMatch(t, []int64{a.ID, b.ID, c.ID}, ids(all))
}

// testGetAndFind: a workflow is found by ID and by name and key; unknown ones are ErrNotFound.
func testGetAndFind(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("order.charge", "order-1", at(0))
	f.create("order.charge", "order-2", at(0))

	got := f.get(w.ID)
	require.Equal(t, w.ID, got.ID)
	require.Equal(t, "order-1", got.Key)
	requireBytes(t, w.Input, got.Input, "input")

	found, err := f.s.FindWorkflow(f.ctx, "order.charge", "order-1")
	require.NoError(t, err)
	require.Equal(t, w.ID, found.ID)

	loaded, steps, err := f.s.Load(f.ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, w.ID, loaded.ID)
	require.Empty(t, steps, "a new workflow has no steps")

	unknown := w.ID + 1_000_000
	_, err = f.s.GetWorkflow(f.ctx, unknown)
	require.ErrorIs(t, err, storage.ErrNotFound, "GetWorkflow of an unknown id")
	_, _, err = f.s.Load(f.ctx, unknown)
	require.ErrorIs(t, err, storage.ErrNotFound, "Load of an unknown id")
	_, err = f.s.FindWorkflow(f.ctx, "order.charge", "order-3")
	require.ErrorIs(t, err, storage.ErrNotFound, "FindWorkflow of an unknown key")
	_, err = f.s.FindWorkflow(f.ctx, "order.refund", "order-1")
	require.ErrorIs(t, err, storage.ErrNotFound, "FindWorkflow of a known key under another name")
}

// testLimitsAccepted: values exactly at every limit are stored and come back byte for byte, so
// a workflow valid on one backend is valid on all of them.
func testLimitsAccepted(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	name := strings.Repeat("é", storage.MaxNameLen/2) // multi-byte runes, exactly MaxNameLen bytes
	key := "ключ-" + strings.Repeat("k", storage.MaxKeyLen-len("ключ-"))
	input := payload(storage.MaxPayload, 3)
	require.Len(t, name, storage.MaxNameLen)
	require.Len(t, key, storage.MaxKeyLen)

	w, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{
		Name: name, Key: key, Input: input, TraceContext: payload(storage.MaxMeta, 4), RunAt: at(0), Now: at(0),
	})
	require.NoError(t, err, "create at the name, key, input and trace limits")
	require.True(t, created)
	found, err := f.s.FindWorkflow(f.ctx, name, key)
	require.NoError(t, err)
	require.Equal(t, w.ID, found.ID)
	require.Equal(t, name, found.Name)
	require.Equal(t, key, found.Key)
	requireBytes(t, input, found.Input, "input of MaxPayload bytes")
	requireBytes(t, payload(storage.MaxMeta, 4), found.TraceContext, "trace context of MaxMeta bytes")

	l := f.claimOne(w, "worker-a", at(0))
	stepName := "sleep$" + strings.Repeat("s", storage.MaxNameLen-len("sleep$"))
	values := []byte(`{"v":"` + strings.Repeat("x", storage.MaxValues-len(`{"v":""}`)) + `"}`)
	require.Len(t, values, storage.MaxValues)
	st := storage.Step{
		Name:      stepName,
		State:     storage.StepCompleted,
		Attempts:  1,
		Result:    payload(storage.MaxPayload, 5),
		Meta:      payload(storage.MaxMeta, 6),
		LastError: strings.Repeat("e", storage.MaxErrorText),
	}
	rec := storage.ErrorRecord{
		Step: stepName, Attempt: 1, Type: strings.Repeat("T", storage.MaxNameLen*2),
		Message: strings.Repeat("m", storage.MaxErrorText), Values: []byte(`{}`),
	}
	f.save(l, storage.Commit{Steps: []storage.Step{st}, Values: values, Errors: []storage.ErrorRecord{rec}, Now: at(time.Second)})
	output := payload(storage.MaxPayload, 7)
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateCompleted, Output: output})

	got, steps := f.load(w.ID)
	require.Equal(t, storage.StateCompleted, got.State)
	requireBytes(t, output, got.Output, "output of MaxPayload bytes")
	requireJSON(t, values, got.Values, "values of MaxValues bytes")
	require.Len(t, steps, 1)
	require.Equal(t, stepName, steps[0].Name, "a step name may contain '$'")
	requireBytes(t, st.Result, steps[0].Result, "step result of MaxPayload bytes")
	requireBytes(t, st.Meta, steps[0].Meta, "step meta of MaxMeta bytes")
	require.Equal(t, st.LastError, steps[0].LastError, "step last error of MaxErrorText bytes")
	errs, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	require.Len(t, errs, 1)
	require.Equal(t, rec.Message, errs[0].Message, "error message of MaxErrorText bytes")
	require.Equal(t, rec.Type, errs[0].Type)
}
