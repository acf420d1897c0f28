package sdk_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// cancelCounter counts the storage calls a Cancel makes.
type cancelCounter struct {
	storage.Storage
	loads, cancels, gets, lists, bulk atomic.Int64
	mu                                sync.Mutex
	sizes                             []int // children cancelled by each CancelChildren call
}

func (c *cancelCounter) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	c.loads.Add(1)
	return c.Storage.Load(ctx, id)
}

func (c *cancelCounter) Cancel(ctx context.Context, id int64, now time.Time) error {
	c.cancels.Add(1)
	return c.Storage.Cancel(ctx, id, now)
}

func (c *cancelCounter) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	c.gets.Add(1)
	return c.Storage.GetWorkflow(ctx, id)
}

func (c *cancelCounter) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	c.lists.Add(1)
	return c.Storage.ListWorkflows(ctx, f)
}

func (c *cancelCounter) CancelChildren(ctx context.Context, r storage.CancelChildrenRequest) (storage.CancelChildrenResult, error) {
	c.bulk.Add(1)
	res, err := c.Storage.CancelChildren(ctx, r)
	c.mu.Lock()
	c.sizes = append(c.sizes, len(res.Cancelled))
	c.mu.Unlock()
	return res, err
}

// bulkCalls is how many CancelChildren calls cancel n children of one batch of branch steps
// with the given limit: a full call says more may be left, so the last is never full.
func bulkCalls(n, limit int) int { return n/limit + 1 }

// TestCancelWithChildrenCostsPerBatch: cancelling a tree of N children, some with children of
// their own, costs one Load of the parent, its Cancel, and per level ⌊N/limit⌋+1 bulk calls,
// never a call per child, at 30 and at 3,000 children; every child and grandchild ends
// cancelled.
func TestCancelWithChildrenCostsPerBatch(t *testing.T) {
	t.Parallel()
	const limit = 100
	for _, tc := range []struct {
		mids, withLeaves, leaves int // children; how many of them have a branch; children each
	}{
		{30, 3, 20},
		{3000, 30, 100},
	} {
		t.Run(fmt.Sprint(tc.mids), func(t *testing.T) {
			t.Parallel()
			never := func(c *sdk.Context, _ int) (int, error) {
				return 0, sdk.ContinueIf(c, "never", func(context.Context) (bool, error) { return false, nil })
			}
			leaf, mid := sdk.New("cc.leaf", never), sdk.New("cc.mid", never)
			branchy := sdk.New("cc.branchy", func(c *sdk.Context, _ int) (int, error) {
				if err := sdk.Branch(c, "leaves", func(b *sdk.BranchScope) error {
					return sdk.SpawnEach(b, "each", sdk.SliceSource(make([]int, tc.leaves)), func(int) (sdk.Child, error) { return sdk.NewChild(leaf, 0), nil })
				}); err != nil {
					return 0, err
				}
				return 0, sdk.Merge(c, "leaves")
			})
			items := make([]int, tc.mids)
			for i := range items {
				items[i] = i
			}
			root := sdk.New("cc.root", func(c *sdk.Context, _ int) (int, error) {
				if err := sdk.Branch(c, "mids", func(b *sdk.BranchScope) error {
					return sdk.SpawnEach(b, "each", sdk.SliceSource(items), func(i int) (sdk.Child, error) {
						// The first ones, so they lead the runnable index and bbolt's bounded
						// claim walk reaches them past the others.
						if i < tc.withLeaves {
							return sdk.NewChild(branchy, i), nil
						}
						return sdk.NewChild(mid, i), nil
					})
				}); err != nil {
					return 0, err
				}
				return 0, sdk.Merge(c, "mids")
			})
			e := newEnv(t, sdk.WithWorkflows(root, mid, branchy, leaf))
			h, err := root.Start(ctx, e.eng, "r", 0)
			require.NoError(t, err)
			// Only the root and the children with a branch run, to build the tree; the other
			// children and the grandchildren stay idle, as unfinished as running ones.
			for {
				claimed, err := e.store.Claim(ctx, storage.ClaimRequest{Owner: "build", Limit: 10, Names: []string{"cc.root", "cc.branchy"}, TTL: time.Minute, Now: e.clock.Now()})
				require.NoError(t, err)
				if len(claimed) == 0 {
					break
				}
				for _, wf := range claimed {
					require.NoError(t, e.eng.Execute(ctx, wf))
				}
			}
			var all []storage.Workflow
			for after := int64(0); ; {
				page, err := e.store.ListWorkflows(ctx, storage.ListFilter{Name: "cc.leaf", AfterID: after, Limit: storage.MaxClaim})
				require.NoError(t, err)
				if len(page) == 0 {
					break
				}
				all, after = append(all, page...), page[len(page)-1].ID
			}
			require.Equal(t, tc.withLeaves*tc.leaves, len(all), "the tree is built")

			// An operator's engine over the same store cancels the tree.
			count := &cancelCounter{Storage: e.store}
			op, err := sdk.NewEngine(count, sdk.WithClock(e.clock), sdk.WithLogger(e.eng.Logger()))
			require.NoError(t, err)
			sdk.SetCancelBatch(op, limit)
			require.NoError(t, op.Cancel(ctx, h.ID(), sdk.WithChildren()))

			want := bulkCalls(tc.mids, limit) + bulkCalls(tc.withLeaves*tc.leaves, limit)
			t.Logf("%d children and %d grandchildren, limit %d: %d CancelChildren calls (children per call %v), %d Load, %d Cancel, %d GetWorkflow, %d ListWorkflows",
				tc.mids, tc.withLeaves*tc.leaves, limit, count.bulk.Load(), count.sizes, count.loads.Load(), count.cancels.Load(), count.gets.Load(), count.lists.Load())
			require.Equal(t, int64(want), count.bulk.Load(), "⌊N/limit⌋+1 bulk calls per level")
			require.Equal(t, int64(1), count.loads.Load(), "one Load, of the parent")
			require.Equal(t, int64(1), count.cancels.Load(), "one Cancel, of the parent")
			require.Zero(t, count.lists.Load(), "no listing of children")
			require.LessOrEqual(t, count.gets.Load(), int64(1))

			for _, name := range []string{"cc.root", "cc.mid", "cc.branchy", "cc.leaf"} {
				n := 0
				for after := int64(0); ; {
					page, err := e.store.ListWorkflows(ctx, storage.ListFilter{Name: name, AfterID: after, Limit: storage.MaxClaim})
					require.NoError(t, err)
					if len(page) == 0 {
						break
					}
					for _, w := range page {
						require.Equal(t, storage.StateCancelled, w.State, "%s %q", name, w.Key)
					}
					n += len(page)
					after = page[len(page)-1].ID
				}
				require.NotZero(t, n, name)
			}
			require.Zero(t, e.drain(), "nothing of the tree runs again")
		})
	}
}

