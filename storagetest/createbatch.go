package storagetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Bulk starts: CreateWorkflows is CreateWorkflow for a batch, in one unit, all or nothing.

// createBatch calls CreateWorkflows and requires that it succeeded and answered one workflow
// and one flag per input, in input order (matched by name and key).
func (f *fixture) createBatch(ws []storage.NewWorkflow) ([]storage.Workflow, []bool) {
	f.t.Helper()
	out, created, err := f.s.CreateWorkflows(f.ctx, ws)
	require.NoError(f.t, err, "CreateWorkflows of %d workflows", len(ws))
	require.Len(f.t, out, len(ws), "CreateWorkflows returns one workflow per input")
	require.Len(f.t, created, len(ws), "CreateWorkflows returns one created flag per input")
	for i, w := range ws {
		require.Equal(f.t, w.Name, out[i].Name, "workflow %d of the batch: out follows the order of the input", i)
		require.Equal(f.t, w.Key, out[i].Key, "workflow %d of the batch: out follows the order of the input", i)
		require.Positive(f.t, out[i].ID, "workflow %d of the batch has no ID", i)
	}
	return out, created
}

// batch returns n new workflows named name, keyed <prefix><i>, runnable at once at at(0).
func batch(name, prefix string, n int) []storage.NewWorkflow {
	out := make([]storage.NewWorkflow, 0, n)
	for i := range n {
		out = append(out, storage.NewWorkflow{Name: name, Key: fmt.Sprint(prefix, i), Input: []byte(fmt.Sprintf(`{"i":%d}`, i)), Now: at(0)})
	}
	return out
}

// testCreateBatch: CreateWorkflows stores every workflow of the batch as CreateWorkflow would
// (idle, input, trace context, tags, parent step, RunAt, CreatedAt) and answers them in the
// order given, each flagged created.
func testCreateBatch(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	ws := []storage.NewWorkflow{
		{Name: "bulk.b", Key: "z", Input: payload(100, 1), TraceContext: []byte(`{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`), RunAt: at(time.Minute), Now: at(0)},
		{Name: "bulk.a", Key: "y", Input: payload(10, 2), Tags: map[string]string{"tenant": "acme", "env": ""}, Now: east(atMicro(0))},
		{Name: "bulk.b", Key: "a", RunAt: at(time.Hour), Now: at(0)},
		{Name: "bulk.a", Key: "z", Input: []byte(`"fourth"`), Now: at(time.Second)},
	}
	out, created := f.createBatch(ws)
	require.Equal(t, []bool{true, true, true, true}, created, "every workflow of a new batch is created")
	seen := map[int64]bool{}
	for i, w := range out {
		require.False(t, seen[w.ID], "workflow %d of the batch shares an ID", i)
		seen[w.ID] = true
	}
	wantRunAt := []time.Time{at(time.Minute), atMicro(0), at(time.Hour), at(time.Second)}
	wantCreated := []time.Time{at(0), atMicro(0), at(0), at(time.Second)}
	for i, in := range ws {
		for _, p := range append(f.readEverywhere(out[i].ID), readPath{"CreateWorkflows", out[i]}) {
			w := p.w
			what := fmt.Sprintf("workflow %d of the batch (%s)", i, p.method)
			require.Equal(t, out[i].ID, w.ID, what)
			require.Equal(t, storage.StateIdle, w.State, what)
			requireBytes(t, in.Input, w.Input, what+": input")
			requireBytes(t, in.TraceContext, w.TraceContext, what+": trace context")
			require.Equal(t, tagsOrNil(in.Tags), w.Tags, what+": tags")
			require.Zero(t, w.ParentStepID, what)
			requireTime(t, wantRunAt[i], w.RunAt, what+": run at (zero means Now)")
			requireTime(t, wantCreated[i], w.CreatedAt, what+": created at")
			requireTime(t, wantCreated[i], w.UpdatedAt, what+": updated at")
			require.Empty(t, w.Output, what)
			require.Zero(t, w.Attempt, what)
		}
	}
	require.ElementsMatch(t, ids(out), ids(f.list(storage.ListFilter{})), "the batch stored its workflows and nothing else")

	// RunAt is honoured: nothing is claimable before it.
	f.requireNoClaim(atMicro(0).Add(-time.Microsecond), "the first RunAt of the batch is atMicro(0)")
	require.Equal(t, []int64{out[1].ID}, ids(f.claim("worker-a", atMicro(0), 10)), "only the workflow due at its Now is claimable then")
	f.requireNoClaim(at(time.Second-time.Millisecond), "the next RunAt of the batch is at(1s)")
	require.Equal(t, []int64{out[3].ID}, ids(f.claim("worker-a", at(time.Second), 10)))
	require.Equal(t, []int64{out[0].ID}, ids(f.claim("worker-a", at(time.Hour-time.Millisecond), 10)))
	require.Equal(t, []int64{out[2].ID}, ids(f.claim("worker-a", at(time.Hour), 10)))
}

