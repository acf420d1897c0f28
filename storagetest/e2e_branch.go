package storagetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// branchCases prove the fan-out promises end to end on the backend.
func branchCases() []storageCase {
	return []storageCase{
		{"BranchSpawnCostAndSealedSource", testE2EBranchSpawnCost},
		{"BranchParentReplaysBounded", testE2EBranchReplaysBounded},
		{"BranchStalledChildParksParent", testE2EBranchStalledChild},
		{"BranchCancelledChildIsFinal", testE2EBranchCancelledChild},
		{"BranchCancelTreeWithChildren", testE2ECancelTree},
		{"BranchCursorResume", testE2EBranchCursorResume},
		{"BranchKeyConflictFailsParent", testE2EBranchKeyConflict},
		{"ChaosFailuresLoseNothing", testE2EChaos},
		{"BranchMergeWakeWithoutProbe", testE2EMergeWakeNoProbe},
	}
}

// branchCounter counts the units fan-out is judged by.
type branchCounter struct {
	storage.Storage
	spawns atomic.Int64
	probes atomic.Int64
	mu     sync.Mutex
	loads  map[int64]int
}

func (c *branchCounter) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	c.spawns.Add(1)
	return c.Storage.SpawnBatch(ctx, l, r)
}

func (c *branchCounter) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	c.probes.Add(1)
	return c.Storage.CountChildren(ctx, q)
}

func (c *branchCounter) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	c.ran(id)
	return c.Storage.Load(ctx, id)
}

// Claim counts a first claim (token 1) as a run of its own: the SDK runs it without a Load.
func (c *branchCounter) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	got, err := c.Storage.Claim(ctx, r)
	for _, w := range got {
		if w.LeaseToken == 1 {
			c.ran(w.ID)
		}
	}
	return got, err
}

func (c *branchCounter) ran(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loads == nil {
		c.loads = map[int64]int{}
	}
	c.loads[id]++
}

// loadsOf returns how many runs read workflow id: its Loads, and its first run, which starts
// from the claimed row.
func (c *branchCounter) loadsOf(id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loads[id]
}

var e2eSquare = sdk.New("e2e.square", func(c *sdk.Context, n int) (int, error) {
	return sdk.Step(c, "square", func(context.Context) (int, error) { return n * n, nil })
})

func testE2EBranchSpawnCost(t *testing.T, factory Factory) {
	const n, batch = 300, 64
	var fetches atomic.Int32
	reads := make([]atomic.Int32, n)
	rows := sdk.KeysetSource(func(_ context.Context, after string, limit int) ([]int, error) {
		fetches.Add(1)
		var out []int
		for i := 0; i < n && len(out) < limit; i++ {
			if fmt.Sprintf("%04d", i) > after {
				out = append(out, i)
				reads[i].Add(1)
			}
		}
		return out, nil
	}, func(i int) string { return fmt.Sprintf("%04d", i) })
	parent := sdk.New("e2e.fan.cost", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "rows", rows, func(i int) (sdk.Child, error) { return sdk.NewChild(e2eSquare, i), nil }, sdk.BatchSize(batch))
		}, sdk.ProbeInterval(5*time.Millisecond, 50*time.Millisecond)); err != nil {
			return 0, err
		}
		for i := range 3 { // replays after the seal
			if err := sdk.Sleep(c, fmt.Sprint("nap", i), 5*time.Millisecond); err != nil {
				return 0, err
			}
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return 0, err
		}
		sum := 0
		for res, err := range sdk.BranchResults[int](c, "b", 100) {
			if err != nil {
				return 0, err
			}
			sum += res.Output
		}
		return sum, nil
	})
	store := &branchCounter{Storage: factory(t)}
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(parent, e2eSquare))
	require.NoError(t, err)
	startWorkers(t, eng, 1, dispatch8()...)
	ctx := resultCtx(t)
	h, err := parent.Start(ctx, eng, "p", 0)
	require.NoError(t, err)
	sum, err := h.Result(ctx)
	require.NoError(t, err)
	want := 0
	for i := range n {
		want += i * i
		require.EqualValues(t, 1, reads[i].Load(), "item %d read more than once", i)
	}
	require.Equal(t, want, sum)
	require.EqualValues(t, (n+batch-1)/batch, store.spawns.Load(), "dispatch of N children costs ceil(N/B) spawn transactions")
	require.EqualValues(t, (n+batch-1)/batch, fetches.Load(), "a sealed branch never reads its source again")
	require.GreaterOrEqual(t, store.loadsOf(h.ID()), 4, "the parent did replay after the seal")
}

