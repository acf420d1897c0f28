package storagetest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Branch units: SpawnBatch, CountChildren, listing a branch's children and the wait data a
// merge probe keeps on the parent.

// branchStep is the branch record a spawn batch carries, as the SDK writes it.
func branchStep(branch string) storage.Step {
	return storage.Step{Name: branch, State: storage.StepPending, Attempts: 1}
}

// kids returns children named name for items from..from+n-1, keyed as SpawnEach keys
// positional items: <prefix>_<index>.
func kids(name, prefix string, from, n int) []storage.NewWorkflow {
	out := make([]storage.NewWorkflow, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, storage.NewWorkflow{Name: name, Key: fmt.Sprintf("%s_%d", prefix, i), Input: []byte(fmt.Sprintf(`{"item":%d}`, i))})
	}
	return out
}

func (f *fixture) spawn(l storage.Lease, r storage.SpawnRequest) storage.SpawnResult {
	f.t.Helper()
	res, err := f.s.SpawnBatch(f.ctx, l, r)
	require.NoError(f.t, err, "SpawnBatch of %d children of branch %q under lease %+v", len(r.Children), r.Branch, l)
	return res
}

// childrenOf lists every child of the branch step, page by page.
func (f *fixture) childrenOf(stepID int64, states ...storage.State) []storage.Workflow {
	f.t.Helper()
	var out []storage.Workflow
	after := int64(0)
	for {
		page := f.list(storage.ListFilter{ParentStepID: stepID, States: states, AfterID: after, Limit: storage.MaxClaim})
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		after = page[len(page)-1].ID
	}
}

func (f *fixture) countChildren(q storage.ChildQuery) int {
	f.t.Helper()
	n, err := f.s.CountChildren(f.ctx, q)
	require.NoError(f.t, err, "CountChildren %+v", q)
	return n
}

// stepID returns the ID of the step record name of workflow id, or 0 if it is not recorded.
func (f *fixture) stepID(id int64, name string) int64 {
	f.t.Helper()
	_, steps := f.load(id)
	for _, s := range steps {
		if s.Name == name {
			return s.ID
		}
	}
	return 0
}

// requireChildren requires that the branch step has exactly the children keyed keys, each
// once, linked to it, listed in ID order.
func requireChildren(f *fixture, stepID int64, keys []string) []storage.Workflow {
	f.t.Helper()
	got := f.childrenOf(stepID)
	seen := make(map[string]bool, len(got))
	for i, w := range got {
		if i > 0 {
			require.Greater(f.t, w.ID, got[i-1].ID, "children are listed in ID order")
		}
		require.False(f.t, seen[w.Key], "child %q stored twice", w.Key)
		seen[w.Key] = true
		require.Equal(f.t, stepID, w.ParentStepID, "child %q is linked to its branch step", w.Key)
	}
	for _, k := range keys {
		require.True(f.t, seen[k], "child %q is missing", k)
	}
	require.Len(f.t, got, len(keys), "children of branch step %d", stepID)
	return got
}

func childKeys(ws []storage.NewWorkflow) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.Key)
	}
	return out
}

// notCompleted is every state a merge waits on.
var notCompleted = []storage.State{storage.StateIdle, storage.StateRunning, storage.StateFailed, storage.StateStalled, storage.StateCancelled}

// allStates is every state.
var allStates = append([]storage.State{storage.StateCompleted}, notCompleted...)

