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
	"github.com/chronoforge/chronoforge/storage/memory"
)

// slowFinisher is a memory store whose final writes take a while, so that runs ending
// together find one in flight, and which counts them.
type slowFinisher struct {
	*memory.Store
	singles, groups, grouped atomic.Int64
}

func (s *slowFinisher) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	s.singles.Add(1)
	time.Sleep(2 * time.Millisecond)
	return s.Store.FinishRun(ctx, l, f)
}

func (s *slowFinisher) FinishRuns(ctx context.Context, ends []storage.RunEnd) ([]error, error) {
	s.groups.Add(1)
	s.grouped.Add(int64(len(ends)))
	time.Sleep(2 * time.Millisecond)
	return s.Store.FinishRuns(ctx, ends)
}

// groupEnv is an engine straight over s (no counting wrapper, which would hide
// storage.GroupFinisher) with a fake clock.
func groupEnv(t *testing.T, s *slowFinisher, opts ...sdk.Option) *sdk.Engine {
	t.Helper()
	t.Cleanup(func() { _ = s.Close() })
	eng, err := sdk.NewEngine(s, append([]sdk.Option{sdk.WithClock(sdk.NewFakeClock(t0)), sdk.WithLogger(quietLogger())}, opts...)...)
	require.NoError(t, err)
	return eng
}

// runAll claims every due workflow and runs them all at once.
func runAll(t *testing.T, eng *sdk.Engine, n int) {
	t.Helper()
	claimed, err := eng.Store().Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: n, Names: eng.Names(), TTL: time.Minute, Now: eng.Clock().Now()})
	require.NoError(t, err)
	require.Len(t, claimed, n)
	var wg sync.WaitGroup
	for _, w := range claimed {
		wg.Go(func() { require.NoError(t, eng.Execute(ctx, w)) })
	}
	wg.Wait()
}

func TestGroupCommitWritesRunsThatEndTogetherInOneCall(t *testing.T) {
	t.Parallel()
	wf := sdk.New("grouped", func(c *sdk.Context, in int) (int, error) {
		return sdk.Step(c, "s", func(context.Context) (int, error) { return in + 1, nil })
	})
	store := &slowFinisher{Store: memory.New()}
	eng := groupEnv(t, store, sdk.WithWorkflows(wf))
	const n = 40
	var hs []*sdk.Handle[int]
	for i := range n {
		h, err := wf.Start(ctx, eng, fmt.Sprint(i), i)
		require.NoError(t, err)
		hs = append(hs, h)
	}
	runAll(t, eng, n)
	for i, h := range hs {
		out, err := h.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, i+1, out)
	}
	writes := store.singles.Load() + store.groups.Load()
	require.EqualValues(t, n, store.singles.Load()+store.grouped.Load(), "every run's final write, once")
	require.Positive(t, store.groups.Load(), "runs that ended while a write was in flight were grouped")
	require.Less(t, writes, int64(n/2), "%d calls for %d runs", writes, n)
	t.Logf("%d runs ended with %d calls (%d alone, %d groups)", n, writes, store.singles.Load(), store.groups.Load())
}

func TestGroupCommitLeavesALoneRunOneFinishRun(t *testing.T) {
	t.Parallel()
	wf := sdk.New("alone", func(c *sdk.Context, in int) (int, error) { return in, nil })
	for _, opts := range [][]sdk.Option{nil, {sdk.WithoutGroupCommit()}} {
		store := &slowFinisher{Store: memory.New()}
		eng := groupEnv(t, store, append([]sdk.Option{sdk.WithWorkflows(wf)}, opts...)...)
		for i := range 3 {
			_, err := wf.Start(ctx, eng, fmt.Sprint(i), i)
			require.NoError(t, err)
			runAll(t, eng, 1) // one run after another
		}
		require.EqualValues(t, 3, store.singles.Load(), "each run alone: one FinishRun each")
		require.Zero(t, store.groups.Load())
	}
}

func TestWithoutGroupCommitNeverGroups(t *testing.T) {
	t.Parallel()
	wf := sdk.New("ungrouped", func(c *sdk.Context, in int) (int, error) { return in, nil })
	store := &slowFinisher{Store: memory.New()}
	eng := groupEnv(t, store, sdk.WithWorkflows(wf), sdk.WithoutGroupCommit())
	const n = 16
	for i := range n {
		_, err := wf.Start(ctx, eng, fmt.Sprint(i), i)
		require.NoError(t, err)
	}
	runAll(t, eng, n)
	require.EqualValues(t, n, store.singles.Load())
	require.Zero(t, store.groups.Load())
}
