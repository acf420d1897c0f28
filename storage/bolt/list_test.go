package bolt

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// listFixture applies the same workflows, claims, finishes, cancels and spawns to s: names
// a and b, keys under several prefixes, some tags, every non-stalled state, and the children
// of two branch steps. It returns the two branch step IDs.
func listFixture(t *testing.T, s storage.Storage) (int64, int64) {
	t.Helper()
	ctx := context.Background()
	prefixes := []string{"ord-", "ord-1", "Ord-", "x", "ü"}
	for i := range 40 {
		w := storage.NewWorkflow{Name: []string{"a", "b"}[i%2], Key: fmt.Sprint(prefixes[i%5], i), Now: base, RunAt: at(time.Duration(i) * time.Minute)}
		if i%3 == 0 {
			w.Tags = map[string]string{"tier": "gold"}
		}
		_, created, err := s.CreateWorkflow(ctx, w)
		require.NoError(t, err)
		require.True(t, created)
	}
	claimed, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 12, TTL: time.Hour, Now: at(time.Hour)})
	require.NoError(t, err)
	require.Len(t, claimed, 12)
	for i, w := range claimed[:6] {
		st := []storage.State{storage.StateCompleted, storage.StateFailed}[i%2]
		require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: at(time.Hour)}, State: st}))
	}
	require.NoError(t, s.Cancel(ctx, 20, at(time.Hour))) // idle: the claims took IDs 1..12
	parent := claimed[11].Lease()
	var steps []int64
	for _, b := range []string{"p", "q"} {
		for i := range 3 { // interleave the branches' children
			res, err := s.SpawnBatch(ctx, parent, storage.SpawnRequest{Branch: b, Steps: []storage.Step{{Name: b, State: storage.StepPending}},
				Children: children("child", b+fmt.Sprint(i), 0, 4), Now: at(time.Hour)})
			require.NoError(t, err)
			if i == 0 {
				steps = append(steps, res.BranchStepID)
			}
		}
	}
	kids, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 5, Names: []string{"child"}, TTL: time.Hour, Now: at(2 * time.Hour)})
	require.NoError(t, err)
	for _, w := range kids[:3] {
		require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: at(2 * time.Hour)}, State: storage.StateCompleted}))
	}
	return steps[0], steps[1]
}

// TestListMatchesMemory: every mode of ListWorkflows (plain, by name, by state, by key
// prefix, by branch step, with tags and due times) pages the same as the reference memory
// store, ascending and descending, with AfterID, BeforeID or both; and a descending walk
// page by page meets every row once, newest first.
func TestListMatchesMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, m := newStore(t), memory.New(memory.WithClock(func() time.Time { return base }))
	t.Cleanup(func() { _ = m.Close() })
	p, q := listFixture(t, b)
	mp, mq := listFixture(t, m)
	require.Equal(t, []int64{p, q}, []int64{mp, mq}, "the same step IDs in both stores")

	idle, running, completed, failed, cancelled := storage.StateIdle, storage.StateRunning, storage.StateCompleted, storage.StateFailed, storage.StateCancelled
	filters := map[string]storage.ListFilter{
		"plain":           {},
		"name":            {Name: "a"},
		"state":           {States: []storage.State{idle}},
		"states":          {States: []storage.State{failed, running, cancelled, completed}},
		"name and states": {Name: "b", States: []storage.State{idle, completed}},
		"prefix":          {Name: "a", KeyPrefix: "ord-"},
		"prefix longer":   {Name: "b", KeyPrefix: "ord-1"},
		"prefix ü":        {Name: "a", KeyPrefix: "ü"},
		"prefix none":     {Name: "a", KeyPrefix: "zzz"},
		"prefix states":   {Name: "a", KeyPrefix: "ord-", States: []storage.State{idle}},
		"branch":          {ParentStepID: p},
		"branch states":   {ParentStepID: q, States: []storage.State{completed, running}},
		"branch prefix":   {ParentStepID: p, Name: "child", KeyPrefix: "p1"},
		"tags":            {Tags: map[string]string{"tier": "gold"}},
		"not names":       {NotNames: []string{"a"}},
		"due":             {DueBy: at(30 * time.Minute)},
	}
	bounds := []struct{ after, before int64 }{{0, 0}, {7, 0}, {0, 30}, {5, 33}, {20, 21}, {21, 20}, {0, 1}, {50, 0}}
	for name, f := range filters {
		for _, desc := range []bool{false, true} {
			for _, bd := range bounds {
				for _, limit := range []int{0, 3} {
					g := f
					g.Desc, g.AfterID, g.BeforeID, g.Limit = desc, bd.after, bd.before, limit
					want, err := m.ListWorkflows(ctx, g)
					require.NoError(t, err)
					got, err := b.ListWorkflows(ctx, g)
					require.NoError(t, err)
					require.Equal(t, ids(want), ids(got), "%s: %+v", name, g)
				}
			}
		}
		// Newest first, page by page, then oldest first: the same rows, reversed.
		asc := listAll(t, b, f)
		var desc []int64
		g := f
		g.Desc, g.Limit = true, 4
		for {
			page, err := b.ListWorkflows(ctx, g)
			require.NoError(t, err)
			if len(page) == 0 {
				break
			}
			desc = append(desc, ids(page)...)
			g.BeforeID = page[len(page)-1].ID
		}
		require.Len(t, desc, len(asc), name)
		for i, id := range desc {
			require.Equal(t, asc[len(asc)-1-i].ID, id, "%s: row %d newest first", name, i)
		}
	}
}

// TestListKeyPrefixReadsOnlyMatchingKeys: a key prefix costs the keys that match it, not
// the workflows of the name: 3 matching keys among 2,000 of the name are 3 keys read.
func TestListKeyPrefixReadsOnlyMatchingKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	for i := range 2000 {
		key := fmt.Sprint("bulk-", i)
		if i%700 == 0 {
			key = fmt.Sprint("rare-", i)
		}
		_, _, err := s.CreateWorkflows(ctx, []storage.NewWorkflow{{Name: "n", Key: key, Now: base}})
		require.NoError(t, err)
	}
	create(t, s, "n2", "rare-x", base) // another name's key with the prefix
	before := s.stats.prefixKeys.Load()
	got, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "n", KeyPrefix: "rare-", Desc: true})
	require.NoError(t, err)
	require.Equal(t, []string{"rare-1400", "rare-700", "rare-0"}, keysOf(got))
	require.Equal(t, int64(3), s.stats.prefixKeys.Load()-before)
}

func keysOf(ws []storage.Workflow) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.Key)
	}
	return out
}

// TestPrefixEnd: the first key after every key with the prefix, and none past 0xff bytes.
func TestPrefixEnd(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ prefix, want []byte }{
		{nil, nil},
		{[]byte{0xff, 0xff}, nil},
		{[]byte("ab\x00"), []byte("ab\x01")},
		{[]byte{1, 0xff}, []byte{2}},
		{[]byte{1, 0xfe, 0xff}, []byte{1, 0xff}},
	} {
		require.Equal(t, c.want, prefixEnd(c.prefix), "%x", c.prefix)
	}
	p := []byte{1, 0xff}
	prefixEnd(p)
	require.Equal(t, []byte{1, 0xff}, p, "prefixEnd leaves its argument alone")
}