// testCreateBatchIdempotent: a workflow of the batch whose name and key are stored is
// answered as stored (the stored input wins, created false), next to the new ones, in input
// order; applying a batch twice creates nothing the second time.
func testCreateBatchIdempotent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	stored, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{
		Name: "bulk", Key: "k1", Input: []byte(`"stored"`), Tags: map[string]string{"v": "1"}, RunAt: at(time.Hour), Now: at(0),
	})
	require.NoError(t, err)
	require.True(t, created)
	ws := []storage.NewWorkflow{
		{Name: "bulk", Key: "k0", Input: []byte(`"new-0"`), Now: at(time.Minute)},
		{Name: "bulk", Key: "k1", Input: []byte(`"again"`), Tags: map[string]string{"v": "2"}, RunAt: at(time.Second), Now: at(time.Minute)},
		{Name: "bulk", Key: "k2", Input: []byte(`"new-2"`), Now: at(time.Minute)},
	}
	out, created2 := f.createBatch(ws)
	require.Equal(t, []bool{true, false, true}, created2, "only the workflows not stored are created")
	require.Equal(t, stored.ID, out[1].ID, "the stored workflow is answered in its place")
	requireBytes(t, []byte(`"stored"`), out[1].Input, "input of the stored workflow (the stored input wins)")
	require.Equal(t, map[string]string{"v": "1"}, out[1].Tags, "tags of the stored workflow (the stored ones win)")
	requireTime(t, at(time.Hour), out[1].RunAt, "run at of the stored workflow")
	requireTime(t, at(0), out[1].CreatedAt, "created at of the stored workflow")
	got := f.get(stored.ID)
	requireBytes(t, []byte(`"stored"`), got.Input, "stored input after the batch")
	requireTime(t, at(time.Hour), got.RunAt, "stored run at after the batch")
	requireTime(t, at(0), got.UpdatedAt, "updated at: the batch did not write the stored workflow")

	again, created3 := f.createBatch(ws)
	require.Equal(t, []bool{false, false, false}, created3, "a batch applied twice creates nothing the second time")
	require.Equal(t, ids(out), ids(again), "the second application answers the same workflows")
	for i := range again {
		requireBytes(t, out[i].Input, again[i].Input, fmt.Sprintf("input of workflow %d on the second application", i))
	}
	require.ElementsMatch(t, ids(out), ids(f.list(storage.ListFilter{})), "three workflows in all")
}