func testE2EBranchReplaysBounded(t *testing.T, factory Factory) {
	slow := sdk.New("e2e.slow", func(c *sdk.Context, ms int) (int, error) {
		if err := sdk.Sleep(c, "work", time.Duration(ms)*time.Millisecond); err != nil {
			return 0, err
		}
		return ms, nil
	})
	parent := sdk.New("e2e.fan.replays", func(c *sdk.Context, n int) (int, error) {
		items := make([]int, n)
		for i := range items {
			items[i] = 20 + i%20
		}
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource(items), func(ms int) (sdk.Child, error) { return sdk.NewChild(slow, ms), nil }, sdk.BatchSize(50))
		}, sdk.ProbeInterval(2*time.Millisecond, 10*time.Millisecond)); err != nil {
			return 0, err
		}
		return n, sdk.Merge(c, "b")
	})
	for _, n := range []int{20, 200} {
		store := &branchCounter{Storage: factory(t)}
		eng, err := sdk.NewEngine(store, sdk.WithWorkflows(parent, slow))
		require.NoError(t, err)
		ctx := resultCtx(t)
		workers := startWorkers(t, eng, 1, dispatch8()...)
		h, err := parent.Start(ctx, eng, "p", n)
		require.NoError(t, err)
		_, err = h.Result(ctx)
		require.NoError(t, err)
		require.LessOrEqual(t, store.loadsOf(h.ID()), 3, "n=%d: the parent replays a bounded number of times per merge, not once per probe", n)
		require.Greater(t, workers[0].Stats().Claimed, int64(n+3), "n=%d: the merge was probed while the children ran", n)
	}
}

func testE2EBranchStalledChild(t *testing.T, factory Factory) {
	var broken atomic.Bool
	broken.Store(true)
	child := sdk.New("e2e.child.flaky", func(c *sdk.Context, n int) (int, error) {
		return sdk.Step(c, "work", func(context.Context) (int, error) {
			if n == 2 && broken.Load() {
				return 0, sdk.Permanent(errors.New("bad item"))
			}
			return n, nil
		})
	})
	parent := sdk.New("e2e.fan.parked", func(c *sdk.Context, _ int) (string, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource([]int{0, 1, 2, 3}), func(i int) (sdk.Child, error) { return sdk.NewChild(child, i), nil })
		}, sdk.ProbeInterval(2*time.Millisecond, 10*time.Millisecond)); err != nil {
			return "", err
		}
		return "merged", sdk.Merge(c, "b")
	})
	store := &branchCounter{Storage: factory(t)}
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(parent, child))
	require.NoError(t, err)
	startWorkers(t, eng, 1, dispatch8()...)
	ctx := resultCtx(t)
	h, err := parent.Start(ctx, eng, "p", 0)
	require.NoError(t, err)

	var stuck storage.Workflow
	require.Eventually(t, func() bool {
		stuck, err = store.FindWorkflow(ctx, "e2e.child.flaky", "p$b$each$$2")
		return err == nil && stuck.State == storage.StateStalled
	}, e2eTimeout, 2*time.Millisecond)
	// The parent waits on its merge; several probes later it still does.
	require.Eventually(t, func() bool {
		w, err := eng.Get(ctx, h.ID())
		return err == nil && w.Wait.Kind == "merge"
	}, e2eTimeout, time.Millisecond)
	probes := store.probes.Load()
	require.Eventually(t, func() bool { return store.probes.Load() >= probes+3 }, e2eTimeout, time.Millisecond)
	w, err := eng.Get(ctx, h.ID())
	require.NoError(t, err)
	require.NotEqual(t, storage.StateCompleted, w.State, "a stalled child keeps the parent waiting")

	broken.Store(false)
	require.NoError(t, eng.Retry(ctx, stuck.ID))
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "merged", out)
}

