package storagetest

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// The limits of the list and cleanup units (storage.DefaultListLimit and the rest): a limit
// that is not positive means the default, and one past the cap is cut to it, never refused.

// manyChildren spawns n children of one branch of a started parent, in one batch, and returns
// the parent's lease and the branch step.
func (f *fixture) manyChildren(n int) (storage.Lease, int64) {
	f.t.Helper()
	_, l := f.start("limits.parent")
	res := f.spawn(l, storage.SpawnRequest{Branch: "branch$many", Steps: []storage.Step{branchStep("branch$many")}, Children: kids("limits.child", "p$many", 0, n), Now: at(time.Second)})
	require.Equal(f.t, n, res.Inserted)
	return l, res.BranchStepID
}

// testListLimitDefaults: ListWorkflows and ListErrors read a limit that is not positive as
// their defaults, and ListWorkflows cuts a larger one to MaxListLimit: the page ends there
// and the next page (AfterID) holds the rest.
func testListLimitDefaults(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	l, branch := f.manyChildren(storage.MaxListLimit + 1)
	for _, limit := range []int{0, -1} {
		require.Len(t, f.list(storage.ListFilter{ParentStepID: branch, Limit: limit}), storage.DefaultListLimit, "ListWorkflows limit %d", limit)
	}
	page := f.list(storage.ListFilter{ParentStepID: branch, Limit: math.MaxInt})
	require.Len(t, page, storage.MaxListLimit, "a page holds at most MaxListLimit workflows, whatever the limit")
	rest := f.list(storage.ListFilter{ParentStepID: branch, AfterID: page[len(page)-1].ID, Limit: math.MaxInt})
	require.Len(t, rest, 1, "the next page holds the rest")

	recs := make([]storage.ErrorRecord, storage.DefaultErrorsLimit+1)
	for i := range recs {
		recs[i] = storage.ErrorRecord{Step: "poll", Attempt: i + 1, Message: fmt.Sprint("error ", i)}
	}
	f.save(l, storage.Commit{Errors: recs, Now: at(2 * time.Second)})
	for _, limit := range []int{0, -1} {
		got, err := f.s.ListErrors(f.ctx, l.WorkflowID, limit)
		require.NoError(t, err, "ListErrors limit %d", limit)
		require.Len(t, got, storage.DefaultErrorsLimit, "ListErrors limit %d", limit)
	}
	all, err := f.s.ListErrors(f.ctx, l.WorkflowID, math.MaxInt)
	require.NoError(t, err, "ListErrors with the largest limit")
	require.Len(t, all, len(recs), "a limit past MaxErrorsLimit returns every record")
}

// testCleanupDefaultLimit: DeleteFinished deletes at most DefaultCleanupLimit workflows when
// the limit is not positive, and accepts a limit past MaxCleanupLimit.
func testCleanupDefaultLimit(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const n = storage.DefaultCleanupLimit + 2
	_, branch := f.manyChildren(n)
	children := f.childrenOf(branch)
	require.Len(t, children, n)
	for _, c := range children {
		require.NoError(t, f.s.Cancel(f.ctx, c.ID, at(time.Minute)), "Cancel of child %d", c.ID)
	}
	before := at(time.Hour)
	require.Equal(t, storage.DefaultCleanupLimit, f.deleteFinished(before, 0), "limit 0 deletes DefaultCleanupLimit")
	require.Equal(t, 2, f.deleteFinished(before, -1), "a negative limit means the default too: the rest")
	require.Zero(t, f.deleteFinished(before, math.MaxInt), "a limit past MaxCleanupLimit is accepted")
	require.Empty(t, f.childrenOf(branch), "every cancelled child was deleted")
}
