package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// double is the child used by most branch tests.
var double = sdk.New("child.double", func(c *sdk.Context, in int) (int, error) {
	return sdk.Step(c, "double", func(context.Context) (int, error) { return 2 * in, nil })
})

// keyedRows is a keyset source over rows "r0000".."rNNNN" that counts how often each row is read.
type keyedRows struct {
	mu      sync.Mutex
	n       int
	reads   map[string]int
	fetches int
	failAt  int // fail the fetch with this index once (1-based); 0 never
}

func (k *keyedRows) source() sdk.Source[string] {
	return sdk.KeysetSource(func(_ context.Context, after string, limit int) ([]string, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.fetches++
		if k.fetches == k.failAt {
			return nil, errors.New("source database went away")
		}
		var out []string
		for i := range k.n {
			key := fmt.Sprintf("r%04d", i)
			if key > after && len(out) < limit {
				out = append(out, key)
				k.reads[key]++
			}
		}
		return out, nil
	}, func(s string) string { return s })
}

func fanOut(name string, rows *keyedRows, batch int, opts ...sdk.BranchOption) *sdk.Workflow[int, int] {
	return sdk.New(name, func(c *sdk.Context, _ int) (int, error) {
		err := sdk.Branch(c, "fan", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "rows", rows.source(), func(row string) (sdk.Child, error) {
				var n int
				_, err := fmt.Sscanf(row, "r%d", &n)
				return sdk.NewChild(double, n), err
			}, sdk.BatchSize(batch))
		}, opts...)
		if err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "fan"); err != nil {
			return 0, err
		}
		sum := 0
		for res, err := range sdk.BranchResults[int](c, "fan", 7) {
			if err != nil {
				return 0, err
			}
			sum += res.Output
		}
		return sum, nil
	})
}

func TestSpawnEachMergeAndResults(t *testing.T) {
	t.Parallel()
	rows := &keyedRows{n: 50, reads: map[string]int{}}
	parent := fanOut("fan.parent", rows, 8)
	e := newEnv(t, sdk.WithWorkflows(parent, double))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2*(49*50/2), out)
	require.EqualValues(t, 7, e.count.spawns.Load(), "ceil(50/8) spawn transactions")
	for k, n := range rows.reads {
		require.Equal(t, 1, n, "row %s read more than once", k)
	}
	kids, err := e.store.ListWorkflows(ctx, storage.ListFilter{Name: "child.double", Limit: 1000})
	require.NoError(t, err)
	require.Len(t, kids, 50)
	require.Equal(t, "p$fan$rows$$r0000", kids[0].Key)
	require.NotZero(t, kids[0].ParentStepID)
}

func TestParentIsNotReplayedPerProbe(t *testing.T) {
	t.Parallel()
	slow := sdk.New("child.slow", func(c *sdk.Context, in int) (int, error) {
		if err := sdk.Sleep(c, "work", time.Duration(in)*time.Second); err != nil {
			return 0, err
		}
		return in, nil
	})
	parent := sdk.New("slow.parent", func(c *sdk.Context, n int) (int, error) {
		items := make([]int, n)
		for i := range items {
			items[i] = i + 1
		}
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource(items), func(i int) (sdk.Child, error) { return sdk.NewChild(slow, i), nil }, sdk.BatchSize(16))
		}, sdk.ProbeInterval(time.Second, 4*time.Second)); err != nil {
			return 0, err
		}
		return n, sdk.Merge(c, "b")
	})
	for _, n := range []int{20, 200} {
		e := newEnv(t, sdk.WithWorkflows(parent, slow))
		h, err := parent.Start(ctx, e.eng, "p", n)
		require.NoError(t, err)
		e.settle(h.ID(), time.Second)
		_, err = h.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 2, e.count.loadsOf(h.ID()), "n=%d: the parent replays once to spawn and once when merged, however long the children take", n)
		require.Greater(t, e.count.counts.Load(), int64(3), "n=%d: the merge was probed while the children ran", n)
	}
}

func TestSealedBranchNeverCallsItsSourceAgain(t *testing.T) {
	t.Parallel()
	rows := &keyedRows{n: 10, reads: map[string]int{}}
	parent := sdk.New("sealed", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "fan", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "rows", rows.source(), func(string) (sdk.Child, error) { return sdk.NewChild(double, 1), nil })
		}); err != nil {
			return 0, err
		}
		for i := range 3 { // replays after the branch was sealed
			if err := sdk.Sleep(c, fmt.Sprint("nap", i), time.Minute); err != nil {
				return 0, err
			}
		}
		return 0, sdk.Merge(c, "fan")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, double))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Minute)
	require.Equal(t, 1, rows.fetches, "one short page ends the source, in the first run only")
	require.GreaterOrEqual(t, e.count.loadsOf(h.ID()), 4)
}

