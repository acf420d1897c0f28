package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// parked is a child that waits for a signal forever, so a test can cancel it while it waits.
var parked = sdk.New("child.parked", func(c *sdk.Context, in int) (int, error) {
	return in, sdk.ContinueIf(c, "never", func(context.Context) (bool, error) { return false, nil })
})

// twoChildren spawns a "parked" child and a "double" child in branch "b" and merges it,
// reporting the children's states and errors as BranchResults sees them.
func twoChildren(name string, seen map[string]error, opts ...sdk.BranchOption) *sdk.Workflow[int, int] {
	return sdk.New(name, func(c *sdk.Context, _ int) (int, error) {
		err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			if err := sdk.Spawn(b, "parked", parked, 1); err != nil {
				return err
			}
			return sdk.Spawn(b, "double", double, 2)
		}, opts...)
		if err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return 0, err
		}
		done := 0
		for res, err := range sdk.BranchResults[int](c, "b", 0) {
			if err != nil {
				return 0, err
			}
			seen[string(res.State)] = res.Err
			if res.State == sdk.StateCompleted {
				done++
			}
		}
		return done, nil
	})
}

func TestCancelledChildDoesNotStrandItsParent(t *testing.T) {
	t.Parallel()
	seen := map[string]error{}
	parent := twoChildren("cancel.parent", seen)
	e := newEnv(t, sdk.WithWorkflows(parent, parked, double))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.drain()
	require.Equal(t, storage.WaitMerge, e.state(h.ID()).Wait.Kind, "the parent waits on its children")

	child, err := parked.Lookup(ctx, e.eng, "p$b$parked")
	require.NoError(t, err)
	require.NoError(t, child.Cancel(ctx))
	require.ErrorIs(t, child.Retry(ctx), sdk.ErrWrongState, "a cancelled child is final: it cannot be retried")

	e.drain() // the clock stands still: the cancel itself woke the parent, not its probe
	out, err := h.Result(ctx)
	require.NoError(t, err, "a cancelled child is final and does not block the merge")
	require.Equal(t, 1, out)
	require.NoError(t, seen["completed"])
	require.ErrorIs(t, seen["cancelled"], sdk.ErrCancelled, "BranchResults shows the child as cancelled")
}

func TestCancelledChildFailsAFailFastParentNamingIt(t *testing.T) {
	t.Parallel()
	parent := twoChildren("cancel.ff", map[string]error{}, sdk.FailFast())
	e := newEnv(t, sdk.WithWorkflows(parent, parked, double))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.drain()
	child, err := parked.Lookup(ctx, e.eng, "p$b$parked")
	require.NoError(t, err)
	require.NoError(t, child.Cancel(ctx))

	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.ErrorContains(t, err, `child "p$b$parked"`, "the error names the child")
	require.ErrorContains(t, err, "cancelled")
	recs := e.errors(h.ID())
	require.Len(t, recs, 1, "the fail-fast error is stored once")
	require.Equal(t, "merge$b", recs[0].Step)
}

func TestFailFastErrorNamesTheFailedChildAndIsStoredOnce(t *testing.T) {
	t.Parallel()
	failing := sdk.New("child.no", func(c *sdk.Context, in int) (int, error) {
		return 0, sdk.Permanent(errors.New("card declined"))
	})
	parent := sdk.New("ff.parent", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "pay", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "charge", failing, 1) }, sdk.FailFast()); err != nil {
			return 0, err
		}
		return 0, sdk.Merge(c, "pay")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, failing))
	h, err := parent.Start(ctx, e.eng, "order-1", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	for _, want := range []string{`child "order-1$pay$charge"`, `"child.no"`, `branch "pay"`, "card declined"} {
		require.ErrorContains(t, err, want)
	}
	require.Len(t, e.errors(h.ID()), 1, "one error record, not one per layer")
}

