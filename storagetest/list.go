package storagetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

func (f *fixture) list(filter storage.ListFilter) []storage.Workflow {
	f.t.Helper()
	got, err := f.s.ListWorkflows(f.ctx, filter)
	require.NoError(f.t, err, "ListWorkflows %+v", filter)
	return got
}

// testListPaging: keyset pages of 100 return every workflow exactly once, in ID order.
func testListPaging(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const n = 250
	var want []int64
	for i := range n {
		want = append(want, f.create([]string{"a", "b", "c"}[i%3], fmt.Sprint(i), at(0)).ID)
	}
	slices.Sort(want)

	var got []int64
	var sizes []int
	after := int64(0)
	for range n {
		page := f.list(storage.ListFilter{AfterID: after, Limit: 100})
		sizes = append(sizes, len(page))
		if len(page) == 0 {
			break
		}
		got = append(got, ids(page)...)
		after = page[len(page)-1].ID
	}
	require.Equal(t, []int{100, 100, 50, 0}, sizes, "page sizes")
	require.Equal(t, want, got, "every workflow once, in ID order")

	require.Len(t, f.list(storage.ListFilter{}), 100, "limit 0 means 100")
}

// testListFilters: each filter field, alone and combined, selects exactly the workflows it
// describes.
func testListFilters(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	var all []int64
	for _, name := range []string{"alpha", "beta", "gamma"} {
		for _, state := range []storage.State{storage.StateCompleted, storage.StateFailed, storage.StateStalled, storage.StateCancelled, storage.StateIdle, storage.StateRunning} {
			all = append(all, f.runTo(name, state, at(time.Second)).ID)
		}
	}
	for i, name := range []string{"alpha", "alpha", "beta", "gamma", "gamma"} {
		all = append(all, f.create(name, fmt.Sprint("due-", i), at(time.Duration(i)*time.Minute)).ID)
	}
	stored := make([]storage.Workflow, 0, len(all))
	for _, id := range all {
		stored = append(stored, f.get(id))
	}
	alpha := f.list(storage.ListFilter{Name: "alpha"})

	for _, filter := range []storage.ListFilter{
		{Name: "alpha"},
		{States: []storage.State{storage.StateCompleted, storage.StateStalled}},
		{States: []storage.State{storage.StateIdle}},
		{NotNames: []string{"alpha", "beta"}},
		{DueBy: at(2 * time.Minute)},
		{DueBy: at(time.Hour)},
		{Name: "beta", States: []storage.State{storage.StateRunning, storage.StateFailed}},
		{NotNames: []string{"gamma"}, DueBy: at(time.Minute)},
		{Name: "alpha", AfterID: alpha[2].ID},
		{Name: "gamma", States: []storage.State{storage.StateIdle}, Limit: 2},
	} {
		var want []int64
		for _, w := range stored {
			if matches(w, filter) {
				want = append(want, w.ID)
			}
		}
		slices.Sort(want)
		if filter.Limit > 0 && len(want) > filter.Limit {
			want = want[:filter.Limit]
		}
		require.NotEmpty(t, want, "filter %+v selects nothing; the case is wrong", filter)
		require.Equal(t, want, ids(f.list(filter)), "ListWorkflows %+v", filter)
	}
	require.Empty(t, f.list(storage.ListFilter{Name: "delta"}), "no workflow has that name")
}

// matches is the meaning of storage.ListFilter (without paging), for checking a backend's.
func matches(w storage.Workflow, f storage.ListFilter) bool {
	switch {
	case f.Name != "" && w.Name != f.Name:
		return false
	case len(f.States) > 0 && !slices.Contains(f.States, w.State):
		return false
	case slices.Contains(f.NotNames, w.Name):
		return false
	case !f.DueBy.IsZero() && (w.RunAt.IsZero() || w.RunAt.After(f.DueBy)):
		return false
	case f.ParentStepID != 0 && w.ParentStepID != f.ParentStepID:
		return false
	case w.ID <= f.AfterID:
		return false
	}
	for k, v := range f.Tags {
		if got, ok := w.Tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// testListLimitCap: no page is larger than 1,000 workflows.
func testListLimitCap(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for i := range 1001 {
		f.create("bulk", fmt.Sprint(i), at(0))
	}
	require.Len(t, f.list(storage.ListFilter{Limit: 5000}), 1000, "a page holds at most 1,000 workflows")
	require.Len(t, f.list(storage.ListFilter{Limit: 1001, AfterID: 0}), 1000)
}
