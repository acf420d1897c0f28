package bolt

import (
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// children returns n new children named name, keyed prefix0..prefix(n-1).
func children(name, prefix string, from, n int) []storage.NewWorkflow {
	out := make([]storage.NewWorkflow, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, storage.NewWorkflow{Name: name, Key: fmt.Sprint(prefix, i), Input: []byte(fmt.Sprint(i))})
	}
	return out
}

func spawn(t testing.TB, s *Store, l storage.Lease, r storage.SpawnRequest) storage.SpawnResult {
	t.Helper()
	got, err := s.SpawnBatch(context.Background(), l, r)
	require.NoError(t, err)
	return got
}

func listAll(t testing.TB, s *Store, f storage.ListFilter) []storage.Workflow {
	t.Helper()
	var out []storage.Workflow
	for {
		page, err := s.ListWorkflows(context.Background(), f)
		require.NoError(t, err)
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		f.AfterID = page[len(page)-1].ID
	}
}

func TestSpawnBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	parent := create(t, s, "parent", "p", base)
	root := create(t, s, "child", "c1", base) // a workflow that already holds a child's key
	l := leaseOf(claimOne(t, s, base, time.Hour))
	require.Equal(t, parent.ID, l.WorkflowID)

	batch := children("child", "c", 0, 5)
	batch[2].RunAt = at(time.Hour)
	batch[3].TraceContext = []byte(`{"traceparent":"x"}`)
	batch[4].ParentStepID = 999 // ignored: the branch step decides
	batch = append(batch, storage.NewWorkflow{Name: "child", Key: "c0", Input: []byte("again")})
	now := at(time.Second)
	req := storage.SpawnRequest{
		Branch: "branch$b",
		Steps: []storage.Step{
			{Name: "branch$b", State: storage.StepPending},
			{Name: "spawn$b$items", State: storage.StepPending, Meta: []byte("5")},
		},
		Children: batch,
		Now:      now,
	}
	// The root holds c1: the batch is refused whole and writes nothing.
	_, err := s.SpawnBatch(ctx, l, req)
	var conflict *storage.ConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, storage.ConflictError{WorkflowID: parent.ID, Branch: "branch$b", ID: root.ID, Name: "child", Key: "c1"}, *conflict)
	_, steps, err := s.Load(ctx, parent.ID)
	require.NoError(t, err)
	require.Empty(t, steps, "a refused batch records no step")
	checkIndexes(t, s)

	batch = slices.Delete(batch, 1, 2) // without c1
	req.Children = batch
	res := spawn(t, s, l, req)
	_, steps, err = s.Load(ctx, parent.ID)
	require.NoError(t, err)
	require.Equal(t, []string{"branch$b", "spawn$b$items"}, []string{steps[0].Name, steps[1].Name})
	require.Equal(t, storage.SpawnResult{BranchStepID: steps[0].ID, Inserted: 4}, res, "c0 repeats within the batch")
	checkIndexes(t, s)

	p, err := s.GetWorkflow(ctx, parent.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateRunning, p.State)
	require.Equal(t, l, p.Lease())
	require.Equal(t, now, p.UpdatedAt)

	got, err := s.GetWorkflow(ctx, root.ID)
	require.NoError(t, err)
	require.Equal(t, root, got, "an existing workflow with a child's key is left as it is")

	kids := listAll(t, s, storage.ListFilter{ParentStepID: res.BranchStepID})
	require.Len(t, kids, 4)
	for _, k := range kids {
		require.Equal(t, res.BranchStepID, k.ParentStepID)
		require.Equal(t, storage.StateIdle, k.State)
		require.Equal(t, now, k.CreatedAt)
		require.Equal(t, now, k.UpdatedAt)
		require.Zero(t, k.LeaseToken)
		want := now
		if k.Key == "c2" {
			want = at(time.Hour)
		}
		require.Equal(t, want, k.RunAt, "child %s", k.Key)
		require.Equal(t, []byte(strings.TrimPrefix(k.Key, "c")), k.Input, "the first of two children with one key wins")
	}
	require.Equal(t, []byte(`{"traceparent":"x"}`), kids[2].TraceContext)

	// The same batch again, with other inputs: nothing changes but the cursor step.
	before := map[int64]storage.Workflow{}
	for _, k := range kids {
		before[k.ID] = k
	}
	for i := range batch {
		batch[i].Input = []byte("changed")
	}
	again := spawn(t, s, l, storage.SpawnRequest{Branch: "branch$b", Children: batch, Now: at(2 * time.Second)})
	require.Equal(t, storage.SpawnResult{BranchStepID: res.BranchStepID}, again)
	for _, k := range listAll(t, s, storage.ListFilter{ParentStepID: res.BranchStepID}) {
		require.Equal(t, before[k.ID], k)
	}

	// The branch step is already stored; a new child joins it.
	more := spawn(t, s, l, storage.SpawnRequest{Branch: "branch$b", Children: children("child", "c", 5, 1), Now: at(3 * time.Second)})
	require.Equal(t, storage.SpawnResult{BranchStepID: res.BranchStepID, Inserted: 1}, more)

	// Children are runnable at once (c2 only later) and carry their link through every state.
	claimed, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 100, Names: []string{"child"}, TTL: time.Minute, Now: at(3 * time.Second)})
	require.NoError(t, err)
	require.Len(t, claimed, 5, "c0, c3, c4, c5 and the root c1")
	for _, c := range claimed {
		if c.ID == root.ID {
			continue
		}
		require.NoError(t, s.FinishRun(ctx, c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(4 * time.Second)}, State: storage.StateCompleted}))
	}
	checkIndexes(t, s)
	del, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(time.Minute)})
	require.NoError(t, err)
	require.Equal(t, 4, del.Deleted)
	checkIndexes(t, s)
	left := listAll(t, s, storage.ListFilter{ParentStepID: res.BranchStepID})
	require.Len(t, left, 1)
	require.Equal(t, "c2", left[0].Key)
}

func TestSpawnBatchRefusedWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	create(t, s, "parent", "p", base)
	l := leaseOf(claimOne(t, s, base, time.Minute))
	spawn(t, s, l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Children: children("child", "c", 0, 3), Now: base})
	gone := create(t, s, "parent", "cancelled", base)
	claimed, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, Names: []string{"parent"}, TTL: time.Minute, Now: base})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	lc := claimed[0].Lease()
	require.Equal(t, gone.ID, lc.WorkflowID)
	require.NoError(t, s.Cancel(ctx, gone.ID, at(time.Second)))

	cursor := []storage.Step{{Name: "branch$b", State: storage.StepPending, Meta: []byte("9")}, {Name: "cursor", State: storage.StepPending}}
	good := func() storage.SpawnRequest {
		return storage.SpawnRequest{Branch: "branch$b", Steps: cursor, Children: children("child", "n", 0, 3), Now: at(time.Second)}
	}
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		want   error
		lease  storage.Lease
		modify func(r *storage.SpawnRequest)
	}{
		{"expired lease", storage.ErrLeaseLost, l, func(*storage.SpawnRequest) { setClock(s, at(time.Minute)) }},
		{"superseded token", storage.ErrLeaseLost, storage.Lease{WorkflowID: l.WorkflowID, Owner: l.Owner, Token: l.Token + 1, Until: l.Until}, func(*storage.SpawnRequest) {}},
		{"unknown workflow", storage.ErrLeaseLost, storage.Lease{WorkflowID: 1 << 40, Token: 1}, func(*storage.SpawnRequest) {}},
		{"cancelled", storage.ErrCancelled, lc, func(*storage.SpawnRequest) {}},
		{"unknown branch", storage.ErrInvalid, l, func(r *storage.SpawnRequest) { r.Branch = "branch$other" }},
		{"empty branch", storage.ErrInvalid, l, func(r *storage.SpawnRequest) { r.Branch = "" }},
		{"too many children", storage.ErrInvalid, l, func(r *storage.SpawnRequest) {
			r.Children = children("child", "n", 0, storage.MaxSpawnBatch+1)
		}},
		{"bad child name", storage.ErrInvalid, l, func(r *storage.SpawnRequest) { r.Children[1].Name = "a$b" }},
		{"bad child key", storage.ErrInvalid, l, func(r *storage.SpawnRequest) { r.Children[2].Key = "" }},
		{"huge child input", storage.ErrTooLarge, l, func(r *storage.SpawnRequest) { r.Children[2].Input = make([]byte, storage.MaxPayload+1) }},
		{"unrepresentable child run time", storage.ErrInvalid, l, func(r *storage.SpawnRequest) { r.Children[2].RunAt = far }},
		{"bad step", storage.ErrInvalid, l, func(r *storage.SpawnRequest) { r.Steps = []storage.Step{cursor[0], {Name: "x", State: "done"}} }},
		{"zero now", storage.ErrInvalid, l, func(r *storage.SpawnRequest) { r.Now = time.Time{} }},
		{"bad lease", storage.ErrInvalid, storage.Lease{}, func(*storage.SpawnRequest) {}},
	}
	before := dump(t, s)
	for _, c := range cases {
		r := good()
		c.modify(&r)
		got, err := s.SpawnBatch(ctx, c.lease, r)
		setClock(s, base)
		require.ErrorIs(t, err, c.want, c.name)
		require.Zero(t, got, c.name)
		require.Equal(t, before, dump(t, s), "%s wrote something", c.name)
	}
	res := spawn(t, s, l, good())
	require.Equal(t, 3, res.Inserted, "the lease still writes")
	checkIndexes(t, s)
}

