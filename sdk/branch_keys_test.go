package sdk_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// keysOf is a keyset source over fixed pages: fetch number i returns pages[i] (nothing once
// they run out), whatever the cursor, so a test can hand SpawnEach keys out of order.
func keysOf(pages ...[]string) sdk.Source[string] {
	i := 0
	return sdk.KeysetSource(func(_ context.Context, _ string, _ int) ([]string, error) {
		if i >= len(pages) {
			return nil, nil
		}
		i++
		return pages[i-1], nil
	}, func(s string) string { return s })
}

// childrenNamed lists every workflow of that name, keyed by key.
func childrenNamed(t *testing.T, e *env, name string) map[string]storage.Workflow {
	t.Helper()
	kids, err := e.store.ListWorkflows(ctx, storage.ListFilter{Name: name, Limit: 1000})
	require.NoError(t, err)
	out := map[string]storage.Workflow{}
	for _, k := range kids {
		out[k.Key] = k
	}
	return out
}

// TestSpawnAndSpawnEachKeysDoNotCollide: SpawnEach "n" over two items and Spawn "n_0" in one
// branch make three children, each with its own input. (SpawnEach's item 0 was keyed
// "<parent>$b$n_0", the key of Spawn "n_0": one child was created and the other's input
// dropped without a word.)
func TestSpawnAndSpawnEachKeysDoNotCollide(t *testing.T) {
	t.Parallel()
	parent := sdk.New("keys.parent", func(c *sdk.Context, _ int) ([]int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			if err := sdk.SpawnEach(b, "n", sdk.SliceSource([]int{10, 20}), func(i int) (sdk.Child, error) { return sdk.NewChild(double, i), nil }); err != nil {
				return err
			}
			return sdk.Spawn(b, "n_0", double, 30)
		}); err != nil {
			return nil, err
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return nil, err
		}
		var out []int
		for res, err := range sdk.BranchResults[int](c, "b", 10) {
			if err != nil {
				return nil, err
			}
			out = append(out, res.Output)
		}
		sort.Ints(out)
		return out, nil
	})
	e := newEnv(t, sdk.WithWorkflows(parent, double))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{20, 40, 60}, out, "three children, each doubling its own input")
	kids := childrenNamed(t, e, "child.double")
	require.Len(t, kids, 3)
	for key, in := range map[string]string{"p$b$n$$0": "10", "p$b$n$$1": "20", "p$b$n_0": "30"} {
		require.Contains(t, kids, key)
		require.Equal(t, in, string(kids[key].Input), "input of %s", key)
	}
}

// TestBadItemKeyFailsTheWorkflowAtOnce: a keyed item whose key contains '$' (or is otherwise
// not a valid item key) fails the workflow in its first run, with an error naming the item
// key and the spawn; nothing of that batch is written, though the batch before it stays.
func TestBadItemKeyFailsTheWorkflowAtOnce(t *testing.T) {
	t.Parallel()
	long := string(slices.Repeat([]byte("k"), storage.MaxKeyLen-len("p$b$n$$")+1)) // a valid key, one byte too long as an item
	for _, tc := range []struct{ name, bad, want string }{
		{"dollar", "x$sub$gc", `"x$sub$gc"`},
		{"control character", "x\ny", `"x\ny"`},
		{"too long for the child key", long, fmt.Sprintf("%.32q", long)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			parent := sdk.New("itemkey.parent", func(c *sdk.Context, _ int) (int, error) {
				if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
					return sdk.SpawnEach(b, "n", keysOf([]string{"a", "b"}, []string{"c", tc.bad}), func(s string) (sdk.Child, error) { return sdk.NewChild(double, len(s)), nil }, sdk.BatchSize(2))
				}); err != nil {
					return 0, err
				}
				return 1, sdk.Merge(c, "b")
			})
			e := newEnv(t, sdk.WithWorkflows(parent, double))
			h, err := parent.Start(ctx, e.eng, "p", 0)
			require.NoError(t, err)
			e.drain()
			require.Equal(t, storage.StateFailed, e.state(h.ID()).State)
			_, err = h.Result(ctx)
			require.ErrorIs(t, err, sdk.ErrFailed)
			require.ErrorContains(t, err, tc.want, "the error names the item key")
			require.ErrorContains(t, err, `spawn "n"`)
			require.Equal(t, 1, e.count.loadsOf(h.ID()), "failed in its first run, not retried")
			kids := childrenNamed(t, e, "child.double")
			require.Len(t, kids, 2, "the first batch stays, nothing of the bad one is written")
			require.Contains(t, kids, "p$b$n$$a")
			require.Contains(t, kids, "p$b$n$$b")
		})
	}
}