// TestCancelWithChildrenStopsChildRunsInProcess: a child whose run this engine has in
// progress is stopped at once when its parent is cancelled with its children, as Cancel
// stops one: its step's context is cancelled and nothing after it runs.
func TestCancelWithChildrenStopsChildRunsInProcess(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	var after atomic.Int64
	blocker := sdk.New("cc.blocker", func(c *sdk.Context, _ int) (int, error) {
		_, err := sdk.Step(c, "block", func(ctx context.Context) (int, error) {
			close(entered)
			<-ctx.Done()
			return 0, ctx.Err()
		})
		if err != nil {
			return 0, err
		}
		_, err = sdk.Step(c, "after", func(context.Context) (int, error) { after.Add(1); return 1, nil })
		return 1, err
	})
	parent := sdk.New("cc.blocking", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", blocker, 0) }); err != nil {
			return 0, err
		}
		return 0, sdk.Merge(c, "b")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, blocker))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	done := make(chan int)
	go func() { done <- e.drain() }()
	<-entered
	require.NoError(t, h.Cancel(ctx, sdk.WithChildren()))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the child's run did not stop after its parent was cancelled with its children")
	}
	require.Zero(t, after.Load())
	child, err := e.store.FindWorkflow(ctx, "cc.blocker", "p$b$one")
	require.NoError(t, err)
	require.Equal(t, storage.StateCancelled, child.State)
	require.Empty(t, e.errors(child.ID), "a cancelled step writes no failure")
}