// testSpawnIdempotent: the same batch of 300 children applied twice stores 300 children, not
// 600; the second application inserts none and changes none. New children are idle, runnable
// at once, and linked to the branch step whose ID SpawnBatch returns. A batch that overlaps
// stored children of the branch inserts only the new ones. (A key held by any other workflow
// is a conflict: see SpawnConflict*.)
func testSpawnIdempotent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("spawn.parent")
	const n = 300
	prefix := "k$branch$b$items"
	batch := kids("spawn.child", prefix, 0, n)
	batch[7].TraceContext = []byte(`{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`)
	batch[9].ParentStepID = 424242 // ignored: the branch step decides
	req := storage.SpawnRequest{
		Branch:   "branch$b",
		Steps:    []storage.Step{branchStep("branch$b"), {Name: "spawn$b$items", State: storage.StepPending, Meta: []byte(strconv.Itoa(n))}},
		Children: batch,
		Now:      at(time.Second),
	}
	first := f.spawn(l, req)
	require.NotZero(t, first.BranchStepID, "SpawnBatch returns the branch step's ID")
	require.Equal(t, n, first.Inserted, "first application inserts every child")
	require.Equal(t, first.BranchStepID, f.stepID(w.ID, "branch$b"), "BranchStepID is the ID of the branch step record")
	stored := requireChildren(f, first.BranchStepID, childKeys(batch))

	// Applied again (a worker retrying a batch whose outcome it did not see), with other
	// inputs and a later time: nothing is inserted or changed.
	again := req
	again.Children = kids("spawn.child", prefix, 0, n)
	for i := range again.Children {
		again.Children[i].Input = []byte(`"changed"`)
	}
	again.Now = at(2 * time.Second)
	second := f.spawn(l, again)
	require.Equal(t, storage.SpawnResult{BranchStepID: first.BranchStepID, Inserted: 0}, second, "second application")
	after := requireChildren(f, first.BranchStepID, childKeys(batch))
	byKey := make(map[string]storage.NewWorkflow, n)
	for _, c := range batch {
		byKey[c.Key] = c
	}
	for i, c := range after {
		require.Equal(t, stored[i].ID, c.ID, "child %q keeps its ID", c.Key)
		require.Equal(t, "spawn.child", c.Name)
		require.Equal(t, storage.StateIdle, c.State, "child %q is idle", c.Key)
		requireTime(t, at(time.Second), c.RunAt, fmt.Sprintf("child %q runs at the first batch's Now", c.Key))
		requireTime(t, at(time.Second), c.CreatedAt, fmt.Sprintf("child %q created at", c.Key))
		requireBytes(t, byKey[c.Key].Input, c.Input, fmt.Sprintf("child %q input (the first application's)", c.Key))
		requireBytes(t, byKey[c.Key].TraceContext, c.TraceContext, fmt.Sprintf("child %q trace context", c.Key))
		require.Zero(t, c.Attempt)
		require.Zero(t, c.LeaseToken, "child %q was never leased", c.Key)
	}

	// An overlapping batch, with a key repeated within it.
	overlap := append(kids("spawn.child", prefix, n-50, 100), kids("spawn.child", prefix, n+10, 1)...)
	third := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Children: overlap, Now: at(3 * time.Second)})
	require.Equal(t, storage.SpawnResult{BranchStepID: first.BranchStepID, Inserted: 50}, third,
		"only the 50 new keys are inserted: not stored children, not a repeat within the batch")
	all := requireChildren(f, first.BranchStepID, childKeys(kids("spawn.child", prefix, 0, n+50)))

	// Every child is runnable at once.
	claimed := f.claim("worker-c", at(3*time.Second), storage.MaxClaim, "spawn.child")
	want := ids(all)
	got := ids(claimed)
	slices.Sort(got)
	require.Equal(t, want, got, "every child is claimable at the batch's Now")
	for _, c := range claimed {
		require.Equal(t, first.BranchStepID, c.ParentStepID, "a claimed child keeps its branch link")
	}
}

// testSpawnCursorResume: a spawn of 1,000 items in batches of 128, each batch carrying the
// cursor (the next offset) in a step record. A crash is injected after each batch boundary in
// turn; a new process takes the lease over, reads the cursor back with Load and continues.
// Every run ends with exactly 1,000 children, none twice, none lost; resuming from the stored
// cursor reads each source item once and a clean run costs ceil(N/B) SpawnBatch calls. A
// resumer that re-applies the last batch (it could not know it committed) inserts nothing with
// it, and the dead process, once taken over, can spawn nothing.
func testSpawnCursorResume(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const n, b = 1000, 128
	batches := (n + b - 1) / b

	type variant struct {
		name string
		// reapply: the resumer first sends the last committed batch again.
		reapply bool
		// torn: the process dies after reading batch k+1 but before committing it.
		torn bool
	}
	run := 0
	for _, v := range []variant{{name: "after-commit"}, {name: "reapply", reapply: true}, {name: "before-commit", torn: true}} {
		for k := 0; k <= batches; k++ {
			if (k == 0 && !v.torn) || (k == batches && v.torn) {
				continue // after-commit crashes follow batches 1..8; torn ones precede batches 1..8
			}
			run++
			desc := fmt.Sprintf("%s crash after %d of %d batches", v.name, k, batches)
			src := &spawnSource{f: f, n: n, b: b, reads: make([]int, n), name: fmt.Sprintf("resume.parent.%d", run)}
			t0 := at(time.Duration(run) * time.Hour)
			w := f.create(src.name, "p", t0)
			la := f.claimOne(w, "worker-a", t0)

			// The first process: k batches commit, then it dies.
			next := src.spawnFrom(la, 0, k, t0.Add(time.Second))
			require.Equal(t, min(k*b, n), next, desc)
			require.Equal(t, k, src.calls, desc)
			if v.torn {
				src.read(next, min(next+b, n)) // read, never committed
			}

			// The resumer takes the lease over once the dead one expires (its last heartbeat
			// left it a short TTL), and reads the cursor.
			f.lapse(la, t0.Add(2*time.Second))
			t1 := t0.Add(time.Minute)
			lb := f.claimOne(w, "worker-b", t1)
			cursor := src.cursor(w.ID)
			require.Equal(t, next, cursor, "%s: the cursor is the offset after the last committed batch", desc)
			_, err := f.s.SpawnBatch(f.ctx, la, src.request(cursor, t1))
			require.ErrorIs(t, err, storage.ErrLeaseLost, "%s: the dead process's lease cannot spawn", desc)
			if v.reapply && k > 0 {
				from := (k - 1) * b
				src.read(from, min(from+b, n))
				res := f.spawn(lb, src.request(from, t1))
				src.calls++
				require.Zero(t, res.Inserted, "%s: re-applying the last committed batch inserts nothing", desc)
			}
			resumed := src.calls
			end := src.spawnFrom(lb, cursor, batches, t1.Add(time.Second))
			require.Equal(t, n, end, desc)
			require.Equal(t, batches-k, src.calls-resumed, "%s: the resumer spawns only the batches left", desc)
			require.Equal(t, n, src.cursor(w.ID), "%s: the cursor ends past the last item", desc)

			branch := f.stepID(w.ID, "branch$b")
			require.NotZero(t, branch, desc)
			requireChildren(f, branch, childKeys(kids("resume.child", src.name+"$b$items", 0, n)))
			require.Equal(t, n, f.countChildren(storage.ChildQuery{StepIDs: []int64{branch}, States: allStates, Cap: storage.MaxCountCap}), desc)
			for i, r := range src.reads {
				want := 1
				switch {
				case v.torn && i >= k*b && i < (k+1)*b:
					want = 2 // the torn batch is read again by the resumer
				case v.reapply && k > 0 && i >= (k-1)*b && i < k*b:
					want = 2
				}
				require.Equal(t, want, r, "%s: source item %d read", desc, i)
			}
			calls := batches
			if v.reapply {
				calls++
			}
			require.Equal(t, calls, src.calls, "%s: SpawnBatch calls across both processes", desc)
		}
	}

	// A clean run costs ceil(N/B) SpawnBatch calls.
	src := &spawnSource{f: f, n: n, b: b, reads: make([]int, n), name: "resume.clean"}
	w := f.create(src.name, "p", at(0))
	l := f.claimOne(w, "worker-a", at(0))
	require.Equal(t, n, src.spawnFrom(l, 0, batches+1, at(time.Second)))
	require.Equal(t, batches, src.calls, "a clean spawn of %d items in batches of %d", n, b)
	requireChildren(f, f.stepID(w.ID, "branch$b"), childKeys(kids("resume.child", src.name+"$b$items", 0, n)))
}