func TestCountChildren(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	create(t, s, "parent", "p", base)
	l := leaseOf(claimOne(t, s, base, time.Hour))
	a := spawn(t, s, l, storage.SpawnRequest{Branch: "a", Steps: []storage.Step{{Name: "a", State: storage.StepPending}}, Children: children("child", "a", 0, 40), Now: base})
	b := spawn(t, s, l, storage.SpawnRequest{Branch: "b", Steps: []storage.Step{{Name: "b", State: storage.StepPending}}, Children: children("child", "b", 0, 7), Now: base})
	create(t, s, "child", "root", base) // not a child of anything

	// Finish ten of a's children, stall three, cancel two and leave five running.
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 20, Names: []string{"child"}, TTL: time.Hour, Now: at(time.Second)})
	require.NoError(t, err)
	require.Len(t, got, 20)
	for i, c := range got {
		require.Equal(t, a.BranchStepID, c.ParentStepID)
		switch {
		case i < 10:
			require.NoError(t, s.FinishRun(ctx, c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateCompleted}))
		case i < 13:
			require.NoError(t, s.FinishRun(ctx, c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateStalled}))
		case i < 15:
			require.NoError(t, s.Cancel(ctx, c.ID, at(2*time.Second)))
		}
	}
	checkIndexes(t, s)

	count := func(q storage.ChildQuery) int {
		t.Helper()
		n, err := s.CountChildren(ctx, q)
		require.NoError(t, err)
		return n
	}
	all := []storage.State{storage.StateIdle, storage.StateRunning, storage.StateCompleted, storage.StateFailed, storage.StateStalled, storage.StateCancelled}
	notDone := []storage.State{storage.StateIdle, storage.StateRunning, storage.StateFailed, storage.StateStalled, storage.StateCancelled}
	ids := []int64{a.BranchStepID}
	require.Equal(t, 40, count(storage.ChildQuery{StepIDs: ids, States: all, Cap: 5000}))
	require.Equal(t, 30, count(storage.ChildQuery{StepIDs: ids, States: notDone, Cap: 5000}))
	require.Equal(t, 10, count(storage.ChildQuery{StepIDs: ids, States: []storage.State{storage.StateCompleted}, Cap: 5000}))
	require.Equal(t, 5, count(storage.ChildQuery{StepIDs: ids, States: []storage.State{storage.StateRunning}, Cap: 5000}))
	require.Equal(t, 20, count(storage.ChildQuery{StepIDs: ids, States: []storage.State{storage.StateIdle}, Cap: 5000}))
	require.Equal(t, 3, count(storage.ChildQuery{StepIDs: ids, States: []storage.State{storage.StateStalled}, Cap: 5000}))
	require.Equal(t, 0, count(storage.ChildQuery{StepIDs: ids, States: []storage.State{storage.StateFailed}, Cap: 5000}))
	require.Equal(t, 7, count(storage.ChildQuery{StepIDs: []int64{b.BranchStepID}, States: all, Cap: 5000}))
	require.Equal(t, 47, count(storage.ChildQuery{StepIDs: []int64{b.BranchStepID, a.BranchStepID}, States: all, Cap: 5000}))
	require.Equal(t, 47, count(storage.ChildQuery{StepIDs: []int64{b.BranchStepID, a.BranchStepID, b.BranchStepID}, States: append(all, all...), Cap: 5000}), "repeats count once")
	require.Equal(t, 0, count(storage.ChildQuery{StepIDs: []int64{1 << 40}, States: all, Cap: 5000}), "an unknown step has no children")
	for _, c := range []int{1, 6, 7, 8, 39, 40, 46} {
		require.Equal(t, c, count(storage.ChildQuery{StepIDs: []int64{a.BranchStepID, b.BranchStepID}, States: all, Cap: c}), "cap %d", c)
	}

	for _, q := range []storage.ChildQuery{
		{States: all, Cap: 10},
		{StepIDs: ids, Cap: 10},
		{StepIDs: ids, States: all},
		{StepIDs: ids, States: all, Cap: -1},
		{StepIDs: []int64{0}, States: all, Cap: 10}, // roots have parent 0: never a branch step
		{StepIDs: ids, States: all, Cap: storage.MaxCountCap + 1},
		{StepIDs: ids, States: []storage.State{"done"}, Cap: 10},
	} {
		_, err := s.CountChildren(ctx, q)
		require.ErrorIs(t, err, storage.ErrInvalid, "%+v", q)
	}
}

