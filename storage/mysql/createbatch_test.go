package mysql

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

func TestCreateWorkflowsBatch(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	old := create(t, s, "bulk", "k2", at(0))

	ws := []storage.NewWorkflow{
		{Name: "bulk", Key: "k1", Input: []byte(`1`), Now: at(time.Second), Tags: map[string]string{"tenant": "a"}},
		{Name: "bulk", Key: "k2", Input: []byte(`"ignored"`), Now: at(time.Second)},
		{Name: "other", Key: "k1", RunAt: at(time.Hour), TraceContext: []byte(`{"traceparent":"x"}`), ParentStepID: 42, Now: at(2 * time.Second)},
		{Name: "bulk", Key: "k2 ", Now: at(time.Second), Tags: map[string]string{}},
	}
	out, created, err := s.CreateWorkflows(ctx, ws)
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true, true}, created)
	require.Len(t, out, 4)
	require.Equal(t, old, out[1], "an existing workflow is returned unchanged")
	require.Equal(t, storage.Workflow{
		ID: out[0].ID, Name: "bulk", Key: "k1", Input: []byte(`1`), State: storage.StateIdle, RunAt: at(time.Second),
		Tags: map[string]string{"tenant": "a"}, CreatedAt: at(time.Second), UpdatedAt: at(time.Second),
	}, out[0])
	require.Equal(t, at(time.Hour), out[2].RunAt)
	require.Equal(t, int64(42), out[2].ParentStepID)
	require.Equal(t, []byte(`{"traceparent":"x"}`), out[2].TraceContext)
	require.Nil(t, out[3].Tags, "empty tags are none")
	require.Equal(t, "k2 ", out[3].Key)
	for i, w := range out {
		got, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, w, got, "workflow %d as stored", i)
	}

	// Applied again, nothing is created and the same rows come back.
	again, created, err := s.CreateWorkflows(ctx, ws)
	require.NoError(t, err)
	require.Equal(t, []bool{false, false, false, false}, created)
	require.Equal(t, out, again)

	// Invalid batches store nothing.
	_, _, err = s.CreateWorkflows(ctx, nil)
	require.ErrorIs(t, err, storage.ErrInvalid)
	_, _, err = s.CreateWorkflows(ctx, []storage.NewWorkflow{{Name: "bulk", Key: "new", Now: at(0)}, {Name: "bulk", Key: "new", Now: at(0)}})
	require.ErrorIs(t, err, storage.ErrInvalid)
	_, _, err = s.CreateWorkflows(ctx, []storage.NewWorkflow{{Name: "bulk", Key: "new2", Now: at(0)}, {Name: "", Key: "x", Now: at(0)}})
	require.ErrorIs(t, err, storage.ErrInvalid)
	_, err = s.FindWorkflow(ctx, "bulk", "new2")
	require.ErrorIs(t, err, storage.ErrNotFound)
}

// TestCreateWorkflowsConcurrently: overlapping batches create each workflow once, and every
// caller gets the one row per name and key.
func TestCreateWorkflowsConcurrently(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	const callers, size = 6, 200
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		ids     = map[string]int64{}
		errs    []error
	)
	for c := range callers {
		wg.Go(func() {
			ws := make([]storage.NewWorkflow, size)
			for i := range ws {
				// Each caller overlaps the next on half its keys.
				ws[i] = storage.NewWorkflow{Name: "race", Key: fmt.Sprint(c*size/2 + i), Now: at(0)}
			}
			out, made, err := s.CreateWorkflows(ctx, ws)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			for i, w := range out {
				if made[i] {
					created++
				}
				if id, ok := ids[w.Key]; ok && id != w.ID {
					errs = append(errs, fmt.Errorf("key %s has ids %d and %d", w.Key, id, w.ID))
				}
				ids[w.Key] = w.ID
				if w.Key != ws[i].Key {
					errs = append(errs, fmt.Errorf("out[%d] is key %s, want %s", i, w.Key, ws[i].Key))
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	distinct := (callers + 1) * size / 2
	require.Len(t, ids, distinct)
	require.Equal(t, distinct, created, "each workflow is reported created exactly once")
	list, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "race", Limit: storage.MaxListLimit})
	require.NoError(t, err)
	require.Len(t, list, distinct)
}

// TestCreateWorkflowsRetriesTransaction: a connection lost before the COMMIT rolls the batch
// back on the server, and the retried transaction still reports every workflow as created.
func TestCreateWorkflowsRetriesTransaction(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	ws := []storage.NewWorkflow{{Name: "lost", Key: "a", Now: at(0)}, {Name: "lost", Key: "b", Now: at(0)}}
	c.dropConnection(2, false) // the SELECT after the INSERT: the connection breaks before it is sent
	out, created, err := s.CreateWorkflows(ctx, ws)
	require.NoError(t, err)
	require.Equal(t, int64(1), c.drops.Load())
	require.Equal(t, []bool{true, true}, created)
	require.Equal(t, "a", out[0].Key)
	require.Equal(t, "b", out[1].Key)
	list, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "lost"})
	require.NoError(t, err)
	require.Len(t, list, 2)
}