// testE2EBranchCursorResume fails the source once at each page boundary in turn: the run
// fails, the workflow retries it, and SpawnEach resumes from the stored cursor. Every item is
// read once and becomes exactly one child.
func testE2EBranchCursorResume(t *testing.T, factory Factory) {
	const n, batch = 120, 16
	pages := (n + batch - 1) / batch
	for failAt := 1; failAt <= pages; failAt += 3 {
		var mu sync.Mutex
		fetches, reads := 0, map[int]int{}
		rows := sdk.KeysetSource(func(_ context.Context, after string, limit int) ([]int, error) {
			mu.Lock()
			defer mu.Unlock()
			fetches++
			if fetches == failAt {
				return nil, errors.New("source went away")
			}
			var out []int
			for i := 0; i < n && len(out) < limit; i++ {
				if fmt.Sprintf("%04d", i) > after {
					out = append(out, i)
					reads[i]++
				}
			}
			return out, nil
		}, func(i int) string { return fmt.Sprintf("%04d", i) })
		parent := sdk.New("e2e.fan.resume", func(c *sdk.Context, _ int) (int, error) {
			if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
				return sdk.SpawnEach(b, "rows", rows, func(i int) (sdk.Child, error) { return sdk.NewChild(e2eSquare, i), nil }, sdk.BatchSize(batch))
			}, sdk.ProbeInterval(2*time.Millisecond, 20*time.Millisecond)); err != nil {
				return 0, err
			}
			return n, sdk.Merge(c, "b")
		})
		store := factory(t)
		eng, err := sdk.NewEngine(store, sdk.WithWorkflows(parent, e2eSquare),
			sdk.WithWorkflowRetry(sdk.Policy{MaxAttempts: 5, Base: time.Millisecond, Cap: time.Millisecond}))
		require.NoError(t, err)
		startWorkers(t, eng, 1, dispatch8()...)
		ctx := resultCtx(t)
		h, err := parent.Start(ctx, eng, "p", 0)
		require.NoError(t, err)
		_, err = h.Result(ctx)
		require.NoError(t, err, "failAt=%d", failAt)
		kids, err := store.ListWorkflows(ctx, storage.ListFilter{Name: "e2e.square", Limit: 1000})
		require.NoError(t, err)
		require.Len(t, kids, n, "failAt=%d: exactly one child per item", failAt)
		mu.Lock()
		require.Len(t, reads, n, "failAt=%d: every item read", failAt)
		for i, c := range reads {
			require.Equal(t, 1, c, "failAt=%d: item %d read %d times: the resume did not start at the cursor", failAt, i, c)
		}
		mu.Unlock()
	}
}

// testE2EBranchKeyConflict: two parents of different names share a key, so their Spawn "n"
// in branch "b" derive one child key. The first parent completes over its child; the second
// fails at once with ErrConflict naming that child and its own branch, and neither merges
// the other's child nor retries.
func testE2EBranchKeyConflict(t *testing.T, factory Factory) {
	mk := func(name string, in int) *sdk.Workflow[int, int] {
		return sdk.New(name, func(c *sdk.Context, _ int) (int, error) {
			if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "n", e2eSquare, in) },
				sdk.ProbeInterval(2*time.Millisecond, 10*time.Millisecond)); err != nil {
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
	first, second := mk("e2e.owner.first", 3), mk("e2e.owner.second", 5)
	store := &branchCounter{Storage: factory(t)}
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(first, second, e2eSquare))
	require.NoError(t, err)
	startWorkers(t, eng, 1, dispatch8()...)
	ctx := resultCtx(t)
	h1, err := first.Start(ctx, eng, "k", 0)
	require.NoError(t, err)
	out, err := h1.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 9, out, "the first parent merged its own child")
	child, err := store.FindWorkflow(ctx, "e2e.square", "k$b$n")
	require.NoError(t, err)

	h2, err := second.Start(ctx, eng, "k", 0)
	require.NoError(t, err)
	_, err = h2.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed, "the second parent does not merge the first's child")
	for _, want := range []string{
		"child key held by another workflow",
		`"e2e.square" key "k$b$n"`,
		fmt.Sprintf("workflow %d, a child of step %d", child.ID, child.ParentStepID),
		`branch "b" spawn "n"`,
	} {
		require.ErrorContains(t, err, want)
	}
	require.Equal(t, 1, store.loadsOf(h2.ID()), "failed in its first run, not retried")
	got, err := store.GetWorkflow(ctx, child.ID)
	require.NoError(t, err)
	require.Equal(t, child.ParentStepID, got.ParentStepID, "the child stays its first parent's")
	requireBytes(t, child.Input, got.Input, "the child's input")
}