// spawnSource plays the SDK's SpawnEach over a positional source of n items in batches of b,
// counting how often each item is read and how many SpawnBatch calls are made.
//
// The children it spawns are not due until a year later: being runnable at once is
// SpawnIdempotent's concern, and here the parents' claims must not queue behind tens of
// thousands of due children (a store may bound how far one claim looks).
type spawnSource struct {
	f     *fixture
	n, b  int
	name  string // the parent's name, also its children's key prefix
	reads []int
	calls int
}

func (s *spawnSource) read(from, to int) {
	for i := from; i < to; i++ {
		s.reads[i]++
	}
}

// request is the batch that starts at offset from: its items as children, the branch record
// and the cursor step holding the next offset.
func (s *spawnSource) request(from int, now time.Time) storage.SpawnRequest {
	to := min(from+s.b, s.n)
	children := kids("resume.child", s.name+"$b$items", from, to-from)
	for i := range children {
		children[i].RunAt = at(365 * 24 * time.Hour)
	}
	return storage.SpawnRequest{
		Branch: "branch$b",
		Steps: []storage.Step{
			branchStep("branch$b"),
			{Name: "spawn$b$items", State: storage.StepPending, Meta: []byte(strconv.Itoa(to))},
		},
		Children: children,
		Now:      now,
	}
}

// spawnFrom commits at most max batches from offset under l, one SpawnBatch each, and
// returns the next offset.
func (s *spawnSource) spawnFrom(l storage.Lease, offset, max int, now time.Time) int {
	s.f.t.Helper()
	for done := 0; offset < s.n && done < max; done++ {
		r := s.request(offset, now.Add(time.Duration(done)*time.Millisecond))
		s.read(offset, offset+len(r.Children))
		res := s.f.spawn(l, r)
		s.calls++
		require.Equal(s.f.t, len(r.Children), res.Inserted, "batch at offset %d inserts all its new children", offset)
		offset += len(r.Children)
	}
	return offset
}

// cursor reads the stored cursor of the parent, as a resuming process does: 0 if none.
func (s *spawnSource) cursor(parentID int64) int {
	s.f.t.Helper()
	_, steps := s.f.load(parentID)
	for _, st := range steps {
		if st.Name == "spawn$b$items" {
			n, err := strconv.Atoi(string(st.Meta))
			require.NoError(s.f.t, err, "cursor meta %q", st.Meta)
			return n
		}
	}
	return 0
}