func TestTags(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	tricky := map[string]string{
		`quo"te`:    `back\slash`,
		"unicode é": "\u2028 <&> ☃",
		"empty":     "",
		"space":     "v ",
	}
	mk := func(key string, tags map[string]string) storage.Workflow {
		w, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "tagged", Key: key, Tags: tags, Now: at(0)})
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, tags, w.Tags)
		return w
	}
	a := mk("a", tricky)
	b := mk("b", map[string]string{"space": "v", "empty": "", "Unicode é": "x"})
	c := mk("c", nil)
	d := mk("d", map[string]string{"space": "V "})

	got, err := s.GetWorkflow(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, tricky, got.Tags)
	got, err = s.FindWorkflow(ctx, "tagged", "b")
	require.NoError(t, err)
	require.Equal(t, b.Tags, got.Tags)
	got, _, err = s.Load(ctx, c.ID)
	require.NoError(t, err)
	require.Nil(t, got.Tags)
	claimed := claimAll(t, s, at(0), 10, "tagged")
	require.Len(t, claimed, 4)
	for _, w := range claimed {
		if w.ID == a.ID {
			require.Equal(t, tricky, w.Tags)
		}
	}

	list := func(tags map[string]string) []int64 {
		t.Helper()
		ws, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "tagged", Tags: tags})
		require.NoError(t, err)
		var ids []int64
		for _, w := range ws {
			ids = append(ids, w.ID)
		}
		return ids
	}
	require.Equal(t, []int64{a.ID, b.ID, c.ID, d.ID}, list(nil))
	require.Equal(t, []int64{a.ID}, list(tricky), "every tag, byte for byte")
	require.Equal(t, []int64{a.ID}, list(map[string]string{"space": "v "}), "a trailing space is significant")
	require.Equal(t, []int64{b.ID}, list(map[string]string{"space": "v"}))
	require.Equal(t, []int64{a.ID, b.ID}, list(map[string]string{"empty": ""}), "the empty value matches a tag stored empty")
	require.Empty(t, list(map[string]string{"missing": ""}), "not a missing tag")
	require.Equal(t, []int64{a.ID}, list(map[string]string{`quo"te`: `back\slash`, "unicode é": "\u2028 <&> ☃"}))
	require.Empty(t, list(map[string]string{`quo"te`: `back\slash`, "space": "v"}), "all tags must match")
	require.Empty(t, list(map[string]string{"unicode é": "x"}), "keys are case-sensitive")
	require.Equal(t, []int64{d.ID}, list(map[string]string{"space": "V "}), "values are case-sensitive")
	_, err = s.ListWorkflows(ctx, storage.ListFilter{Tags: map[string]string{"": "x"}})
	require.ErrorIs(t, err, storage.ErrInvalid)

	// Spawned children keep their tags.
	l := claimed[0].Lease()
	res, err := s.SpawnBatch(ctx, l, storage.SpawnRequest{
		Branch: "b", Steps: []storage.Step{{Name: "b", State: storage.StepPending}},
		Children: []storage.NewWorkflow{{Name: "kid", Key: "1", Tags: map[string]string{"parent": "p"}}, {Name: "kid", Key: "2"}},
		Now:      at(time.Second),
	})
	require.NoError(t, err)
	kids, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: res.BranchStepID})
	require.NoError(t, err)
	require.Len(t, kids, 2)
	require.Equal(t, map[string]string{"parent": "p"}, kids[0].Tags)
	require.Nil(t, kids[1].Tags)
	kids, err = s.ListWorkflows(ctx, storage.ListFilter{Tags: map[string]string{"parent": "p"}})
	require.NoError(t, err)
	require.Len(t, kids, 1)
	require.Equal(t, "1", kids[0].Key)
}