// TestKeysetOutOfOrderFailsAtOnce: a keyset page whose keys do not strictly increase (after
// the cursor, or within the page) is a bug no retry cures: the workflow fails in its first
// run with an error naming both keys, the branch and the spawn, and nothing of that batch
// is written. (It used to be retried by the workflow policy for minutes.)
func TestKeysetOutOfOrderFailsAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		second     []string
		later, was string
	}{
		{"before the cursor", []string{"a0", "c"}, "a0", "b"},
		{"repeating the cursor", []string{"b", "c"}, "b", "b"},
		{"within the page", []string{"d", "c"}, "c", "d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			parent := sdk.New("order.parent", func(c *sdk.Context, _ int) (int, error) {
				if err := sdk.Branch(c, "fan", func(b *sdk.BranchScope) error {
					return sdk.SpawnEach(b, "rows", keysOf([]string{"a", "b"}, tc.second), func(s string) (sdk.Child, error) { return sdk.NewChild(double, 1), nil }, sdk.BatchSize(2))
				}); err != nil {
					return 0, err
				}
				return 1, sdk.Merge(c, "fan")
			})
			e := newEnv(t, sdk.WithWorkflows(parent, double))
			h, err := parent.Start(ctx, e.eng, "p", 0)
			require.NoError(t, err)
			e.drain()
			require.Equal(t, storage.StateFailed, e.state(h.ID()).State)
			_, err = h.Result(ctx)
			require.ErrorIs(t, err, sdk.ErrFailed)
			require.ErrorContains(t, err, fmt.Sprintf("%q follows %q", tc.later, tc.was))
			require.ErrorContains(t, err, `branch "fan" spawn "rows"`)
			require.Equal(t, 1, e.count.loadsOf(h.ID()), "failed in its first run, not retried")
			require.Len(t, childrenNamed(t, e, "child.double"), 2, "only the first batch is written")
		})
	}
}

// leaf is a grandchild: it returns its input.
var leaf = sdk.New("keys.leaf", func(c *sdk.Context, in int) (int, error) { return in, nil })

// nested is a child that spawns one grandchild (Spawn "gc" in branch "sub"), merges, and
// returns how many children it merged over.
var nested = sdk.New("keys.nested", func(c *sdk.Context, _ int) (int, error) {
	if err := sdk.Branch(c, "sub", func(b *sdk.BranchScope) error {
		return sdk.Spawn(b, "gc", leaf, 0)
	}); err != nil {
		return 0, err
	}
	if err := sdk.Merge(c, "sub"); err != nil {
		return 0, err
	}
	n := 0
	for _, err := range sdk.BranchResults[int](c, "sub", 10) {
		if err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
})

// grandparent spawns a nested child per keyed item, merges, and returns what each merged.
func grandparent(name string, keys []string, opts ...sdk.BranchOption) *sdk.Workflow[int, []int] {
	return sdk.New(name, func(c *sdk.Context, _ int) ([]int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "n", keysOf(keys), func(string) (sdk.Child, error) { return sdk.NewChild(nested, 1), nil })
		}, opts...); err != nil {
			return nil, err
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return nil, err
		}
		var out []int
		for res, err := range sdk.BranchResults[int](c, "b", 10) {
			if err != nil {
				return nil, err
			}
			out = append(out, res.Output)
		}
		return out, nil
	})
}