func TestMergeNamesCollapseAndAJoinedBranchIsDone(t *testing.T) {
	t.Parallel()
	mk := func(name string, merges func(c *sdk.Context) error) *sdk.Workflow[int, int] {
		return sdk.New(name, func(c *sdk.Context, _ int) (int, error) {
			for _, br := range []string{"a", "b"} {
				if err := sdk.Branch(c, br, func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", double, 1) }); err != nil {
					return 0, err
				}
			}
			if err := merges(c); err != nil {
				return 0, err
			}
			return 1, nil
		})
	}
	dup := mk("merge.dup", func(c *sdk.Context) error { return sdk.Merge(c, "a", "a", "b") })
	again := mk("merge.again", func(c *sdk.Context) error {
		if err := sdk.Merge(c, "a"); err != nil {
			return err
		}
		if err := sdk.Merge(c, "a", "b"); err != nil {
			return err
		}
		return sdk.Merge(c) // all: nothing left
	})
	e := newEnv(t, sdk.WithWorkflows(dup, again, double))
	for _, wf := range []*sdk.Workflow[int, int]{dup, again} {
		h, err := wf.Start(ctx, e.eng, wf.Name(), 0) // keys of their own: their children's keys differ
		require.NoError(t, err)
		e.settle(h.ID(), time.Second)
		out, err := h.Result(ctx)
		require.NoError(t, err, wf.Name())
		require.Equal(t, 1, out)
	}
}

func TestInvalidProbeIntervalIsRejectedNamingTheOption(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]sdk.BranchOption{
		"probe.inverted": sdk.ProbeInterval(10*time.Second, 5*time.Second),
		"probe.zero":     sdk.ProbeInterval(0, time.Second),
		"probe.timeout":  sdk.MergeTimeout(-time.Second),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			wf := sdk.New(name, func(c *sdk.Context, _ int) (int, error) {
				if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", double, 1) }, opt); err != nil {
					return 0, err
				}
				return 1, sdk.Merge(c, "b")
			})
			e := newEnv(t, sdk.WithWorkflows(wf, double))
			h, err := wf.Start(ctx, e.eng, "p", 0)
			require.NoError(t, err)
			require.Equal(t, 1, e.drain(), "fails in its first run, spawning nothing")
			w, steps, err := e.store.Load(ctx, h.ID())
			require.NoError(t, err)
			require.Equal(t, storage.StateFailed, w.State)
			require.Contains(t, w.LastError, "invalid input")
			if name == "probe.timeout" {
				require.Contains(t, w.LastError, "MergeTimeout")
			} else {
				require.Contains(t, w.LastError, "ProbeInterval")
			}
			require.Empty(t, steps, "nothing was spawned")
		})
	}
}

func TestUnmergedBranchErrorSaysHowToFixIt(t *testing.T) {
	t.Parallel()
	wf := sdk.New("unmerged.msg", func(c *sdk.Context, _ int) (int, error) {
		return 1, sdk.Branch(c, "thumbs", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", double, 1) })
	})
	e := newEnv(t, sdk.WithWorkflows(wf, double))
	h, err := wf.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.ErrorContains(t, err, `sdk.Merge(c, "thumbs")`)
	require.ErrorContains(t, err, "sdk.AutoMerge()")
}

// listCounter counts ListWorkflows calls, the reads of children's results.
type listCounter struct {
	storage.Storage
	lists atomic.Int64
}

func (c *listCounter) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	c.lists.Add(1)
	return c.Storage.ListWorkflows(ctx, f)
}

