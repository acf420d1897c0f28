package storagetest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Tags: small string metadata given at creation, returned by every read, never changed, and
// selected on by ListFilter.Tags.

// tagsOrNil is how a store returns tags given as tags: nil when there are none.
func tagsOrNil(tags map[string]string) map[string]string {
	if len(tags) == 0 {
		return nil
	}
	return tags
}

// requireTagsEverywhere requires that workflow id carries want (nil: none) on every read
// path.
func (f *fixture) requireTagsEverywhere(id int64, want map[string]string, what string) {
	f.t.Helper()
	for _, p := range f.readEverywhere(id) {
		require.Equal(f.t, want, p.w.Tags, "%s: tags (%s)", what, p.method)
	}
}

// maxTags is a set of tags at every limit: MaxTags tags, keys of MaxTagKeyLen bytes and
// values of MaxTagValueLen bytes, multi-byte runes included.
func maxTags() map[string]string {
	tags := map[string]string{}
	for i := range storage.MaxTags {
		k := fmt.Sprintf("%02d-", i) + strings.Repeat("κ", (storage.MaxTagKeyLen-3)/2)
		k += strings.Repeat("k", storage.MaxTagKeyLen-len(k))
		v := strings.Repeat("v", storage.MaxTagValueLen-len("é")) + "é"
		tags[k] = v
	}
	return tags
}

// testTagsRoundTrip: tags given to CreateWorkflow, CreateWorkflows and SpawnBatch children are
// stored as given and returned by every read (Get, Find, Load, List, Claim, Retry, the create
// itself), through the workflow's life; none (nil or empty) is nil; a second create of the
// same name and key does not change them.
func testTagsRoundTrip(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	tags := map[string]string{"tenant": "acme", "env": "", "région": "eu-west ✓", "a:b/c": "x=y, z"}
	w, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "tags.one", Key: "k", Tags: maps.Clone(tags), RunAt: at(0), Now: at(0)})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, tags, w.Tags, "tags returned by CreateWorkflow")
	f.requireTagsEverywhere(w.ID, tags, "created")

	again, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "tags.one", Key: "k", Tags: map[string]string{"tenant": "other"}, Now: at(time.Second)})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, tags, again.Tags, "tags returned by a second create (the stored ones win)")

	c := f.claimed(w, "worker-a", at(time.Second))
	require.Equal(t, tags, c.Tags, "tags returned by Claim")
	f.finish(c.Lease(), storage.Finish{Commit: storage.Commit{Steps: []storage.Step{step("s", nil)}, Now: at(2 * time.Second)}, State: storage.StateFailed})
	f.requireTagsEverywhere(w.ID, tags, "failed")
	r, err := f.s.Retry(f.ctx, w.ID, storage.RetryRequest{Now: at(3 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, tags, r.Tags, "tags returned by Retry")
	require.NoError(t, f.s.Cancel(f.ctx, w.ID, at(4*time.Second)))
	f.requireTagsEverywhere(w.ID, tags, "cancelled")

	// None: nil and empty are both returned as nil.
	for i, none := range []map[string]string{nil, {}} {
		n, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "tags.none", Key: fmt.Sprint(i), Tags: none, Now: at(0)})
		require.NoError(t, err)
		require.True(t, created)
		require.Nil(t, n.Tags, "tags returned by CreateWorkflow given %#v", none)
		f.requireTagsEverywhere(n.ID, nil, fmt.Sprintf("created with %#v", none))
	}

	// At every limit.
	limit, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "tags.limit", Key: "k", Tags: maxTags(), Now: at(0)})
	require.NoError(t, err, "tags at every limit are accepted")
	require.True(t, created)
	f.requireTagsEverywhere(limit.ID, maxTags(), "tags at every limit")

	// CreateWorkflows.
	out, _ := f.createBatch([]storage.NewWorkflow{
		{Name: "tags.bulk", Key: "a", Tags: map[string]string{"tenant": "acme"}, Now: at(0)},
		{Name: "tags.bulk", Key: "b", Now: at(0)},
		{Name: "tags.bulk", Key: "c", Tags: map[string]string{}, Now: at(0)},
		{Name: "tags.bulk", Key: "d", Tags: map[string]string{"tenant": "globex", "tier": ""}, Now: at(0)},
	})
	want := []map[string]string{{"tenant": "acme"}, nil, nil, {"tenant": "globex", "tier": ""}}
	for i, w := range out {
		require.Equal(t, want[i], w.Tags, "tags of workflow %d returned by CreateWorkflows", i)
		f.requireTagsEverywhere(w.ID, want[i], fmt.Sprintf("workflow %d of a batch", i))
	}

	// SpawnBatch children.
	_, l := f.start("tags.parent")
	children := kids("tags.child", "c", 0, 3)
	children[0].Tags = map[string]string{"tenant": "acme", "item": "0"}
	children[2].Tags = map[string]string{}
	res := f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: children, Now: at(time.Second)})
	got := requireChildren(f, res.BranchStepID, childKeys(children))
	for i, c := range got {
		f.requireTagsEverywhere(c.ID, tagsOrNil(children[i].Tags), fmt.Sprintf("child %q", c.Key))
	}
}