func TestListChildren(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	create(t, s, "parent", "p", base)
	l := leaseOf(claimOne(t, s, base, time.Hour))
	var a, b storage.SpawnResult
	// Interleave two branches' children so their IDs alternate.
	for i := range 30 {
		a = spawn(t, s, l, storage.SpawnRequest{Branch: "a", Steps: []storage.Step{{Name: "a", State: storage.StepPending}}, Children: children([]string{"x", "y"}[i%2], "a", i, 1), Now: base})
		b = spawn(t, s, l, storage.SpawnRequest{Branch: "b", Steps: []storage.Step{{Name: "b", State: storage.StepPending}}, Children: children("x", "b", i, 1), Now: base})
	}
	all := listAll(t, s, storage.ListFilter{ParentStepID: a.BranchStepID})
	require.Len(t, all, 30)
	for i, w := range all {
		require.Equal(t, fmt.Sprint("a", i), w.Key, "ID order")
	}
	// Move a few into other states, so the listing merges several index ranges.
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 9, Names: []string{"y"}, TTL: time.Hour, Now: at(time.Second)})
	require.NoError(t, err)
	require.Len(t, got, 9)
	for _, c := range got[:4] {
		require.NoError(t, s.FinishRun(ctx, c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateCompleted}))
	}
	require.Equal(t, ids(all), ids(listAll(t, s, storage.ListFilter{ParentStepID: a.BranchStepID, Limit: 7})), "pages of 7 give every child once, in ID order")

	keys := func(f storage.ListFilter) []string {
		var out []string
		for _, w := range listAll(t, s, f) {
			out = append(out, w.Key)
		}
		return out
	}
	require.Equal(t, []string{"a1", "a3", "a5", "a7"}, keys(storage.ListFilter{ParentStepID: a.BranchStepID, States: []storage.State{storage.StateCompleted}}))
	require.Equal(t, []string{"a1", "a3", "a5", "a7", "a9", "a11", "a13", "a15", "a17"}, keys(storage.ListFilter{ParentStepID: a.BranchStepID, States: []storage.State{storage.StateRunning, storage.StateCompleted}}))
	require.Len(t, keys(storage.ListFilter{ParentStepID: a.BranchStepID, Name: "x"}), 15)
	require.Equal(t, []string{"a0", "a2"}, keys(storage.ListFilter{ParentStepID: a.BranchStepID, Name: "x", Limit: 2})[:2])
	require.Len(t, keys(storage.ListFilter{ParentStepID: b.BranchStepID}), 30)
	require.Empty(t, keys(storage.ListFilter{ParentStepID: 1 << 40}))
	page, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: a.BranchStepID, AfterID: all[27].ID})
	require.NoError(t, err)
	require.Equal(t, ids(all[28:]), ids(page))
}