// testSpawnFenced: SpawnBatch is fenced like SaveSteps: under an expired or superseded lease
// it returns ErrLeaseLost, for a cancelled workflow ErrCancelled, and bad input is refused
// with ErrInvalid or ErrTooLarge. A refused batch writes nothing: no child, no step record.
func testSpawnFenced(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("fenced.parent")
	first := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("fenced.child", "k$b$items", 0, 3), Now: at(time.Second)})
	require.Equal(t, 3, first.Inserted)
	keep := childKeys(kids("fenced.child", "k$b$items", 0, 3))
	_, stepsBefore := f.load(w.ID)

	// Every refused batch carries new children, the branch record and a cursor step.
	batch := func(now time.Time) storage.SpawnRequest {
		return storage.SpawnRequest{
			Branch:   "branch$b",
			Steps:    []storage.Step{branchStep("branch$b"), {Name: "spawn$b$items", State: storage.StepPending, Meta: []byte("7")}},
			Children: kids("fenced.child", "k$b$items", 3, 4),
			Now:      now,
		}
	}
	requireNothingWritten := func(what string) {
		t.Helper()
		requireChildren(f, first.BranchStepID, keep)
		for _, c := range kids("fenced.child", "k$b$items", 3, 4) {
			_, err := f.s.FindWorkflow(f.ctx, c.Name, c.Key)
			require.ErrorIs(t, err, storage.ErrNotFound, "%s stored child %q", what, c.Key)
		}
		_, steps := f.load(w.ID)
		require.Equal(t, stepsBefore, steps, "%s wrote step records", what)
	}

	refuse := func(what string, l storage.Lease, r storage.SpawnRequest, want error) {
		t.Helper()
		res, err := f.s.SpawnBatch(f.ctx, l, r)
		require.ErrorIs(t, err, want, "SpawnBatch %s", what)
		require.Zero(t, res.Inserted, "SpawnBatch %s reports inserted children", what)
		requireNothingWritten(what)
	}

	// Invalid input, under a lease that is still good.
	for _, tc := range []struct {
		name   string
		modify func(r *storage.SpawnRequest)
		want   error
	}{
		{"more than MaxSpawnBatch children", func(r *storage.SpawnRequest) {
			r.Children = append(r.Children, kids("fenced.child", "k$b$more", 0, storage.MaxSpawnBatch+1-len(r.Children))...)
		}, storage.ErrInvalid},
		{"empty child key", func(r *storage.SpawnRequest) { r.Children[1].Key = "" }, storage.ErrInvalid},
		{"control character in child key", func(r *storage.SpawnRequest) { r.Children[1].Key = "k\n1" }, storage.ErrInvalid},
		{"overlong child key", func(r *storage.SpawnRequest) { r.Children[1].Key = strings.Repeat("k", storage.MaxKeyLen+1) }, storage.ErrInvalid},
		{"'$' in child name", func(r *storage.SpawnRequest) { r.Children[1].Name = "fenced$child" }, storage.ErrInvalid},
		{"empty child name", func(r *storage.SpawnRequest) { r.Children[1].Name = "" }, storage.ErrInvalid},
		{"oversize child input", func(r *storage.SpawnRequest) { r.Children[1].Input = make([]byte, storage.MaxPayload+1) }, storage.ErrTooLarge},
		{"oversize child trace context", func(r *storage.SpawnRequest) { r.Children[1].TraceContext = make([]byte, storage.MaxMeta+1) }, storage.ErrTooLarge},
		{"unknown branch step", func(r *storage.SpawnRequest) { r.Branch = "branch$other" }, storage.ErrInvalid},
		{"empty branch", func(r *storage.SpawnRequest) { r.Branch = "" }, storage.ErrInvalid},
		{"unknown step state", func(r *storage.SpawnRequest) { r.Steps[1].State = "done" }, storage.ErrInvalid},
		{"oversize cursor", func(r *storage.SpawnRequest) { r.Steps[1].Meta = make([]byte, storage.MaxMeta+1) }, storage.ErrTooLarge},
		{"zero now", func(r *storage.SpawnRequest) { r.Now = time.Time{} }, storage.ErrInvalid},
	} {
		r := batch(at(2 * time.Second))
		tc.modify(&r)
		refuse("with "+tc.name, l, r, tc.want)
	}

	// Once the lease has expired by the store's clock it cannot spawn, whatever time the batch
	// carries.
	f.lapse(l, at(3*time.Second))
	before := f.get(w.ID)
	refuse("after lease expiry", l, batch(at(3*time.Second)), storage.ErrLeaseLost)
	refuse("after lease expiry, from a clock an hour behind", l, batch(at(-time.Hour)), storage.ErrLeaseLost)
	requireLeaseUnchanged(t, before, f.get(w.ID))

	// Taken over by another worker: the old lease is superseded, even in a request that carries
	// a time it covered (the stored lease is the new one).
	lb := f.claimOne(w, "worker-b", at(4*time.Second))
	refuse("under a superseded lease", l, batch(at(2*time.Second)), storage.ErrLeaseLost)
	wrong := lb
	wrong.Token++
	refuse("under a token never issued", wrong, batch(at(5*time.Second)), storage.ErrLeaseLost)

	// Cancelled while running: its lease can spawn nothing.
	wc, lc := f.start("fenced.cancelled")
	require.NoError(t, f.s.Cancel(f.ctx, wc.ID, at(5*time.Second)))
	_, err := f.s.SpawnBatch(f.ctx, lc, storage.SpawnRequest{
		Branch:   "branch$c",
		Steps:    []storage.Step{branchStep("branch$c")},
		Children: kids("fenced.child", "c$c$items", 0, 3),
		Now:      at(6 * time.Second),
	})
	require.ErrorIs(t, err, storage.ErrCancelled, "SpawnBatch for a cancelled workflow")
	_, steps := f.load(wc.ID)
	require.Empty(t, steps, "a refused spawn for a cancelled workflow wrote step records")
	for _, c := range kids("fenced.child", "c$c$items", 0, 3) {
		_, err := f.s.FindWorkflow(f.ctx, c.Name, c.Key)
		require.ErrorIs(t, err, storage.ErrNotFound, "a refused spawn for a cancelled workflow stored child %q", c.Key)
	}
	require.Equal(t, storage.StateCancelled, f.get(wc.ID).State)

	// The current lease still spawns the batch.
	res := f.spawn(lb, batch(at(6*time.Second)))
	require.Equal(t, storage.SpawnResult{BranchStepID: first.BranchStepID, Inserted: 4}, res)
	requireChildren(f, first.BranchStepID, childKeys(kids("fenced.child", "k$b$items", 0, 7)))
}