// TestFoldResultsReadsTheChildrenOnceHoweverOftenTheParentReplays: the parent folds its
// children's outputs and then sleeps three times (three more replays). The children are read
// ⌈N/page⌉ times (plus the empty last page), once, at 20 and at 200 children.
func TestFoldResultsReadsTheChildrenOnceHoweverOftenTheParentReplays(t *testing.T) {
	t.Parallel()
	for _, n := range []int{20, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			items := make([]int, n)
			for i := range items {
				items[i] = i
			}
			parent := sdk.New("fold.parent", func(c *sdk.Context, _ int) (int, error) {
				if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
					return sdk.SpawnEach(b, "each", sdk.SliceSource(items), func(i int) (sdk.Child, error) { return sdk.NewChild(double, i), nil })
				}); err != nil {
					return 0, err
				}
				if err := sdk.Merge(c, "b"); err != nil {
					return 0, err
				}
				sum, err := sdk.FoldResults(c, "sum", "b", 0, func(acc int, res sdk.ChildResult[int]) (int, error) {
					return acc + res.Output, res.Err
				}, 10)
				if err != nil {
					return 0, err
				}
				for _, nap := range []string{"one", "two", "three"} {
					if err := sdk.Sleep(c, nap, time.Minute); err != nil {
						return 0, err
					}
				}
				return sum, nil
			})
			e := newEnv(t, sdk.WithWorkflows(parent, double))
			lc := &listCounter{Storage: e.count}
			eng, err := sdk.NewEngine(lc, sdk.WithWorkflows(parent, double), sdk.WithClock(e.clock))
			require.NoError(t, err)
			e.eng = eng
			h, err := parent.Start(ctx, eng, "p", 0)
			require.NoError(t, err)
			e.settle(h.ID(), time.Minute)
			out, err := h.Result(ctx)
			require.NoError(t, err)
			require.Equal(t, n*(n-1), out, "twice the sum of 0..n-1")
			require.GreaterOrEqual(t, e.count.loadsOf(h.ID()), 5, "the parent replayed after the fold")
			require.Equal(t, int64(n/10+1), lc.lists.Load(), "children read once: ⌈N/page⌉ pages and the empty last one")
		})
	}
}

func TestFoldResultsOfAnUnmergedBranchFails(t *testing.T) {
	t.Parallel()
	wf := sdk.New("fold.unmerged", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", double, 1) }, sdk.AutoMerge()); err != nil {
			return 0, err
		}
		return sdk.FoldResults(c, "sum", "b", 0, func(acc int, res sdk.ChildResult[int]) (int, error) { return acc + res.Output, nil }, 0)
	})
	e := newEnv(t, sdk.WithWorkflows(wf, double))
	h, err := wf.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.ErrorContains(t, err, "call sdk.Merge first")
}

// TestResumedMergeCountsItsChildrenOnce: the probe that finds the children done is the last
// count; the replay it triggers does not count them again.
func TestResumedMergeCountsItsChildrenOnce(t *testing.T) {
	t.Parallel()
	parent := sdk.New("merge.once", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource([]int{1, 2, 3}), func(i int) (sdk.Child, error) { return sdk.NewChild(double, i), nil })
		}); err != nil {
			return 0, err
		}
		return 1, sdk.Merge(c, "b")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, double))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.drain() // the parent spawns and parks on its merge (one count); the children complete
	require.Equal(t, storage.WaitMerge, e.state(h.ID()).Wait.Kind)
	before := e.count.counts.Load()
	e.clock.Advance(time.Minute)
	e.drain()
	_, err = h.Result(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, e.count.counts.Load()-before, "the probe counts; the replay after it does not")
}

// TestCancelWithChildrenCompletesAnInterruptedCancel: the parent was cancelled but its
// children were not (a cancel without WithChildren, or one interrupted after the parent);
// cancelling it again WithChildren goes on with the children instead of refusing.
func TestCancelWithChildrenCompletesAnInterruptedCancel(t *testing.T) {
	t.Parallel()
	parent := sdk.New("cancel.again", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "parked", parked, 1) }); err != nil {
			return 0, err
		}
		return 1, sdk.Merge(c, "b")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, parked))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.drain()
	require.NoError(t, h.Cancel(ctx))
	child, err := parked.Lookup(ctx, e.eng, "p$b$parked")
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, e.state(child.ID()).State, "a plain cancel leaves the children")

	require.ErrorIs(t, h.Cancel(ctx), sdk.ErrWrongState, "a plain cancel of a cancelled workflow is refused")
	require.NoError(t, h.Cancel(ctx, sdk.WithChildren()), "WithChildren carries on with the children")
	require.Equal(t, storage.StateCancelled, e.state(child.ID()).State)
}
