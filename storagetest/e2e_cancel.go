package storagetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// testE2EBranchCancelledChild: a cancelled child is final. It does not strand its parent's
// merge (the merge completes and BranchResults reports the child cancelled), and it fails a
// FailFast parent with an error that names it.
func testE2EBranchCancelledChild(t *testing.T, factory Factory) {
	parkedChild := sdk.New("e2e.child.parked", func(c *sdk.Context, n int) (int, error) {
		return n, sdk.ContinueIf(c, "never", func(context.Context) (bool, error) { return false, nil })
	})
	mk := func(name string, opts ...sdk.BranchOption) *sdk.Workflow[int, string] {
		return sdk.New(name, func(c *sdk.Context, _ int) (string, error) {
			if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
				if err := sdk.Spawn(b, "parked", parkedChild, 1); err != nil {
					return err
				}
				return sdk.Spawn(b, "square", e2eSquare, 3)
			}, append(opts, sdk.ProbeInterval(2*time.Millisecond, 10*time.Millisecond))...); err != nil {
				return "", err
			}
			if err := sdk.Merge(c, "b"); err != nil {
				return "", err
			}
			states := ""
			for res, err := range sdk.BranchResults[int](c, "b", 0) {
				if err != nil {
					return "", err
				}
				states += string(res.State) + " "
			}
			return states, nil
		})
	}
	lenient, strict := mk("e2e.cancel.lenient"), mk("e2e.cancel.strict", sdk.FailFast())
	store := factory(t)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(lenient, strict, parkedChild, e2eSquare))
	require.NoError(t, err)
	startWorkers(t, eng, 1, dispatch8()...)
	ctx := resultCtx(t)
	hl, err := lenient.Start(ctx, eng, "lenient", 0)
	require.NoError(t, err)
	hs, err := strict.Start(ctx, eng, "strict", 0)
	require.NoError(t, err)
	for _, h := range []*sdk.Handle[string]{hl, hs} {
		require.Eventually(t, func() bool {
			w, err := eng.Get(ctx, h.ID())
			return err == nil && w.Wait.Kind == "merge"
		}, e2eTimeout, time.Millisecond, "%s waits on its merge", h.Name())
	}
	for _, key := range []string{"lenient$b$parked", "strict$b$parked"} {
		var kid storage.Workflow
		require.Eventually(t, func() bool {
			kid, err = store.FindWorkflow(ctx, parkedChild.Name(), key)
			return err == nil && kid.Wait.Kind == "signal"
		}, e2eTimeout, time.Millisecond)
		require.NoError(t, eng.Cancel(ctx, kid.ID))
	}

	out, err := hl.Result(ctx)
	require.NoError(t, err, "a cancelled child must not strand its parent")
	require.Equal(t, "cancelled completed ", out, "BranchResults shows the cancelled child")
	_, err = hs.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed, "a cancelled child fails a FailFast parent")
	require.ErrorContains(t, err, `child "strict$b$parked"`)
}

// cancelCounter counts the bulk cancels a Cancel makes.
type cancelCounter struct {
	storage.Storage
	bulk atomic.Int64
}

func (c *cancelCounter) CancelChildren(ctx context.Context, r storage.CancelChildrenRequest) (storage.CancelChildrenResult, error) {
	c.bulk.Add(1)
	return c.Storage.CancelChildren(ctx, r)
}

// testE2ECancelTree: Cancel WithChildren of a parent whose children have children of their
// own, while workers run the tree, cancels every unfinished child and grandchild (some of
// them in the middle of a step, which stops at once), in one bulk call per level, and leaves
// the grandchildren that had completed as they were.
func testE2ECancelTree(t *testing.T, factory Factory) {
	const mids, waiting = 6, 4
	var entered, after atomic.Int32
	never := sdk.New("e2e.tree.leaf", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.ContinueIf(c, "never", func(context.Context) (bool, error) { return false, nil })
	})
	busy := sdk.New("e2e.tree.busy", func(c *sdk.Context, _ int) (int, error) {
		_, err := sdk.Step(c, "block", func(ctx context.Context) (int, error) {
			entered.Add(1)
			<-ctx.Done()
			return 0, ctx.Err()
		})
		if err != nil {
			return 0, err
		}
		after.Add(1)
		return 1, nil
	})
	mid := sdk.New("e2e.tree.mid", func(c *sdk.Context, i int) (int, error) {
		if err := sdk.Branch(c, "leaves", func(b *sdk.BranchScope) error {
			if err := sdk.SpawnEach(b, "wait", sdk.SliceSource(make([]int, waiting)), func(int) (sdk.Child, error) { return sdk.NewChild(never, 0), nil }); err != nil {
				return err
			}
			if err := sdk.Spawn(b, "busy", busy, 0); err != nil {
				return err
			}
			return sdk.Spawn(b, "quick", e2eSquare, i)
		}); err != nil {
			return 0, err
		}
		return 0, sdk.Merge(c, "leaves")
	})
	root := sdk.New("e2e.tree.root", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "mids", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource(make([]int, mids)), func(int) (sdk.Child, error) { return sdk.NewChild(mid, 0), nil })
		}); err != nil {
			return 0, err
		}
		return 0, sdk.Merge(c, "mids")
	})
	count := &cancelCounter{Storage: factory(t)}
	eng, err := sdk.NewEngine(count, sdk.WithWorkflows(root, mid, never, busy, e2eSquare))
	require.NoError(t, err)
	startWorkers(t, eng, 1, dispatch8()...)
	ctx := resultCtx(t)
	h, err := root.Start(ctx, eng, "r", 0)
	require.NoError(t, err)

	states := func(name string) map[storage.State]int {
		out := map[storage.State]int{}
		for after := int64(0); ; {
			page, err := count.ListWorkflows(ctx, storage.ListFilter{Name: name, AfterID: after, Limit: storage.MaxClaim})
			require.NoError(t, err)
			if len(page) == 0 {
				return out
			}
			for _, w := range page {
				out[w.State]++
			}
			after = page[len(page)-1].ID
		}
	}
	require.Eventually(t, func() bool {
		return states(never.Name())[storage.StateIdle] == mids*waiting && states(e2eSquare.Name())[storage.StateCompleted] == mids &&
			entered.Load() == mids && states(mid.Name())[storage.StateIdle] == mids
	}, e2eTimeout, time.Millisecond, "the tree is built: every leaf waits or completed, every busy leaf is in its step")

	require.NoError(t, h.Cancel(ctx, sdk.WithChildren()))
	require.Equal(t, int64(2), count.bulk.Load(), "one bulk call for the children, one for the grandchildren")
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrCancelled)
	require.Equal(t, map[storage.State]int{storage.StateCancelled: mids}, states(mid.Name()), "every child cancelled")
	require.Equal(t, map[storage.State]int{storage.StateCancelled: mids * waiting}, states(never.Name()), "every waiting grandchild cancelled")
	require.Equal(t, map[storage.State]int{storage.StateCompleted: mids}, states(e2eSquare.Name()), "completed grandchildren are left alone")
	require.Eventually(t, func() bool {
		return states(busy.Name())[storage.StateCancelled] == mids
	}, e2eTimeout, time.Millisecond, "every busy grandchild cancelled")
	for i := range mids {
		hb, err := busy.Lookup(ctx, eng, fmt.Sprintf("r$mids$each$$%d$leaves$busy", i))
		require.NoError(t, err)
		_, err = hb.Result(ctx)
		require.ErrorIs(t, err, sdk.ErrCancelled)
	}
	require.Zero(t, after.Load(), "a busy grandchild's run stopped in its step")
}