// requireConflict requires that err is a spawn conflict (errors.Is ErrConflict) carrying the
// *storage.ConflictError want, and that the refused batch reported nothing inserted.
func requireConflict(t *testing.T, want storage.ConflictError, res storage.SpawnResult, err error, what string) {
	t.Helper()
	require.ErrorIs(t, err, storage.ErrConflict, what)
	var got *storage.ConflictError
	require.ErrorAs(t, err, &got, "%s: the error carries a *storage.ConflictError", what)
	require.Equal(t, want, *got, "%s: the conflict names the holder and the branch", what)
	for _, s := range []string{want.Name, want.Key, want.Branch, fmt.Sprint(want.ID)} {
		require.Contains(t, err.Error(), s, "%s: the message names %q", what, s)
	}
	require.Zero(t, res.Inserted, "%s: a refused batch reports inserted children", what)
}

// requireAbsent requires that none of the children is stored.
func requireAbsent(f *fixture, children []storage.NewWorkflow, what string) {
	f.t.Helper()
	for _, c := range children {
		_, err := f.s.FindWorkflow(f.ctx, c.Name, c.Key)
		require.ErrorIs(f.t, err, storage.ErrNotFound, "%s: child %q of the refused batch is stored", what, c.Key)
	}
}

// testSpawnConflictOtherBranch: a batch with a child whose name and key another branch's
// child holds (of another workflow, or of the same workflow) is refused as a whole with
// ErrConflict: the error names the holder (ID, name, key, parent step) and the branch, and
// nothing of the batch is written: not the branch record, not the cursor, not the other
// children. The holder is left as it was, and re-applying the holder's own batch is still a
// no-op. A workflow of another name with a child's key is no conflict.
func testSpawnConflictOtherBranch(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	a, la := f.start("conflict.a")
	heldReq := storage.SpawnRequest{Branch: "branch$x", Steps: []storage.Step{branchStep("branch$x")}, Children: kids("conflict.child", "k$x$n", 0, 3), Now: at(time.Second)}
	held := f.spawn(la, heldReq)
	heldKids := requireChildren(f, held.BranchStepID, childKeys(heldReq.Children))

	// Another workflow whose branch is recorded by the refused batch itself.
	b := f.create("conflict.b", "k", at(0))
	lb := f.claimOne(b, "worker-b", at(0))
	batch := kids("conflict.child", "k$y$n", 0, 5)
	batch[3] = kids("conflict.child", "k$x$n", 1, 1)[0]
	batch[3].Input = []byte(`"b's input"`)
	req := storage.SpawnRequest{
		Branch:   "branch$y",
		Steps:    []storage.Step{branchStep("branch$y"), {Name: "spawn$y$n", State: storage.StepPending, Meta: []byte("5")}},
		Children: batch,
		Now:      at(2 * time.Second),
	}
	res, err := f.s.SpawnBatch(f.ctx, lb, req)
	requireConflict(t, storage.ConflictError{
		WorkflowID: b.ID, Branch: "branch$y", BranchStepID: 0,
		ID: heldKids[1].ID, Name: "conflict.child", Key: heldKids[1].Key, ParentStepID: held.BranchStepID,
	}, res, err, "a child key another workflow's branch holds")
	_, steps := f.load(b.ID)
	require.Empty(t, steps, "a refused batch wrote step records (branch or cursor)")
	requireAbsent(f, append(batch[:3:3], batch[4]), "another workflow's branch")
	after := requireChildren(f, held.BranchStepID, childKeys(heldReq.Children))
	require.Equal(t, heldKids, after, "the holder's children are left as they were")

	// The same workflow's other branch, already recorded: the conflict names its step ID, the
	// first conflicting child in batch order, and how many more conflict (a repeat of a name
	// and key within the batch counts once).
	zReq := storage.SpawnRequest{Branch: "branch$z", Steps: []storage.Step{branchStep("branch$z")}, Children: kids("conflict.child", "k$z$n", 0, 2), Now: at(3 * time.Second)}
	z := f.spawn(la, zReq)
	_, stepsBefore := f.load(a.ID)
	more := append(kids("conflict.child", "k$z$n", 2, 3), heldReq.Children[2], heldReq.Children[0], heldReq.Children[2])
	res, err = f.s.SpawnBatch(f.ctx, la, storage.SpawnRequest{
		Branch:   "branch$z",
		Steps:    []storage.Step{branchStep("branch$z"), {Name: "spawn$z$n", State: storage.StepPending, Meta: []byte("9")}},
		Children: more,
		Now:      at(4 * time.Second),
	})
	requireConflict(t, storage.ConflictError{
		WorkflowID: a.ID, Branch: "branch$z", BranchStepID: z.BranchStepID,
		ID: heldKids[2].ID, Name: "conflict.child", Key: heldKids[2].Key, ParentStepID: held.BranchStepID, Others: 1,
	}, res, err, "a child key another branch of the same workflow holds")
	_, steps = f.load(a.ID)
	require.Equal(t, stepsBefore, steps, "a refused batch wrote step records (the cursor)")
	requireAbsent(f, more[:3], "the same workflow's other branch")
	requireChildren(f, z.BranchStepID, childKeys(zReq.Children))

	// The holder's own batch again is a no-op; a workflow of another name with a held key
	// is a different workflow, no conflict.
	require.Equal(t, storage.SpawnResult{BranchStepID: held.BranchStepID}, f.spawn(la, heldReq), "the same batch twice")
	other := storage.NewWorkflow{Name: "conflict.other", Key: heldKids[0].Key}
	got := f.spawn(lb, storage.SpawnRequest{Branch: "branch$y", Steps: []storage.Step{branchStep("branch$y")}, Children: []storage.NewWorkflow{other}, Now: at(5 * time.Second)})
	require.Equal(t, 1, got.Inserted, "another name with a held key is another workflow")
	requireChildren(f, held.BranchStepID, childKeys(heldReq.Children))
}