// testCreateBatchAllOrNothing: a batch with a bad workflow anywhere in it, a name and key
// twice, no workflow or more than MaxCreateBatch is refused with ErrInvalid or ErrTooLarge
// and stores none of its workflows, not even the good ones.
func testCreateBatchAllOrNothing(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	good := func() []storage.NewWorkflow { return batch("bulk.good", "g", 5) }
	for _, tc := range []struct {
		name string
		ws   func() []storage.NewWorkflow
		want error
	}{
		{"nil batch", func() []storage.NewWorkflow { return nil }, storage.ErrInvalid},
		{"empty batch", func() []storage.NewWorkflow { return []storage.NewWorkflow{} }, storage.ErrInvalid},
		{"more than MaxCreateBatch", func() []storage.NewWorkflow { return batch("bulk.good", "g", storage.MaxCreateBatch+1) }, storage.ErrInvalid},
		{"bad name last", func() []storage.NewWorkflow { ws := good(); ws[4].Name = "bad$name"; return ws }, storage.ErrInvalid},
		{"empty key first", func() []storage.NewWorkflow { ws := good(); ws[0].Key = ""; return ws }, storage.ErrInvalid},
		{"zero now in the middle", func() []storage.NewWorkflow { ws := good(); ws[2].Now = time.Time{}; return ws }, storage.ErrInvalid},
		{"run at out of range", func() []storage.NewWorkflow { ws := good(); ws[2].RunAt = storage.MaxTime.AddDate(1, 0, 0); return ws }, storage.ErrInvalid},
		{"negative parent step", func() []storage.NewWorkflow { ws := good(); ws[3].ParentStepID = -1; return ws }, storage.ErrInvalid},
		{"oversize input", func() []storage.NewWorkflow {
			ws := good()
			ws[3].Input = make([]byte, storage.MaxPayload+1)
			return ws
		}, storage.ErrTooLarge},
		{"bad tag", func() []storage.NewWorkflow { ws := good(); ws[1].Tags = map[string]string{"": "x"}; return ws }, storage.ErrInvalid},
		{"name and key twice", func() []storage.NewWorkflow { ws := good(); ws[4].Key = ws[1].Key; return ws }, storage.ErrInvalid},
	} {
		out, created, err := f.s.CreateWorkflows(f.ctx, tc.ws())
		require.ErrorIs(t, err, tc.want, "CreateWorkflows with %s", tc.name)
		require.NotContains(t, created, true, "CreateWorkflows with %s reports a workflow created", tc.name)
		for _, w := range out {
			require.Zero(t, w.ID, "CreateWorkflows with %s answered a stored workflow", tc.name)
		}
	}
	for _, w := range good() {
		_, err := f.s.FindWorkflow(f.ctx, w.Name, w.Key)
		require.ErrorIs(t, err, storage.ErrNotFound, "a refused batch stored %q %q", w.Name, w.Key)
	}
	require.Empty(t, f.list(storage.ListFilter{}), "refused batches stored workflows")
	f.requireNoClaim(at(time.Hour), "refused batches stored runnable workflows")

	// A refused batch that names a stored workflow leaves that one as it was.
	stored := f.create("bulk.good", "g1", at(time.Hour))
	ws := good()
	ws[4].Name = ""
	_, _, err := f.s.CreateWorkflows(f.ctx, ws)
	require.ErrorIs(t, err, storage.ErrInvalid)
	require.Equal(t, []int64{stored.ID}, ids(f.list(storage.ListFilter{})), "a refused batch stored workflows")
	requireTime(t, at(time.Hour), f.get(stored.ID).RunAt, "a refused batch changed a stored workflow")
}

// testCreateBatchMax: a batch of exactly MaxCreateBatch workflows is accepted and stores them
// all; the same batch again creates none.
func testCreateBatchMax(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	ws := batch("bulk.max", "m", storage.MaxCreateBatch)
	out, created := f.createBatch(ws)
	require.NotContains(t, created, false, "every workflow of a new batch of MaxCreateBatch is created")
	uniq := map[int64]bool{}
	for _, w := range out {
		uniq[w.ID] = true
	}
	require.Len(t, uniq, storage.MaxCreateBatch, "distinct IDs")
	_, again := f.createBatch(ws)
	require.NotContains(t, again, true, "the same batch again creates none")
	n, after := 0, int64(0)
	for {
		page := f.list(storage.ListFilter{Name: "bulk.max", AfterID: after, Limit: storage.MaxListLimit})
		if len(page) == 0 {
			break
		}
		n += len(page)
		after = page[len(page)-1].ID
	}
	require.Equal(t, storage.MaxCreateBatch, n, "workflows stored")
}