func ids(ws []storage.Workflow) []int64 {
	out := make([]int64, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.ID)
	}
	return out
}

func TestCreateWorkflowKeepsParentStepID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "child", Key: "k", ParentStepID: 42, Now: base})
	require.NoError(t, err)
	require.Equal(t, int64(42), w.ParentStepID)
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, w, got)
	n, err := s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{42}, States: []storage.State{storage.StateIdle}, Cap: 10})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	checkIndexes(t, s)
}

func TestWaitData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	w := create(t, s, "wf", "k", base)
	l := leaseOf(claimOne(t, s, base, time.Hour))
	wait := storage.Wait{Kind: "merge", Step: "branch$b", Data: []byte{0xff, 0, 1, 2}}
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateIdle, RunAt: at(time.Minute), Wait: wait}))
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, wait, got.Wait)

	l = leaseOf(claimOne(t, s, at(time.Minute), time.Hour))
	empty := storage.Wait{Kind: "merge", Step: "branch$b", Data: []byte{}}
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(time.Minute)}, State: storage.StateIdle, RunAt: at(2 * time.Minute), Wait: empty}))
	got, err = s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, empty, got.Wait, "empty data stays empty, not nil")

	// A later run replaces the wait; a final state clears it.
	l = leaseOf(claimOne(t, s, at(2*time.Minute), time.Hour))
	require.ErrorIs(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Minute)}, State: storage.StateIdle, Wait: storage.Wait{Kind: "merge", Data: make([]byte, storage.MaxMeta+1)}}), storage.ErrTooLarge)
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Minute)}, State: storage.StateCompleted}))
	got, err = s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, storage.Wait{}, got.Wait)
}

// Records written by codec version 1 (before wait data), kept as bytes: this build must
// read them as they were written.
const (
	goldenWorkflowV1 = "010e027766016b03696e000469646c65037b7d01aafce7bcedb4a0c734067369676e616c07617070726f766502773100060254037463016501aafce7bcedb4a0c73401aaa4bef6f4b4a0c7340000"
	goldenStepV1     = "010e04016109636f6d706c657465640201026d0001aafce7bcedb4a0c73401aafce7bcedb4a0c73401aafce7bcedb4a0c734"
	goldenErrorV1    = "01020e0161020154016d0001aafce7bcedb4a0c734"
)

func golden(t testing.TB, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	require.NoError(t, err)
	return b
}

// goldenRecord is what goldenWorkflowV1 holds.
func goldenRecord() *record {
	return &record{Workflow: storage.Workflow{
		ID: 7, Name: "wf", Key: "k", Input: []byte("in"), State: storage.StateIdle, Values: []byte(`{}`), RunAt: base,
		Wait: storage.Wait{Kind: "signal", Step: "approve"}, LeaseOwner: "w1", LeaseToken: 3, Attempt: 1, ParentStepID: 42,
		TraceContext: []byte("tc"), LastError: "e", CreatedAt: base, UpdatedAt: base.Add(time.Second),
	}}
}