// testSpawnConflictRoot: a batch with a child whose name and key a root workflow holds
// (ParentStepID 0) is refused as a whole with ErrConflict naming the root; the root is not
// adopted or changed, and nothing of the batch is written.
func testSpawnConflictRoot(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("conflict.parent")
	first := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("conflict.child", "k$b$n", 0, 2), Now: at(time.Second)})
	root := f.create("conflict.child", "k$b$n_3", at(time.Hour))
	_, stepsBefore := f.load(w.ID)

	batch := kids("conflict.child", "k$b$n", 0, 6) // 0 and 1 are the branch's own, 3 the root's
	res, err := f.s.SpawnBatch(f.ctx, l, storage.SpawnRequest{
		Branch:   "branch$b",
		Steps:    []storage.Step{branchStep("branch$b"), {Name: "spawn$b$n", State: storage.StepPending, Meta: []byte("6")}},
		Children: batch,
		Now:      at(2 * time.Second),
	})
	requireConflict(t, storage.ConflictError{
		WorkflowID: w.ID, Branch: "branch$b", BranchStepID: first.BranchStepID,
		ID: root.ID, Name: "conflict.child", Key: "k$b$n_3", ParentStepID: 0,
	}, res, err, "a child key a root workflow holds")
	_, steps := f.load(w.ID)
	require.Equal(t, stepsBefore, steps, "a refused batch wrote step records (the cursor)")
	requireAbsent(f, []storage.NewWorkflow{batch[2], batch[4], batch[5]}, "a root holds a key")
	requireChildren(f, first.BranchStepID, childKeys(batch[:2]))
	got := f.get(root.ID)
	require.Zero(t, got.ParentStepID, "the root is not adopted")
	requireBytes(t, root.Input, got.Input, "the root's input")
	requireTime(t, at(time.Hour), got.RunAt, "the root's run at")
}

// testSpawnConflictConcurrent: two workflows spawn batches of the same 100 child keys at the
// same moment, round after round. In every round exactly one batch is stored whole and the
// other is refused with ErrConflict, writing nothing: a key committed by another transaction
// while a batch runs is never skipped silently.
func testSpawnConflictConcurrent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const rounds, n = 8, 100
	pa := f.create("race.a", "k", at(0))
	pb := f.create("race.b", "k", at(0))
	leases := []storage.Lease{f.claimOne(pa, "worker-a", at(0)), f.claimOne(pb, "worker-b", at(0))}
	parents := []storage.Workflow{pa, pb}
	for r := range rounds {
		branch := fmt.Sprintf("branch$r%d", r)
		children := kids("race.child", fmt.Sprintf("k$r%d$n", r), 0, n)
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			results [2]storage.SpawnResult
			errs    [2]error
		)
		for i := range 2 {
			wg.Go(func() {
				<-start
				results[i], errs[i] = f.s.SpawnBatch(f.ctx, leases[i], storage.SpawnRequest{
					Branch: branch, Steps: []storage.Step{branchStep(branch)}, Children: children, Now: at(time.Second),
				})
			})
		}
		close(start)
		wg.Wait()
		won := -1
		for i, err := range errs {
			if err == nil {
				require.Equal(t, -1, won, "round %d: both batches were stored", r)
				require.Equal(t, n, results[i].Inserted, "round %d: the winner stores its whole batch", r)
				won = i
				continue
			}
			require.ErrorIs(t, err, storage.ErrConflict, "round %d: the loser's batch is refused as a conflict", r)
		}
		require.NotEqual(t, -1, won, "round %d: neither batch was stored: %v", r, errs)
		requireChildren(f, results[won].BranchStepID, childKeys(children))
		require.Zero(t, f.stepID(parents[1-won].ID, branch), "round %d: the refused batch recorded its branch step", r)
	}
}

