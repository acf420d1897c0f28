package sdk_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// wakeCounter counts WakeMergeWaiters calls and the step IDs they carried.
type wakeCounter struct {
	storage.Storage
	calls, ids atomic.Int64
}

func (w *wakeCounter) WakeMergeWaiters(ctx context.Context, r storage.MergeWakeRequest) (int, error) {
	w.calls.Add(1)
	w.ids.Add(int64(len(r.StepIDs)))
	return w.Storage.WakeMergeWaiters(ctx, r)
}

// runNamed claims and executes every workflow named name that is due now, once.
func (e *env) runNamed(name string) int {
	e.t.Helper()
	claimed, err := e.store.Claim(ctx, storage.ClaimRequest{Owner: "test", Limit: storage.MaxClaim, Names: []string{name}, TTL: time.Minute, Now: e.clock.Now()})
	require.NoError(e.t, err)
	for _, wf := range claimed {
		require.NoError(e.t, e.eng.Execute(ctx, wf))
	}
	return len(claimed)
}

// TestWakeMergesResumesParent: with the clock standing still, a parent parked on its merge
// is not due until its children are done and WakeMerges is called; then it is due at once and
// completes, its probe timer never having fired.
func TestWakeMergesResumesParent(t *testing.T) {
	t.Parallel()
	parent := sdk.New("wake.parent", func(c *sdk.Context, n int) (int, error) {
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "each", sdk.SliceSource(make([]int, n)), func(i int) (sdk.Child, error) { return sdk.NewChild(double, i), nil })
		}); err != nil {
			return 0, err
		}
		return n, sdk.Merge(c, "b")
	})
	e := newEnv(t, sdk.WithWorkflows(parent, double))
	h, err := parent.Start(ctx, e.eng, "p", 3)
	require.NoError(t, err)
	require.Equal(t, 1, e.runNamed("wake.parent"), "the parent spawns and parks")
	w := e.state(h.ID())
	require.Equal(t, storage.WaitMerge, w.Wait.Kind)
	require.True(t, w.RunAt.After(e.clock.Now()), "the probe is scheduled later: %v", w.RunAt)
	kids, err := e.store.ListWorkflows(ctx, storage.ListFilter{Name: "child.double"})
	require.NoError(t, err)
	require.Len(t, kids, 3)
	branch := kids[0].ParentStepID

	woken, err := e.eng.WakeMerges(ctx, []int64{branch})
	require.NoError(t, err)
	require.Zero(t, woken, "children not done: nothing to wake")

	changed := e.eng.Changed()
	require.Equal(t, 3, e.runNamed("child.double"))
	woken, err = e.eng.WakeMerges(ctx, []int64{branch, branch})
	require.NoError(t, err)
	require.Equal(t, 1, woken)
	select {
	case <-changed:
	default:
		t.Fatal("a wake tells the engine's workers")
	}
	require.Equal(t, e.clock.Now(), e.state(h.ID()).RunAt, "due now, not at the probe")
	require.Equal(t, 1, e.runNamed("wake.parent"))
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, out)
}

// TestWakeMergesChunks: step IDs beyond storage.MaxMergeWake go in several calls, each within
// the limit; no IDs make no call.
func TestWakeMergesChunks(t *testing.T) {
	t.Parallel()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "wake.db"), bolt.WithNoSync())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	wc := &wakeCounter{Storage: st}
	eng, err := sdk.NewEngine(wc, sdk.WithClock(sdk.NewFakeClock(t0)))
	require.NoError(t, err)

	n, err := eng.WakeMerges(ctx, nil)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Zero(t, wc.calls.Load(), "nothing to wake: no call")

	ids := make([]int64, 2*storage.MaxMergeWake+1)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	n, err = eng.WakeMerges(ctx, ids)
	require.NoError(t, err)
	require.Zero(t, n)
	require.EqualValues(t, 3, wc.calls.Load())
	require.EqualValues(t, len(ids), wc.ids.Load())

	_, err = eng.WakeMerges(ctx, []int64{1, 0})
	require.ErrorIs(t, err, storage.ErrInvalid)
}