// testListTags: ListFilter.Tags selects the workflows carrying every tag given with the same
// value (an empty value matches a tag stored empty, not a missing one), alone, combined with
// the other filters, and page by page.
func testListTags(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, l := f.start("tags.parent")
	sets := []map[string]string{
		nil,
		{"tenant": "acme"},
		{"tenant": "acme", "env": "prod"},
		{"tenant": "acme", "env": ""},
		{"tenant": "globex", "env": "prod"},
		{"env": ""},
		{"tenant": "Acme"},
		{"tenant": "acme ", "env": "prod"},
		{"tenant": "acme", "env": "prod", "tier": "gold"},
	}
	var all []storage.Workflow
	for round, name := range []string{"tags.a", "tags.b"} {
		for i, tags := range sets {
			w, _, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: name, Key: fmt.Sprint(i), Tags: tags, RunAt: at(time.Duration(i) * time.Minute), Now: at(0)})
			require.NoError(t, err)
			all = append(all, w)
		}
		children := kids("tags.child", fmt.Sprint("r", round), 0, len(sets))
		for i := range children {
			children[i].Tags = sets[i]
		}
		f.spawn(l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: children, Now: at(time.Second)})
	}
	stepID := f.stepID(l.WorkflowID, "branch$b")
	done := f.runTo("tags.done", storage.StateCompleted, at(time.Second))
	all = append(all, f.childrenOf(stepID)...)
	all = append(all, f.get(l.WorkflowID), done)
	stored := make([]storage.Workflow, 0, len(all))
	for _, w := range all {
		stored = append(stored, f.get(w.ID))
	}

	for _, filter := range []storage.ListFilter{
		{Tags: map[string]string{"tenant": "acme"}},
		{Tags: map[string]string{"tenant": "acme", "env": "prod"}},
		{Tags: map[string]string{"env": ""}},
		{Tags: map[string]string{"tenant": "acme", "env": ""}},
		{Tags: map[string]string{"tier": "gold", "env": "prod", "tenant": "acme"}},
		{Tags: map[string]string{"tenant": "acme"}, Name: "tags.b"},
		{Tags: map[string]string{"env": "prod"}, NotNames: []string{"tags.a"}},
		{Tags: map[string]string{"tenant": "acme"}, States: []storage.State{storage.StateIdle}},
		{Tags: map[string]string{"tenant": "acme"}, DueBy: at(2 * time.Minute)},
		{Tags: map[string]string{"tenant": "acme"}, ParentStepID: stepID},
		{Tags: map[string]string{"env": "prod"}, AfterID: all[3].ID},
		{Tags: map[string]string{}},
	} {
		var want []int64
		for _, w := range stored {
			if matches(w, filter) {
				want = append(want, w.ID)
			}
		}
		slices.Sort(want)
		require.NotEmpty(t, want, "filter %+v selects nothing; the case is wrong", filter)
		require.Equal(t, want, ids(f.list(filter)), "ListWorkflows %+v", filter)

		// Page by page, two at a time.
		var paged []int64
		page := filter
		page.Limit = 2
		for range len(stored) {
			got := f.list(page)
			require.LessOrEqual(t, len(got), 2, "page of %+v", page)
			if len(got) == 0 {
				break
			}
			paged = append(paged, ids(got)...)
			page.AfterID = got[len(got)-1].ID
		}
		require.Equal(t, want, paged, "ListWorkflows %+v, two at a time", filter)
	}
	for _, filter := range []storage.ListFilter{
		{Tags: map[string]string{"tenant": "initech"}},
		{Tags: map[string]string{"missing": ""}},
		{Tags: map[string]string{"tenant": "acme", "env": "staging"}},
		{Tags: map[string]string{"tenant": "globex"}, Name: "tags.child", States: []storage.State{storage.StateRunning}},
	} {
		require.Empty(t, f.list(filter), "ListWorkflows %+v", filter)
	}
}