// testCountChildrenCapped: CountChildren of a branch of 7,000 children never answers more than
// its cap; it counts only the states asked for and only the children of the step IDs asked
// for, summed over them.
func testCountChildrenCapped(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, l := f.start("cap.parent")
	const n = 7000
	// b's children first, so they are due before a's 7,000 and a claim by their name finds them.
	b := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("cap.other", "k$b$items", 0, 50), Now: at(time.Second)})
	var a storage.SpawnResult
	for i, from := 0, 0; from < n; i, from = i+1, from+storage.MaxSpawnBatch {
		a = f.spawn(l, storage.SpawnRequest{
			Branch:   "branch$a",
			Steps:    []storage.Step{branchStep("branch$a")},
			Children: kids("cap.child", "k$a$items", from, min(storage.MaxSpawnBatch, n-from)),
			Now:      at(time.Duration(i+2) * time.Second),
		})
	}
	require.NotEqual(t, a.BranchStepID, b.BranchStepID)
	f.create("cap.root", "k$a$items_0", at(0)) // a root workflow: nobody's child
	_, lo := f.start("cap.other.parent")
	c := f.spawn(lo, storage.SpawnRequest{Branch: "branch$a", Steps: []storage.Step{branchStep("branch$a")}, Children: kids("cap.third", "o$a$items", 0, 5), Now: at(3 * time.Second)})
	require.NotEqual(t, a.BranchStepID, c.BranchStepID, "branch steps of two workflows are distinct records")

	count := func(steps []int64, states []storage.State, limit int) int {
		t.Helper()
		return f.countChildren(storage.ChildQuery{StepIDs: steps, States: states, Cap: limit})
	}
	A, B := []int64{a.BranchStepID}, []int64{b.BranchStepID}
	require.Equal(t, storage.MaxCountCap, count(A, notCompleted, storage.MaxCountCap), "7,000 incomplete children counted with cap 5,000")
	require.Equal(t, 10, count(A, notCompleted, 10), "cap 10")
	require.Equal(t, 1, count(A, allStates, 1), "cap 1")
	require.Equal(t, 50, count(B, allStates, storage.MaxCountCap), "children of another branch step are not counted")
	require.Equal(t, 5, count([]int64{c.BranchStepID}, allStates, storage.MaxCountCap), "children of another workflow's branch")

	// Complete 20 of b's children. Finish 200 of a's completed and stall 60; 40 stay running.
	cb := f.claim("worker-c", at(4*time.Second), 20, "cap.other")
	require.Len(t, cb, 20)
	for _, cw := range cb {
		require.Equal(t, b.BranchStepID, cw.ParentStepID, "claimed child %q", cw.Key)
		f.finish(cw.Lease(), storage.Finish{Commit: storage.Commit{Now: at(5 * time.Second)}, State: storage.StateCompleted})
	}
	ca := f.claim("worker-c", at(4*time.Second), 300, "cap.child")
	require.Len(t, ca, 300)
	for i, cw := range ca {
		require.Equal(t, a.BranchStepID, cw.ParentStepID, "claimed child %q", cw.Key)
		switch {
		case i < 200:
			f.finish(cw.Lease(), storage.Finish{Commit: storage.Commit{Now: at(5 * time.Second)}, State: storage.StateCompleted, Output: []byte(`"ok"`)})
		case i < 260:
			f.finish(cw.Lease(), storage.Finish{Commit: storage.Commit{Now: at(5 * time.Second)}, State: storage.StateStalled})
		}
	}
	const bothCompleted = 200 + 20

	states := func(s ...storage.State) []storage.State { return s }
	require.Equal(t, 200, count(A, states(storage.StateCompleted), storage.MaxCountCap), "completed children")
	require.Equal(t, 40, count(A, states(storage.StateRunning), storage.MaxCountCap), "running children")
	require.Equal(t, 60, count(A, states(storage.StateStalled), storage.MaxCountCap), "stalled children")
	require.Equal(t, 0, count(A, states(storage.StateFailed, storage.StateCancelled), storage.MaxCountCap), "no failed or cancelled children")
	require.Equal(t, 260, count(A, states(storage.StateCompleted, storage.StateStalled), storage.MaxCountCap), "two states")
	require.Equal(t, 300, count(A, states(storage.StateRunning, storage.StateStalled, storage.StateCompleted, storage.StateFailed), storage.MaxCountCap), "every state but idle")
	require.Equal(t, storage.MaxCountCap, count(A, states(storage.StateIdle), storage.MaxCountCap), "6,700 idle children, capped")
	require.Equal(t, storage.MaxCountCap, count(A, notCompleted, storage.MaxCountCap), "6,800 incomplete children, capped")
	require.Equal(t, 100, count(A, states(storage.StateRunning, storage.StateStalled), 100), "capped below the answer")

	// Several step IDs are summed, still capped; repeats count once.
	AB := []int64{a.BranchStepID, b.BranchStepID}
	require.Equal(t, bothCompleted, count(AB, states(storage.StateCompleted), storage.MaxCountCap), "completed children of two branch steps")
	require.Equal(t, bothCompleted, count([]int64{b.BranchStepID, a.BranchStepID, b.BranchStepID}, states(storage.StateCompleted, storage.StateCompleted), storage.MaxCountCap), "a step ID or state given twice counts once")
	require.Equal(t, 210, count(AB, states(storage.StateCompleted), 210), "summed, then capped")
	for _, limit := range []int{1, 10, 4999, storage.MaxCountCap} {
		require.Equal(t, limit, count(AB, allStates, limit), "never more than cap %d", limit)
	}
	require.Equal(t, 0, count([]int64{1 << 40}, allStates, storage.MaxCountCap), "an unknown step has no children")

	for _, q := range []storage.ChildQuery{
		{States: allStates, Cap: 10},
		{StepIDs: A, Cap: 10},
		{StepIDs: A, States: allStates},
		{StepIDs: A, States: allStates, Cap: -1},
		{StepIDs: A, States: allStates, Cap: storage.MaxCountCap + 1},
		{StepIDs: A, States: states(storage.StateIdle, "sleeping"), Cap: 10},
	} {
		_, err := f.s.CountChildren(f.ctx, q)
		require.ErrorIs(t, err, storage.ErrInvalid, "CountChildren %+v", q)
	}
}