func TestSpawnResumesFromItsCursorAfterAFailure(t *testing.T) {
	t.Parallel()
	const n, batch = 100, 16
	for failAt := 1; failAt <= 8; failAt++ {
		rows := &keyedRows{n: n, reads: map[string]int{}, failAt: failAt}
		parent := fanOut("resume", rows, batch)
		e := newEnv(t, sdk.WithWorkflows(parent, double), sdk.WithWorkflowRetry(sdk.Policy{MaxAttempts: 3, Base: time.Second, Cap: time.Second}))
		h, err := parent.Start(ctx, e.eng, "p", 0)
		require.NoError(t, err)
		e.settle(h.ID(), time.Second)
		out, err := h.Result(ctx)
		require.NoError(t, err, "failAt=%d", failAt)
		require.Equal(t, n*(n-1), out)
		kids, err := e.store.ListWorkflows(ctx, storage.ListFilter{Name: "child.double", Limit: 1000})
		require.NoError(t, err)
		require.Len(t, kids, n, "failAt=%d: exactly one child per item", failAt)
		for k, c := range rows.reads {
			require.Equal(t, 1, c, "failAt=%d: row %s read twice: the resume did not start at the cursor", failAt, k)
		}
		require.Len(t, rows.reads, n)
	}
}

func TestUnmergedBranchFailsTheWorkflow(t *testing.T) {
	t.Parallel()
	parent := sdk.New("forgot.merge", func(c *sdk.Context, _ int) (int, error) {
		return 1, sdk.Branch(c, "lonely", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", double, 1) })
	})
	e := newEnv(t, sdk.WithWorkflows(parent, double))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.Contains(t, err.Error(), `"lonely"`)
	require.Contains(t, err.Error(), "neither merged nor auto-merged")
}

func TestMergeOfABranchNeverOpenedFails(t *testing.T) {
	t.Parallel()
	parent := sdk.New("merge.unknown", func(c *sdk.Context, _ int) (int, error) { return 1, sdk.Merge(c, "ghost") })
	e := newEnv(t, sdk.WithWorkflows(parent))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.Contains(t, err.Error(), `"ghost", which was never opened`)
}

func TestBranchesDoNotNest(t *testing.T) {
	t.Parallel()
	parent := sdk.New("nested", func(c *sdk.Context, _ int) (int, error) {
		return 1, sdk.Branch(c, "outer", func(b *sdk.BranchScope) error {
			return sdk.Branch(c, "inner", func(*sdk.BranchScope) error { return nil })
		})
	})
	e := newEnv(t, sdk.WithWorkflows(parent))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.ErrorContains(t, err, "do not nest")
}

func TestAutoMergeRunsLaterStepsWhileChildrenRun(t *testing.T) {
	t.Parallel()
	var order []string
	child := sdk.New("child.log", func(c *sdk.Context, in string) (string, error) {
		return sdk.Step(c, "log", func(context.Context) (string, error) { order = append(order, in); return in, nil })
	})
	parent := sdk.New("auto", func(c *sdk.Context, _ int) (string, error) {
		if err := sdk.Branch(c, "kids", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource([]string{"a", "b", "c"}), func(s string) (sdk.Child, error) { return sdk.NewChild(child, s), nil })
		}, sdk.AutoMerge()); err != nil {
			return "", err
		}
		return sdk.Step(c, "after", func(context.Context) (string, error) { order = append(order, "parent-after"); return "done", nil })
	})
	e := newEnv(t, sdk.WithWorkflows(parent, child))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	// The parent runs first (claimed before its children exist), reaches the step after the
	// branch, and then waits at the completion gate.
	claimed, err := e.store.Claim(ctx, storage.ClaimRequest{Owner: "t", Limit: 1, Names: e.eng.Names(), TTL: time.Minute, Now: e.clock.Now()})
	require.NoError(t, err)
	require.NoError(t, e.eng.Execute(ctx, claimed[0]))
	require.Equal(t, []string{"parent-after"}, order)
	require.Equal(t, storage.StateIdle, e.state(h.ID()).State, "not complete while its children run")
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "done", out)
	require.ElementsMatch(t, []string{"parent-after", "a", "b", "c"}, order)
	require.Equal(t, "parent-after", order[0], "the step after the branch ran before the children")
}

func TestStalledChildParksTheParentUntilRetried(t *testing.T) {
	t.Parallel()
	broken := true
	child := sdk.New("child.flaky", func(c *sdk.Context, in int) (int, error) {
		return sdk.Step(c, "work", func(context.Context) (int, error) {
			if broken && in == 3 {
				return 0, sdk.Permanent(errors.New("bad item"))
			}
			return in, nil
		})
	})
	parent := sdk.New("parked", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource([]int{1, 2, 3, 4}), func(i int) (sdk.Child, error) { return sdk.NewChild(child, i), nil })
		}); err != nil {
			return 0, err
		}
		return 10, sdk.Merge(c, "b")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, child))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	for range 20 {
		e.drain()
		e.clock.Advance(time.Second)
	}
	require.Equal(t, storage.StateIdle, e.state(h.ID()).State, "a stalled child keeps the parent waiting")
	require.Equal(t, storage.WaitMerge, e.state(h.ID()).Wait.Kind)

	stuck, err := e.store.FindWorkflow(ctx, "child.flaky", "p$b$each$$2")
	require.NoError(t, err)
	require.Equal(t, storage.StateStalled, stuck.State)
	broken = false
	require.NoError(t, e.eng.Retry(ctx, stuck.ID))
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 10, out)
}