// testInvalidTags: tags beyond a limit (too many, a long key or value), with an empty key,
// control characters or bad UTF-8 are refused with ErrInvalid by CreateWorkflow,
// CreateWorkflows, SpawnBatch and ListWorkflows, and nothing is written.
func testInvalidTags(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	many := map[string]string{}
	for i := range storage.MaxTags + 1 {
		many[fmt.Sprint("t", i)] = "v"
	}
	bad := []struct {
		name string
		tags map[string]string
	}{
		{"too many tags", many},
		{"empty key", map[string]string{"": "v"}},
		{"overlong key", map[string]string{strings.Repeat("k", storage.MaxTagKeyLen+1): "v"}},
		{"overlong multi-byte key", map[string]string{strings.Repeat("é", storage.MaxTagKeyLen/2) + "x": "v"}},
		{"overlong value", map[string]string{"k": strings.Repeat("v", storage.MaxTagValueLen+1)}},
		{"newline in key", map[string]string{"a\nb": "v"}},
		{"NUL in value", map[string]string{"k": "a\x00b"}},
		{"tab in value", map[string]string{"k": "a\tb"}},
		{"C1 control in key", map[string]string{"a\u0085b": "v"}},
		{"invalid UTF-8 key", map[string]string{"a\xffb": "v"}},
		{"invalid UTF-8 value", map[string]string{"k": "a\xc3"}},
	}
	_, l := f.start("tags.parent")
	before, stepsBefore := f.load(l.WorkflowID)
	for _, tc := range bad {
		_, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "tags.bad", Key: "one", Tags: tc.tags, Now: at(0)})
		require.ErrorIs(t, err, storage.ErrInvalid, "CreateWorkflow with %s", tc.name)
		require.False(t, created, "CreateWorkflow with %s", tc.name)

		ws := batch("tags.bad", "b", 3)
		ws[1].Tags = tc.tags
		_, createdAll, err := f.s.CreateWorkflows(f.ctx, ws)
		require.ErrorIs(t, err, storage.ErrInvalid, "CreateWorkflows with %s", tc.name)
		require.NotContains(t, createdAll, true, "CreateWorkflows with %s", tc.name)

		children := kids("tags.bad", "c", 0, 3)
		children[2].Tags = tc.tags
		_, err = f.s.SpawnBatch(f.ctx, l, storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{branchStep("branch$b")}, Children: children, Now: at(time.Second)})
		require.ErrorIs(t, err, storage.ErrInvalid, "SpawnBatch with a child with %s", tc.name)

		_, err = f.s.ListWorkflows(f.ctx, storage.ListFilter{Tags: tc.tags})
		require.ErrorIs(t, err, storage.ErrInvalid, "ListWorkflows with %s", tc.name)
	}
	require.Empty(t, f.list(storage.ListFilter{Name: "tags.bad"}), "refused calls stored workflows")
	after, stepsAfter := f.load(l.WorkflowID)
	requireLeaseUnchanged(t, before, after)
	require.Equal(t, stepsBefore, stepsAfter, "refused spawns wrote steps")
}