// testChildrenPaging: ListWorkflows with ParentStepID pages every child of the branch step
// exactly once, in ID order, in pages of 100, though their IDs interleave with other
// branches' children and root workflows and their states differ; other filters combine.
func testChildrenPaging(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, l := f.start("page.parent")
	var a, b storage.SpawnResult
	for i := range 5 {
		now := at(time.Duration(i+1) * time.Second)
		a = f.spawn(l, storage.SpawnRequest{Branch: "branch$a", Steps: []storage.Step{branchStep("branch$a")}, Children: kids("page.child", "k$a$items", i*50, 50), Now: now})
		b = f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("page.child", "k$b$items", i*10, 10), Now: now})
		f.create("page.child", fmt.Sprint("root-", i), at(0))
	}
	want := requireChildren(f, a.BranchStepID, childKeys(kids("page.child", "k$a$items", 0, 250)))
	requireChildren(f, b.BranchStepID, childKeys(kids("page.child", "k$b$items", 0, 50)))

	// Move some children to other states, so a page spans several.
	claimed := f.claim("worker-c", at(10*time.Second), 60, "page.child")
	require.Len(t, claimed, 60)
	var completed []int64
	for i, c := range claimed {
		if i%3 == 0 {
			f.finish(c.Lease(), storage.Finish{Commit: storage.Commit{Now: at(11 * time.Second)}, State: storage.StateCompleted})
			if c.ParentStepID == a.BranchStepID {
				completed = append(completed, c.ID)
			}
		}
	}
	slices.Sort(completed)

	var got []int64
	var sizes []int
	after := int64(0)
	for range 10 {
		page := f.list(storage.ListFilter{ParentStepID: a.BranchStepID, AfterID: after, Limit: 100})
		sizes = append(sizes, len(page))
		if len(page) == 0 {
			break
		}
		for _, w := range page {
			require.Equal(t, a.BranchStepID, w.ParentStepID, "a page of branch a's children holds %q", w.Key)
		}
		got = append(got, ids(page)...)
		after = page[len(page)-1].ID
	}
	require.Equal(t, []int{100, 100, 50, 0}, sizes, "page sizes")
	require.Equal(t, ids(want), got, "every child once, in ID order")

	require.Equal(t, completed, ids(f.childrenOf(a.BranchStepID, storage.StateCompleted)), "children filtered by state")
	mid := want[124].ID
	require.Equal(t, ids(want[125:135]), ids(f.list(storage.ListFilter{ParentStepID: a.BranchStepID, AfterID: mid, Limit: 10})), "a page from the middle")
	require.Empty(t, f.list(storage.ListFilter{ParentStepID: a.BranchStepID, Name: "page.other"}), "name and parent combine")
	require.Empty(t, f.list(storage.ListFilter{ParentStepID: 1 << 40}), "an unknown step has no children")
}

// testWaitDataRoundTrip: the opaque data of a wait is stored with it byte for byte, returned
// by GetWorkflow and Load, and replaced by the wait of a later run.
func testWaitDataRoundTrip(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("merge.parent")
	data := payload(2000, 7)
	f.finish(l, storage.Finish{
		Commit: storage.Commit{Now: at(time.Second)},
		State:  storage.StateIdle,
		RunAt:  at(time.Minute),
		Wait:   storage.Wait{Kind: "merge", Step: "x", Data: data},
	})
	got := f.get(w.ID)
	require.Equal(t, storage.WaitMerge, got.Wait.Kind)
	require.Equal(t, "x", got.Wait.Step)
	requireBytes(t, data, got.Wait.Data, "wait data from GetWorkflow")
	loaded, _ := f.load(w.ID)
	requireBytes(t, data, loaded.Wait.Data, "wait data from Load")

	// A later run probes again and keeps other data; one that waits otherwise drops it.
	l2 := f.claimOne(w, "worker-b", at(time.Minute))
	data2 := payload(storage.MaxMeta, 9)
	f.finish(l2, storage.Finish{
		Commit: storage.Commit{Now: at(time.Minute + time.Second)},
		State:  storage.StateIdle,
		RunAt:  at(2 * time.Minute),
		Wait:   storage.Wait{Kind: "merge", Step: "y", Data: data2},
	})
	got = f.get(w.ID)
	require.Equal(t, "y", got.Wait.Step)
	requireBytes(t, data2, got.Wait.Data, "wait data replaced by a later run (MaxMeta bytes)")

	l3 := f.claimOne(w, "worker-c", at(2*time.Minute))
	err := f.s.FinishRun(f.ctx, l3, storage.Finish{
		Commit: storage.Commit{Now: at(2*time.Minute + time.Second)},
		State:  storage.StateIdle,
		Wait:   storage.Wait{Kind: "merge", Step: "z", Data: make([]byte, storage.MaxMeta+1)},
	})
	require.ErrorIs(t, err, storage.ErrTooLarge, "wait data larger than MaxMeta")
	requireBytes(t, data2, f.get(w.ID).Wait.Data, "a refused finish keeps the wait data")

	f.finish(l3, storage.Finish{
		Commit: storage.Commit{Now: at(2*time.Minute + time.Second)},
		State:  storage.StateIdle,
		RunAt:  at(3 * time.Minute),
		Wait:   storage.Wait{Kind: "sleep", Step: "sleep$nap"},
	})
	got = f.get(w.ID)
	require.Equal(t, storage.WaitSleep, got.Wait.Kind)
	require.Equal(t, "sleep$nap", got.Wait.Step)
	require.Empty(t, got.Wait.Data, "a wait without data replaces one with data")
}
