package dispatch

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

// gatedFanOut returns a parent that spawns n children and merges them with the default probe
// interval, and the child, whose step waits for gate to close.
func gatedFanOut(gate <-chan struct{}) (parent *sdk.Workflow[int, int], child *sdk.Workflow[int, int]) {
	child = sdk.New("mw.child", func(c *sdk.Context, in int) (int, error) {
		return sdk.Step(c, "work", func(ctx context.Context) (int, error) {
			select {
			case <-gate:
				return in, nil
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		})
	})
	parent = sdk.New("mw.parent", func(c *sdk.Context, n int) (int, error) {
		items := make([]int, n)
		for i := range items {
			items[i] = i
		}
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource(items), func(i int) (sdk.Child, error) { return sdk.NewChild(child, i), nil })
		}); err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return 0, err
		}
		return n, nil
	})
	return parent, child
}

// parkedOnMerge waits until the workflow is idle on its merge wait.
func parkedOnMerge(t *testing.T, store storage.Storage, id int64) {
	t.Helper()
	eventually(t, func() bool {
		w := stored(t, store, id)
		return w.State == storage.StateIdle && w.Wait.Kind == storage.WaitMerge
	}, "the parent parks on its merge")
}

// TestParentResumesAfterItsLastChildWithoutItsProbe: the clock never moves, so the parent's
// merge probe (500 ms after it parked, by default) never comes due; the worker that finishes
// the last child wakes the parent, which completes, at 1 child and at 300.
func TestParentResumesAfterItsLastChildWithoutItsProbe(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			store := openStore(t)
			clock := newClock()
			gate := make(chan struct{})
			parent, child := gatedFanOut(gate)
			eng := newEngine(t, store, clock, parent, child)
			w := newWorker(t, eng)
			r := run(t, w)
			h, err := parent.Start(bg, eng, "p", n)
			require.NoError(t, err)
			parkedOnMerge(t, store, h.ID())
			before := clock.Now()
			require.True(t, stored(t, store, h.ID()).RunAt.After(before), "the probe is due later")

			close(gate)
			require.Equal(t, n, result(t, h))
			require.Equal(t, before, clock.Now(), "no time had to pass")
			require.NoError(t, r.stop(t))
			require.GreaterOrEqual(t, w.Stats().MergeWakes, int64(1))
			require.Zero(t, w.Stats().MergeWakeErrors)
		})
	}
}

// wakeFaults fails the first fail WakeMergeWaiters calls, like a database blip.
type wakeFaults struct {
	storage.Storage
	fail, calls atomic.Int64
}

func (s *wakeFaults) WakeMergeWaiters(ctx context.Context, r storage.MergeWakeRequest) (int, error) {
	s.calls.Add(1)
	if s.fail.Add(-1) >= 0 {
		return 0, errDatabaseDown
	}
	return s.Storage.WakeMergeWaiters(ctx, r)
}

// TestMergeWakeErrorsAreCountedAndRetried: a failed wake is logged, counted and tried again
// at the next flush; the worker goes on, and the parent still resumes without its probe.
func TestMergeWakeErrorsAreCountedAndRetried(t *testing.T) {
	t.Parallel()
	store := &wakeFaults{Storage: openStore(t)}
	store.fail.Store(2)
	clock := newClock()
	gate := make(chan struct{})
	parent, child := gatedFanOut(gate)
	eng := newEngine(t, store, clock, parent, child)
	w := newWorker(t, eng, MergeWakeEvery(time.Millisecond))
	r := run(t, w)
	h, err := parent.Start(bg, eng, "p", 1)
	require.NoError(t, err)
	parkedOnMerge(t, store, h.ID())
	before := clock.Now()
	close(gate)
	require.Equal(t, 1, result(t, h))
	require.Equal(t, before, clock.Now(), "no time had to pass")
	require.NoError(t, r.stop(t))
	require.EqualValues(t, 2, w.Stats().MergeWakeErrors, "both failures counted")
	require.EqualValues(t, 1, w.Stats().MergeWakes)
	require.EqualValues(t, 3, store.calls.Load(), "two failed flushes, then the one that woke the parent")
}

func TestMergeWakeEveryMustBePositive(t *testing.T) {
	t.Parallel()
	wf := sdk.New("noop", func(*sdk.Context, int) (int, error) { return 0, nil })
	eng := newEngine(t, openStore(t), newClock(), wf)
	for _, d := range []time.Duration{0, -time.Millisecond} {
		_, err := New(eng, MergeWakeEvery(d))
		require.ErrorIs(t, err, storage.ErrInvalid)
		require.Contains(t, err.Error(), "MergeWakeEvery")
	}
	w, err := New(eng)
	require.NoError(t, err)
	require.Equal(t, DefaultMergeWakeEvery, w.cfg.mergeWakeEvery)
}

// TestCallOfAFailingChildResumesWithoutItsProbe: the clock never moves, so the parent's
// merge probe never comes due; the worker that ends the child failed wakes the Call's
// parent, which gets the child's failure as its error at once.
func TestCallOfAFailingChildResumesWithoutItsProbe(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	child := sdk.New("mw.call.child", func(c *sdk.Context, in int) (int, error) {
		return 0, sdk.Permanent(fmt.Errorf("declined %d", in))
	}, sdk.WithRetry(sdk.NoRetry))
	parent := sdk.New("mw.call.parent", func(c *sdk.Context, in int) (string, error) {
		_, err := sdk.Call(c, "charge", child, in)
		if errors.Is(err, sdk.ErrFailed) {
			return "compensated: " + err.Error(), nil
		}
		return "", err
	})
	eng := newEngine(t, store, clock, parent, child)
	run(t, newWorker(t, eng))
	h, err := parent.Start(bg, eng, "p", 7)
	require.NoError(t, err)
	out := result(t, h)
	require.Contains(t, out, "declined 7")
}