// testCreateBatchParent: a ParentStepID given to CreateWorkflows is stored as given, and the
// workflows count as children of that step everywhere children count.
func testCreateBatchParent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	p, l := f.start("bulk.parent")
	f.save(l, storage.Commit{Steps: []storage.Step{branchStep("branch$b")}, Now: at(time.Second)})
	stepID := f.stepID(p.ID, "branch$b")
	require.Positive(t, stepID)
	ws := batch("bulk.child", "c", 3)
	for i := range ws {
		ws[i].ParentStepID = stepID
	}
	ws = append(ws, storage.NewWorkflow{Name: "bulk.root", Key: "r", Now: at(0)})
	out, _ := f.createBatch(ws)
	for i, w := range out[:3] {
		require.Equal(t, stepID, w.ParentStepID, "parent step of workflow %d as returned", i)
		require.Equal(t, stepID, f.get(w.ID).ParentStepID, "parent step of workflow %d as stored", i)
	}
	require.Zero(t, out[3].ParentStepID, "a root stays a root")
	require.Equal(t, ids(out[:3]), ids(f.childrenOf(stepID)), "ListFilter.ParentStepID finds the batch's children")
	require.Equal(t, 3, f.countChildren(storage.ChildQuery{StepIDs: []int64{stepID}, States: []storage.State{storage.StateIdle}, Cap: 10}))
}

// testCreateBatchConcurrent: batches that overlap, applied at once by several goroutines
// (some in reverse order, so that row locks are taken in opposite orders), create each
// workflow exactly once; every caller is answered the same workflow for a name and key.
func testCreateBatchConcurrent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const callers, size, stride = 8, 40, 10
	type result struct {
		out     []storage.Workflow
		created []bool
		err     error
	}
	results := make([]result, callers)
	inputs := make([][]storage.NewWorkflow, callers)
	for g := range callers {
		ws := make([]storage.NewWorkflow, 0, size)
		for i := g * stride; i < g*stride+size; i++ {
			ws = append(ws, storage.NewWorkflow{Name: "bulk.race", Key: fmt.Sprint("k", i), Input: []byte(fmt.Sprintf(`{"by":%d}`, g)), Now: at(0)})
		}
		if g%2 == 1 {
			slices.Reverse(ws)
		}
		inputs[g] = ws
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			<-start
			out, created, err := f.s.CreateWorkflows(f.ctx, inputs[g])
			results[g] = result{out, created, err}
		})
	}
	close(start)
	wg.Wait()

	byKey := map[string]int64{}
	creators := map[string]int{}
	for g, r := range results {
		require.NoError(t, r.err, "caller %d", g)
		require.Len(t, r.out, size, "caller %d", g)
		require.Len(t, r.created, size, "caller %d", g)
		for i, w := range r.out {
			key := inputs[g][i].Key
			require.Equal(t, key, w.Key, "caller %d, workflow %d: out follows the order of the input", g, i)
			if id, ok := byKey[key]; ok {
				require.Equal(t, id, w.ID, "callers were answered different workflows for key %q", key)
			}
			byKey[key] = w.ID
			if r.created[i] {
				creators[key]++
				requireBytes(t, []byte(fmt.Sprintf(`{"by":%d}`, g)), w.Input, "input of "+key+" answered to its creator")
			}
		}
	}
	want := (callers-1)*stride + size
	require.Len(t, byKey, want, "distinct workflows")
	for key := range byKey {
		require.Equal(t, 1, creators[key], "workflow %q reported created by %d callers", key, creators[key])
	}
	var listed []storage.Workflow
	for after := int64(0); ; {
		page := f.list(storage.ListFilter{AfterID: after})
		if len(page) == 0 {
			break
		}
		listed = append(listed, page...)
		after = page[len(page)-1].ID
	}
	require.Len(t, listed, want, "one row per name and key")
	for _, w := range listed {
		require.Equal(t, byKey[w.Key], w.ID, "stored workflow %q", w.Key)
		require.True(t, strings.HasPrefix(string(w.Input), `{"by":`), "input of %q", w.Key)
	}
}

// testNotifyCreateBatch: CreateWorkflows of workflows runnable at once notifies the listener.
func testNotifyCreateBatch(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	ch, _ := f.listen()
	drain(ch)
	notifiedBy(t, "CreateWorkflows of workflows runnable at once", func() error {
		_, created, err := f.s.CreateWorkflows(f.ctx, batch("notify.bulk", "b", 3))
		if err == nil && slices.Contains(created, false) {
			err = fmt.Errorf("CreateWorkflows on an empty store reports %v created", created)
		}
		return err
	}, ch)
}
