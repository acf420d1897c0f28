package storagetest

import (
	"context"
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