func TestFailFastAndMergeTimeout(t *testing.T) {
	t.Parallel()
	failing := sdk.New("child.fails", func(c *sdk.Context, in int) (int, error) {
		return 0, sdk.Permanent(errors.New("no"))
	})
	waiting := sdk.New("child.waits", func(c *sdk.Context, in int) (int, error) {
		return 0, sdk.ContinueIf(c, "never", func(context.Context) (bool, error) { return false, nil })
	})
	mk := func(name string, wf *sdk.Workflow[int, int], opt sdk.BranchOption) *sdk.Workflow[int, int] {
		return sdk.New(name, func(c *sdk.Context, _ int) (int, error) {
			if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error { return sdk.Spawn(b, "one", wf, 1) }, opt); err != nil {
				return 0, err
			}
			return 1, sdk.Merge(c, "b")
		})
	}
	ff := mk("ff", failing, sdk.FailFast())
	to := mk("to", waiting, sdk.MergeTimeout(time.Minute))
	e := newEnv(t, sdk.WithWorkflows(ff, to, failing, waiting))
	h1, err := ff.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	h2, err := to.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h1.ID(), time.Second)
	e.settle(h2.ID(), 10*time.Second)
	_, err = h1.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.ErrorContains(t, err, "branch child failed")
	_, err = h2.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrStalled)
	require.ErrorContains(t, err, "merge timed out")

	// A retry gives the merge a fresh deadline: it waits again instead of stalling at once.
	require.NoError(t, h2.Retry(ctx))
	e.drain()
	w := e.state(h2.ID())
	require.Equal(t, storage.StateIdle, w.State)
	require.Equal(t, storage.WaitMerge, w.Wait.Kind)
}

func TestSpawnKeysAndMixedChildTypes(t *testing.T) {
	t.Parallel()
	upper := sdk.New("child.upper", func(c *sdk.Context, in string) (string, error) { return in + "!", nil })
	parent := sdk.New("mixed", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			if err := sdk.Spawn(b, "solo", upper, "x"); err != nil {
				return err
			}
			return sdk.SpawnEach(b, "pos", sdk.SliceSource([]int{5, 6}), func(i int) (sdk.Child, error) {
				if i == 5 {
					return sdk.NewChild(double, i), nil
				}
				return sdk.NewChild(upper, "six"), nil
			})
		}); err != nil {
			return 0, err
		}
		return 0, sdk.Merge(c)
	})
	e := newEnv(t, sdk.WithWorkflows(parent, double, upper))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	_, err = h.Result(ctx)
	require.NoError(t, err)
	for key, name := range map[string]string{"p$b$solo": "child.upper", "p$b$pos$$0": "child.double", "p$b$pos$$1": "child.upper"} {
		w, err := e.store.FindWorkflow(ctx, name, key)
		require.NoError(t, err, key)
		require.Equal(t, storage.StateCompleted, w.State)
	}
}

func TestCancelWithChildren(t *testing.T) {
	t.Parallel()
	waiting := sdk.New("child.waiting", func(c *sdk.Context, in int) (int, error) {
		return 0, sdk.ContinueIf(c, "never", func(context.Context) (bool, error) { return false, nil })
	})
	parent := sdk.New("cancel.tree", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource([]int{1, 2, 3, 4, 5}), func(i int) (sdk.Child, error) { return sdk.NewChild(waiting, i), nil })
		}); err != nil {
			return 0, err
		}
		return 0, sdk.Merge(c, "b")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, waiting))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.drain()
	require.NoError(t, h.Cancel(ctx, sdk.WithChildren()))
	kids, err := e.store.ListWorkflows(ctx, storage.ListFilter{Name: "child.waiting"})
	require.NoError(t, err)
	require.Len(t, kids, 5)
	for _, k := range kids {
		require.Equal(t, storage.StateCancelled, k.State, k.Key)
	}
	require.Equal(t, storage.StateCancelled, e.state(h.ID()).State)
}

func TestSeqSourceIsStoppedWhenARunEndsMidSource(t *testing.T) {
	t.Parallel()
	// goleak (TestMain) fails the package if an iterator goroutine is left running.
	stopped := make(chan struct{}, 10)
	parent := sdk.New("seq.abort", func(c *sdk.Context, _ int) (int, error) {
		seq := func(yield func(int) bool) {
			defer func() { stopped <- struct{}{} }()
			for i := 0; ; i++ {
				if !yield(i) {
					return
				}
			}
		}
		err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "inf", sdk.SeqSource(seq), func(i int) (sdk.Child, error) {
				if i == 5 {
					return sdk.Child{}, errors.New("bad item")
				}
				return sdk.NewChild(double, i), nil
			}, sdk.BatchSize(4))
		})
		return 0, err
	})
	e := newEnv(t, sdk.WithWorkflows(parent, double))
	_, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.drain()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the iterator was not stopped")
	}
}
