package storagetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Inspector is storage.Inspector: the operator queries of the CLI and the dashboard. Its
// cases are the Inspect* cases.
const Inspector Capability = "Inspector"

// inspector returns the fixture's store as a storage.Inspector, or skips the case.
func (f *fixture) inspector() storage.Inspector {
	in, ok := f.s.(storage.Inspector)
	if !ok {
		f.t.Skipf("capability %s: the store does not implement storage.Inspector", Inspector)
	}
	return in
}

// testListKeyPrefix: ListFilter.KeyPrefix selects the workflows of the name whose key starts
// with the prefix, byte for byte: LIKE's wildcards and escapes are plain characters, case
// matters, and keys of other names are not selected.
func testListKeyPrefix(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	byKey := map[string]int64{}
	for _, k := range []string{"order-1", "order-2", "Order-3", "order-10", "ord", "other", "a%b", "a_c", "abc", `a\d`, "ü-1", "ü"} {
		byKey[k] = f.create("prefix.list", k, at(0)).ID
	}
	f.create("prefix.other", "order-9", at(0))
	keys := func(prefix string) []string {
		t.Helper()
		var out []string
		for _, w := range f.list(storage.ListFilter{Name: "prefix.list", KeyPrefix: prefix}) {
			out = append(out, w.Key)
		}
		return out
	}
	require.Equal(t, []string{"order-1", "order-2", "order-10"}, keys("order-"), "in ID order, of this name only")
	require.Equal(t, []string{"order-1", "order-2", "order-10", "ord"}, keys("ord"))
	require.Equal(t, []string{"order-10"}, keys("order-10"))
	require.Equal(t, []string{"a%b"}, keys("a%"), "%% is no wildcard")
	require.Equal(t, []string{"a_c"}, keys("a_"), "_ is no wildcard")
	require.Equal(t, []string{`a\d`}, keys(`a\`), "a backslash is no escape")
	require.Equal(t, []string{"ü-1", "ü"}, keys("ü"))
	require.Empty(t, keys("order-1x"))
	require.Empty(t, keys("ORDER"), "case matters")

	// With other filters and paging.
	page := f.list(storage.ListFilter{Name: "prefix.list", KeyPrefix: "order-", AfterID: byKey["order-1"], Limit: 1})
	require.Equal(t, []int64{byKey["order-2"]}, ids(page))
	page = f.list(storage.ListFilter{Name: "prefix.list", KeyPrefix: "order-", Desc: true, Limit: 2})
	require.Equal(t, []int64{byKey["order-10"], byKey["order-2"]}, ids(page))
	require.Empty(t, f.list(storage.ListFilter{Name: "prefix.list", KeyPrefix: "order-", States: []storage.State{storage.StateStalled}}))
}

// testListDescending: pages in both directions. Desc returns the highest IDs in range,
// newest first; BeforeID bounds a page from above; AfterID and BeforeID together select the
// IDs strictly between them; and the filters apply in either direction, children included.
func testListDescending(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	var all []int64
	for i := range 10 {
		all = append(all, f.create("desc.list", fmt.Sprint("k", i), at(0)).ID)
	}
	f.create("desc.other", "k", at(0))
	desc := slices.Clone(all)
	slices.Reverse(desc)
	list := func(filter storage.ListFilter) []int64 {
		t.Helper()
		filter.Name = "desc.list"
		return ids(f.list(filter))
	}
	require.Equal(t, desc[:3], list(storage.ListFilter{Desc: true, Limit: 3}), "the newest page")
	require.Equal(t, desc[3:6], list(storage.ListFilter{Desc: true, BeforeID: desc[2], Limit: 3}), "the next page, older")
	require.Equal(t, desc[9:], list(storage.ListFilter{Desc: true, BeforeID: desc[8], Limit: 3}), "the last page is short")
	require.Empty(t, list(storage.ListFilter{Desc: true, BeforeID: all[0]}), "nothing before the first")
	require.Equal(t, all[7:10], list(storage.ListFilter{AfterID: desc[3], Limit: 3}), "back to the newer page, ascending")
	require.Equal(t, all[3:5], list(storage.ListFilter{AfterID: all[2], BeforeID: all[5]}), "strictly between")
	require.Equal(t, []int64{all[4], all[3]}, list(storage.ListFilter{AfterID: all[2], BeforeID: all[5], Desc: true}), "strictly between, descending")
	require.Equal(t, all[:2], list(storage.ListFilter{BeforeID: all[2]}), "BeforeID alone, ascending")
	require.Equal(t, desc[:2], list(storage.ListFilter{BeforeID: -1, AfterID: -1, Desc: true, Limit: 2}), "bounds of zero or less are none")

	// States, and a branch's children, in both directions.
	f.claimOne(f.get(all[0]), "worker-a", at(0))
	require.Equal(t, desc[:9], list(storage.ListFilter{Desc: true, States: []storage.State{storage.StateIdle}}))
	_, l := f.start("desc.parent")
	res := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("desc.child", "k$b$items", 0, 6), Now: at(time.Second)})
	children := ids(f.list(storage.ListFilter{ParentStepID: res.BranchStepID}))
	require.Len(t, children, 6)
	got := ids(f.list(storage.ListFilter{ParentStepID: res.BranchStepID, Desc: true, BeforeID: children[5], Limit: 2}))
	require.Equal(t, []int64{children[4], children[3]}, got)
	got = ids(f.list(storage.ListFilter{ParentStepID: res.BranchStepID, States: []storage.State{storage.StateIdle}, Desc: true, Limit: 2}))
	require.Equal(t, []int64{children[5], children[4]}, got)
}

// testInvalidListPaging: a key prefix without a name, or an invalid one, is refused with
// ErrInvalid.
func testInvalidListPaging(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for name, filter := range map[string]storage.ListFilter{
		"prefix without name":   {KeyPrefix: "a"},
		"prefix with a control": {Name: "n", KeyPrefix: "a\x00"},
		"prefix too long":       {Name: "n", KeyPrefix: strings.Repeat("k", storage.MaxKeyLen+1)},
	} {
		_, err := f.s.ListWorkflows(f.ctx, filter)
		require.ErrorIs(t, err, storage.ErrInvalid, name)
	}
}

// testInspectCountStates: CountStates counts by name and state, in name then States order;
// exact when the sample covers the store, and otherwise counting the newest workflows only,
// saying so.
func testInspectCountStates(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	in := f.inspector()
	when := at(time.Second)
	f.runTo("count.b", storage.StateCompleted, when)
	f.runTo("count.b", storage.StateFailed, when)
	f.runTo("count.b", storage.StateStalled, when)
	f.runTo("count.a", storage.StateCancelled, when)
	f.runTo("count.a", storage.StateRunning, when)
	for i := range 3 {
		f.create("count.a", fmt.Sprint("idle", i), at(time.Hour))
	}
	got, err := in.CountStates(f.ctx, storage.CountStatesQuery{})
	require.NoError(t, err)
	require.Equal(t, storage.StateCounts{Counted: 8, Counts: []storage.StateCount{
		{Name: "count.a", State: storage.StateIdle, Count: 3},
		{Name: "count.a", State: storage.StateRunning, Count: 1},
		{Name: "count.a", State: storage.StateCancelled, Count: 1},
		{Name: "count.b", State: storage.StateStalled, Count: 1},
		{Name: "count.b", State: storage.StateCompleted, Count: 1},
		{Name: "count.b", State: storage.StateFailed, Count: 1},
	}}, got)

	got, err = in.CountStates(f.ctx, storage.CountStatesQuery{Name: "count.b"})
	require.NoError(t, err)
	require.Equal(t, 3, got.Counted)
	require.False(t, got.Sampled)
	require.Len(t, got.Counts, 3)

	// A sample of 4: the 3 idle ones and the running one are the newest four.
	got, err = in.CountStates(f.ctx, storage.CountStatesQuery{Sample: 4})
	require.NoError(t, err)
	require.Equal(t, storage.StateCounts{Counted: 4, Sampled: true, Counts: []storage.StateCount{
		{Name: "count.a", State: storage.StateIdle, Count: 3},
		{Name: "count.a", State: storage.StateRunning, Count: 1},
	}}, got)
	got, err = in.CountStates(f.ctx, storage.CountStatesQuery{Name: "count.a", Sample: 5})
	require.NoError(t, err)
	require.False(t, got.Sampled, "count.a has exactly 5")
	require.Equal(t, 5, got.Counted)

	got, err = in.CountStates(f.ctx, storage.CountStatesQuery{Name: "count.none"})
	require.NoError(t, err)
	require.Equal(t, storage.StateCounts{}, got)
	_, err = in.CountStates(f.ctx, storage.CountStatesQuery{Name: "bad$name"})
	require.ErrorIs(t, err, storage.ErrInvalid)
}

// testInspectBranchCounts: BranchCounts counts a branch's children by state, capped per
// state, and returns the finish times of its newest final children, newest ID first.
func testInspectBranchCounts(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	in := f.inspector()
	_, l := f.start("branch.parent")
	res := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: kids("branch.child", "k$b$items", 0, 20), Now: at(time.Second)})
	other := f.spawn(l, storage.SpawnRequest{Branch: "branch$c", Steps: []storage.Step{branchStep("branch$c")}, Children: kids("branch.other", "k$c$items", 0, 3), Now: at(time.Second)})
	claimed := f.claim("worker-b", at(2*time.Second), 10, "branch.child")
	require.Len(t, claimed, 10)
	// 5 completed, 2 failed and 1 stalled, each finishing a second after the one before; 2
	// stay running; one idle child is cancelled; 9 stay idle.
	ends := []storage.State{storage.StateCompleted, storage.StateFailed, storage.StateCompleted, storage.StateStalled,
		storage.StateCompleted, storage.StateCompleted, storage.StateFailed, storage.StateCompleted}
	var finished []time.Time // of the final children, in ID order
	for i, st := range ends {
		when := at(time.Duration(10+i) * time.Second)
		f.finish(claimed[i].Lease(), storage.Finish{Commit: storage.Commit{Now: when}, State: st})
		if st.Final() {
			finished = append(finished, when)
		}
	}
	idle := f.list(storage.ListFilter{ParentStepID: res.BranchStepID, States: []storage.State{storage.StateIdle}})
	require.Len(t, idle, 10)
	cancelledAt := at(time.Minute)
	require.NoError(t, f.s.Cancel(f.ctx, idle[9].ID, cancelledAt)) // the newest child
	finished = append(finished, cancelledAt)

	got, err := in.BranchCounts(f.ctx, storage.BranchQuery{StepID: res.BranchStepID})
	require.NoError(t, err)
	want := map[storage.State]int{storage.StateIdle: 9, storage.StateRunning: 2, storage.StateStalled: 1,
		storage.StateCompleted: 5, storage.StateFailed: 2, storage.StateCancelled: 1}
	require.Len(t, got.Counts, len(storage.States))
	for i, st := range storage.States {
		require.Equal(t, st, got.Counts[i].State, "Counts in States order")
		require.Equal(t, want[st], got.Count(st), "children %s", st)
	}
	require.Empty(t, got.Capped)
	require.Len(t, got.RecentFinished, len(finished))
	for i, when := range got.RecentFinished {
		requireTime(t, finished[len(finished)-1-i], when, fmt.Sprintf("finish time %d, newest ID first", i))
	}

	got, err = in.BranchCounts(f.ctx, storage.BranchQuery{StepID: res.BranchStepID, Cap: 2, Recent: 3})
	require.NoError(t, err)
	require.Equal(t, 2, got.Count(storage.StateIdle))
	require.Equal(t, 2, got.Count(storage.StateCompleted))
	require.Equal(t, 1, got.Count(storage.StateStalled))
	require.Equal(t, []storage.State{storage.StateIdle, storage.StateRunning, storage.StateCompleted, storage.StateFailed}, got.Capped)
	require.Len(t, got.RecentFinished, 3)
	requireTime(t, cancelledAt, got.RecentFinished[0], "the newest final child")

	got, err = in.BranchCounts(f.ctx, storage.BranchQuery{StepID: res.BranchStepID, Recent: -1})
	require.NoError(t, err)
	require.Empty(t, got.RecentFinished, "Recent < 0: no finish times")

	got, err = in.BranchCounts(f.ctx, storage.BranchQuery{StepID: other.BranchStepID})
	require.NoError(t, err)
	require.Equal(t, 3, got.Count(storage.StateIdle), "another branch's children only")
	require.Empty(t, got.RecentFinished)

	got, err = in.BranchCounts(f.ctx, storage.BranchQuery{StepID: 1 << 40})
	require.NoError(t, err, "an unknown step has no children")
	for _, c := range got.Counts {
		require.Zero(t, c.Count)
	}
	_, err = in.BranchCounts(f.ctx, storage.BranchQuery{})
	require.ErrorIs(t, err, storage.ErrInvalid)
}

// testInspectBacklog: Backlog reports the oldest due RunAt, how many are due, and the
// running workflows whose lease expired, oldest first; a live lease, a future RunAt and
// workflows that are not runnable are not counted.
func testInspectBacklog(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	in := f.inspector()
	now := at(time.Hour)
	got, err := in.Backlog(f.ctx, now, 0)
	require.NoError(t, err)
	require.Equal(t, storage.Backlog{}, got, "an empty store")

	f.runTo("backlog.done", storage.StateCompleted, at(0))
	f.runTo("backlog.stalled", storage.StateStalled, at(0))
	f.create("backlog.later", "k", at(2*time.Hour))
	live := f.create("backlog.live", "k", at(0))
	f.claimOne(live, "worker-a", at(0)) // leased for the suite's TTL: live throughout
	dead1 := f.create("backlog.dead1", "k", at(0))
	l1 := f.claimOne(dead1, "worker-x", at(0))
	dead2 := f.create("backlog.dead2", "k", at(0))
	l2 := f.claimOne(dead2, "worker-y", at(0))
	require.NoError(t, f.s.Heartbeat(f.ctx, l2, shortTTL, at(0)))
	f.lapse(l1, at(0)) // both leases have run out by the store's clock now
	idle1 := f.create("backlog.idle1", "k", at(10*time.Minute))
	f.create("backlog.idle2", "k", at(20*time.Minute))

	got, err = in.Backlog(f.ctx, now, 0)
	require.NoError(t, err)
	// The dead leases' RunAt is the last heartbeat's now (at(0)) plus shortTTL.
	requireTime(t, at(shortTTL), got.OldestDue, "the oldest due: a dead lease")
	require.Equal(t, 4, got.Due, "two dead leases, two idle workflows")
	require.False(t, got.Probed)
	require.Equal(t, []int64{dead1.ID, dead2.ID}, ids(got.Expired), "dead leases, oldest RunAt first (ID breaks the tie)")
	require.Equal(t, "worker-x", got.Expired[0].LeaseOwner)

	got, err = in.Backlog(f.ctx, now, 1)
	require.NoError(t, err)
	require.Equal(t, []int64{dead1.ID}, ids(got.Expired), "at most limit")
	require.Equal(t, 4, got.Due)

	got, err = in.Backlog(f.ctx, at(15*time.Minute), 0)
	require.NoError(t, err)
	require.Equal(t, 3, got.Due, "due by the caller's clock")

	f.takeOver(dead1, "worker-z", at(time.Minute))
	f.takeOver(dead2, "worker-z", at(time.Minute))
	got, err = in.Backlog(f.ctx, now, 0)
	require.NoError(t, err)
	requireTime(t, idle1.RunAt, got.OldestDue, "once the dead leases are taken over")
	require.Equal(t, 2, got.Due)
	require.Empty(t, got.Expired)

	_, err = in.Backlog(f.ctx, time.Time{}, 0)
	require.ErrorIs(t, err, storage.ErrInvalid)
}