// TestGrandchildKeysDoNotCollide: an item key "x$sub$gc" would have keyed its child like the
// grandchild of item "x" ("<p>$b$n_x$sub$gc"), so that grandchild was never created and its
// parent merged over zero children. Now such an item key fails the workflow, and with valid
// keys every child merges over its own grandchild; a grandchild whose key a root workflow
// holds fails its parent with ErrConflict, never a merge over zero children.
func TestGrandchildKeysDoNotCollide(t *testing.T) {
	t.Parallel()
	bad := grandparent("gp.bad", []string{"x", "x$sub$gc"})
	good := grandparent("gp.good", []string{"x", "y"})
	taken := grandparent("gp.taken", []string{"x", "y"}, sdk.FailFast())
	e := newEnv(t, sdk.WithWorkflows(bad, good, taken, nested, leaf))

	hb, err := bad.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(hb.ID(), time.Second)
	_, err = hb.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.ErrorContains(t, err, `"x$sub$gc"`)

	hg, err := good.Start(ctx, e.eng, "q", 0)
	require.NoError(t, err)
	e.settle(hg.ID(), time.Second)
	out, err := hg.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{1, 1}, out, "each child merged over its one grandchild")
	kids, leaves := childrenNamed(t, e, "keys.nested"), childrenNamed(t, e, "keys.leaf")
	for _, key := range []string{"q$b$n$$x", "q$b$n$$y"} {
		require.Equal(t, storage.StateCompleted, kids[key].State, key)
		require.Equal(t, storage.StateCompleted, leaves[key+"$sub$gc"].State, key+"$sub$gc")
	}

	// A root holds the key y's grandchild would get.
	root, _, err := e.store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "keys.leaf", Key: "r$b$n$$y$sub$gc", Input: []byte("0"), RunAt: e.clock.Now().Add(time.Hour), Now: e.clock.Now()})
	require.NoError(t, err)
	ht, err := taken.Start(ctx, e.eng, "r", 0)
	require.NoError(t, err)
	e.settle(ht.ID(), time.Second)
	_, err = ht.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed, "a child failed, so the fail-fast parent fails")
	kids = childrenNamed(t, e, "keys.nested")
	y := kids["r$b$n$$y"]
	require.Equal(t, storage.StateFailed, y.State, "y failed rather than merge over zero children")
	require.Contains(t, y.LastError, "child key held by another workflow")
	require.Contains(t, y.LastError, fmt.Sprintf("workflow %d, a root workflow", root.ID))
	require.Equal(t, storage.StateCompleted, kids["r$b$n$$x"].State)
	require.Zero(t, e.state(root.ID).ParentStepID, "the root is not adopted")
}

// TestSpawnIntoAnotherParentsKeyFails: two parents of different names share a key, so their
// Spawn "n" in branch "b" derive one child key. The second fails with ErrConflict naming the
// first's child and its own branch, rather than merging someone else's child.
func TestSpawnIntoAnotherParentsKeyFails(t *testing.T) {
	t.Parallel()
	mk := func(name string, in int) *sdk.Workflow[int, int] {
		return sdk.New(name, func(c *sdk.Context, _ int) (int, error) {
			if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "n", double, in) }); err != nil {
				return 0, err
			}
			if err := sdk.Merge(c, "b"); err != nil {
				return 0, err
			}
			sum := 0
			for res, err := range sdk.BranchResults[int](c, "b", 10) {
				if err != nil {
					return 0, err
				}
				sum += res.Output
			}
			return sum, nil
		})
	}
	first, second := mk("owner.first", 1), mk("owner.second", 100)
	e := newEnv(t, sdk.WithWorkflows(first, second, double))
	h1, err := first.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.settle(h1.ID(), time.Second)
	out, err := h1.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, out)
	child, err := e.store.FindWorkflow(ctx, "child.double", "k$b$n")
	require.NoError(t, err)

	h2, err := second.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.settle(h2.ID(), time.Second)
	_, err = h2.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed, "the second parent does not merge the first's child")
	for _, want := range []string{
		"child key held by another workflow",
		`"child.double" key "k$b$n"`,
		fmt.Sprintf("workflow %d, a child of step %d", child.ID, child.ParentStepID),
		`branch "b" spawn "n"`,
		fmt.Sprintf("of workflow %d", h2.ID()),
	} {
		require.ErrorContains(t, err, want)
	}
	require.Equal(t, 1, e.count.loadsOf(h2.ID()), "failed in its first run, not retried")
	after, err := e.store.GetWorkflow(ctx, child.ID)
	require.NoError(t, err)
	require.Equal(t, child.ParentStepID, after.ParentStepID, "the child stays its first parent's")
	require.Equal(t, "1", string(after.Input))
}