func TestCodecReadsVersion1(t *testing.T) {
	t.Parallel()
	r, err := decodeWorkflow(golden(t, goldenWorkflowV1))
	require.NoError(t, err)
	require.Equal(t, goldenRecord(), r)
	require.Nil(t, r.Wait.Data)

	st, err := decodeStep(golden(t, goldenStepV1))
	require.NoError(t, err)
	require.Equal(t, storage.Step{WorkflowID: 7, ID: 2, Name: "a", State: storage.StepCompleted, Attempts: 1, Result: []byte{}, Meta: []byte("m"), CreatedAt: base, UpdatedAt: base, CompletedAt: base}, st)
	e, err := decodeError(golden(t, goldenErrorV1))
	require.NoError(t, err)
	require.Equal(t, storage.ErrorRecord{ID: 1, WorkflowID: 7, Step: "a", Attempt: 1, Type: "T", Message: "m", CreatedAt: base}, e)

	// Written again, a record takes this build's version and keeps every field.
	r.Wait.Data = []byte("probe")
	b := encodeWorkflow(r)
	require.Equal(t, byte(codecVersion), b[0])
	again, err := decodeWorkflow(b)
	require.NoError(t, err)
	require.Equal(t, r, again)
	require.Equal(t, byte(codecVersion), encodeStep(&st)[0])
	back, err := decodeStep(encodeStep(&st))
	require.NoError(t, err)
	require.Equal(t, st, back)

	for _, v := range []byte{0, codecVersion + 1} {
		bad := golden(t, goldenWorkflowV1)
		bad[0] = v
		_, err := decodeWorkflow(bad)
		require.ErrorIs(t, err, errCorrupt, "version %d", v)
	}
}

// writeV1File writes a store as schema version 1 left it: no children bucket, version-1
// records, and the goldenWorkflowV1 row (a child of step 42) with its index entries.
func writeV1File(t *testing.T, version uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	r := goldenRecord()
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		put := func(bucket string, k, v []byte) {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			require.NoError(t, err)
			require.NoError(t, b.Put(k, v))
		}
		for _, name := range []string{"workflows", "keys", "runnable", "states", "finished", "steps", "errors"} {
			_, err := tx.CreateBucketIfNotExists([]byte(name))
			require.NoError(t, err)
		}
		put("meta", metaVersion, idKey(int64(version)))
		put("workflows", idKey(r.ID), golden(t, goldenWorkflowV1))
		put("keys", nameKey(r.Name, r.Key), idKey(r.ID))
		put("runnable", timeIDKey(r.RunAt, r.ID), []byte(r.Name))
		put("states", stateKey(r.State, r.ID), nil)
		put("steps", childKey(r.ID, []byte("a")), golden(t, goldenStepV1))
		put("errors", childKey(r.ID, idKey(1)), golden(t, goldenErrorV1))
		return tx.Bucket(bucketWorkflows).SetSequence(uint64(r.ID))
	}))
	require.NoError(t, db.Close())
	return path
}

func TestOpenUpgradesSchema1(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := writeV1File(t, 1)
	s, err := Open(path, WithNoSync())
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	checkIndexes(t, s) // the children index was built from the old rows
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		require.Equal(t, idKey(schemaVersion), tx.Bucket(bucketMeta).Get(metaVersion))
		return nil
	}))
	w, steps, err := s.Load(ctx, 7)
	require.NoError(t, err)
	require.Equal(t, goldenRecord().Workflow, w)
	require.Len(t, steps, 1)
	n, err := s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{42}, States: []storage.State{storage.StateIdle}, Cap: 10})
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// Old rows are rewritten in the new format as they change.
	l := claimOne(t, s, base, time.Minute)
	require.Equal(t, int64(7), l.ID)
	wait := storage.Wait{Kind: "merge", Step: "branch$b", Data: []byte("d")}
	require.NoError(t, s.FinishRun(ctx, l.Lease(), storage.Finish{Commit: storage.Commit{Now: base}, State: storage.StateIdle, Wait: wait}))
	got, err := s.GetWorkflow(ctx, 7)
	require.NoError(t, err)
	require.Equal(t, wait, got.Wait)
	require.Equal(t, int64(8), create(t, s, "wf", "new", base).ID, "sequences continue")
	checkIndexes(t, s)
}

func TestOpenRefusesLaterSchema(t *testing.T) {
	t.Parallel()
	path := writeV1File(t, schemaVersion+1)
	_, err := Open(path, WithNoSync())
	require.ErrorContains(t, err, "schema version")
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		require.Nil(t, tx.Bucket(bucketChildren), "a refused file is not changed")
		return nil
	}))
}
