package memory

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// base is the tests' fixed request time.
var base = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a store clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newStore(t testing.TB, opts ...Option) *Store {
	s := New(opts...)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func create(t testing.TB, s *Store, name, key string, runAt time.Time) storage.Workflow {
	t.Helper()
	w, created, err := s.CreateWorkflow(context.Background(), storage.NewWorkflow{Name: name, Key: key, Input: []byte(`"in"`), RunAt: runAt, Now: base})
	require.NoError(t, err)
	require.True(t, created)
	return w
}

func claimOne(t testing.TB, s *Store, now time.Time, ttl time.Duration) storage.Workflow {
	t.Helper()
	got, err := s.Claim(context.Background(), storage.ClaimRequest{Owner: "w", Limit: 1, TTL: ttl, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 1)
	return got[0]
}

// TestCopiesNotAliased: the store keeps copies of what it is given and hands out copies of
// what it keeps, so changing either side's bytes afterwards changes nothing stored.
func TestCopiesNotAliased(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	input, trace := []byte(`"input"`), []byte(`{"t":1}`)
	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "copy", Key: "k", Input: input, TraceContext: trace, Now: base})
	require.NoError(t, err)
	input[1], trace[1] = 'X', 'X'
	w.Input[1], w.TraceContext[1] = 'Y', 'Y'

	c := claimOne(t, s, base, time.Minute)
	l := c.Lease()
	result, meta, values, errValues := []byte(`"result"`), []byte(`"meta"`), []byte(`{"v":1}`), []byte(`{"e":1}`)
	require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{
		Steps:  []storage.Step{{Name: "s", State: storage.StepCompleted, Result: result, Meta: meta}},
		Values: values,
		Errors: []storage.ErrorRecord{{Message: "boom", Values: errValues}},
		Now:    base,
	}))
	output, data := []byte(`"output"`), []byte(`{"d":1}`)
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{
		Commit: storage.Commit{Now: base}, State: storage.StateIdle, Output: output,
		Wait: storage.Wait{Kind: storage.WaitMerge, Step: "s", Data: data},
	}))
	for _, b := range [][]byte{result, meta, values, errValues, output, data} {
		b[1] = 'X'
	}

	// Scribble over everything read once, then read again.
	got, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	for _, b := range [][]byte{got.Input, got.TraceContext, got.Values, got.Output, got.Wait.Data, steps[0].Result, steps[0].Meta} {
		b[1] = 'Z'
	}
	errs, err := s.ListErrors(ctx, w.ID, 0)
	require.NoError(t, err)
	errs[0].Values[1] = 'Z'
	listed, err := s.ListWorkflows(ctx, storage.ListFilter{})
	require.NoError(t, err)
	listed[0].Input[1] = 'Z'

	got, steps, err = s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, `"input"`, string(got.Input))
	require.Equal(t, `{"t":1}`, string(got.TraceContext))
	require.Equal(t, `{"v":1}`, string(got.Values))
	require.Equal(t, `"output"`, string(got.Output))
	require.Equal(t, `{"d":1}`, string(got.Wait.Data))
	require.Equal(t, `"result"`, string(steps[0].Result))
	require.Equal(t, `"meta"`, string(steps[0].Meta))
	errs, err = s.ListErrors(ctx, w.ID, 0)
	require.NoError(t, err)
	require.Equal(t, `{"e":1}`, string(errs[0].Values))
}

// TestTimesUTCMicroseconds: times come back in UTC, cut to the microsecond, as the SQL
// backends keep them, whatever location and precision they were given in.
func TestTimesUTCMicroseconds(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	zone := time.FixedZone("UTC+5", 5*60*60)
	runAt := time.Date(2030, time.March, 4, 10, 11, 12, 123456789, zone)
	w, _, err := s.CreateWorkflow(context.Background(), storage.NewWorkflow{Name: "times", Key: "k", RunAt: runAt, Now: runAt})
	require.NoError(t, err)
	want := time.Date(2030, time.March, 4, 5, 11, 12, 123456000, time.UTC)
	for what, got := range map[string]time.Time{"run at": w.RunAt, "created at": w.CreatedAt, "updated at": w.UpdatedAt} {
		require.Equal(t, want, got, what) // Equal on the struct: same instant, location and no monotonic reading
	}
	c := claimOne(t, s, runAt, time.Minute)
	require.Equal(t, time.UTC, c.LeaseUntil.Location())
	require.Zero(t, c.LeaseUntil.Nanosecond()%1000, "lease until to the microsecond")
}

// TestClosed: after Close every method refuses with ErrClosed, listeners' channels are
// closed, and a second Close returns nil.
func TestClosed(t *testing.T) {
	t.Parallel()
	s := New()
	ctx := context.Background()
	w := create(t, s, "closing", "k", base)
	events, err := s.Listen(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	_, open := <-events
	require.False(t, open, "Close closes the listeners' channels")

	l := storage.Lease{WorkflowID: w.ID, Owner: "w", Token: 1}
	calls := map[string]error{}
	_, _, calls["CreateWorkflow"] = s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "closing", Key: "k2", Now: base})
	_, calls["GetWorkflow"] = s.GetWorkflow(ctx, w.ID)
	_, calls["FindWorkflow"] = s.FindWorkflow(ctx, "closing", "k")
	_, _, calls["Load"] = s.Load(ctx, w.ID)
	_, calls["Claim"] = s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base})
	calls["Heartbeat"] = s.Heartbeat(ctx, l, time.Minute, base)
	calls["SaveSteps"] = s.SaveSteps(ctx, l, storage.Commit{Now: base})
	calls["FinishRun"] = s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: base}, State: storage.StateCompleted})
	calls["Release"] = s.Release(ctx, l, base)
	_, calls["Wake"] = s.Wake(ctx, w.ID, base)
	_, calls["Retry"] = s.Retry(ctx, w.ID, storage.RetryRequest{Now: base})
	calls["Cancel"] = s.Cancel(ctx, w.ID, base)
	_, calls["SpawnBatch"] = s.SpawnBatch(ctx, l, storage.SpawnRequest{Branch: "b", Now: base})
	_, calls["CountChildren"] = s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{1}, States: []storage.State{storage.StateIdle}, Cap: 1})
	_, calls["WakeMergeWaiters"] = s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{1}, States: []storage.State{storage.StateIdle}, At: base})
	_, calls["ListWorkflows"] = s.ListWorkflows(ctx, storage.ListFilter{})
	_, calls["ListErrors"] = s.ListErrors(ctx, w.ID, 0)
	_, calls["DeleteFinished"] = s.DeleteFinished(ctx, storage.CleanupRequest{Before: base})
	_, calls["Listen"] = s.Listen(ctx)
	for method, err := range calls {
		require.ErrorIs(t, err, storage.ErrClosed, method)
	}
	require.NoError(t, s.Close(), "a second Close")
}

// TestCancelledContext: a call with a cancelled context returns the context's error and
// writes nothing.
func TestCancelledContext(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "ctx", Key: "k", Now: base})
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.FindWorkflow(context.Background(), "ctx", "k")
	require.ErrorIs(t, err, storage.ErrNotFound, "a cancelled create stored a workflow")

	w := create(t, s, "ctx", "k", base)
	_, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base})
	require.ErrorIs(t, err, context.Canceled)
	got, err := s.GetWorkflow(context.Background(), w.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, got.State, "a cancelled claim leased a workflow")
}

// TestWithClock: leases expire by the store's clock, which WithClock lets a test move: no
// sleeping, and no request's Now revives a lease.
func TestWithClock(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2020, time.June, 1, 0, 0, 0, 0, time.UTC)}
	s := newStore(t, WithClock(clock.Now))
	ctx := context.Background()
	w := create(t, s, "clocked", "k", base)
	c := claimOne(t, s, base, time.Minute)
	require.Equal(t, clock.Now().Add(time.Minute), c.LeaseUntil, "the lease expires by the store's clock")

	clock.Add(59 * time.Second)
	require.NoError(t, s.SaveSteps(ctx, c.Lease(), storage.Commit{Now: base.Add(time.Hour)}), "live by the store's clock")
	clock.Add(time.Second)
	err := s.SaveSteps(ctx, c.Lease(), storage.Commit{Now: base})
	require.ErrorIs(t, err, storage.ErrLeaseLost, "expired at LeaseUntil by the store's clock")
	require.ErrorContains(t, err, "expired")

	again := claimOne(t, s, base.Add(time.Minute), time.Minute)
	require.Equal(t, w.ID, again.ID, "an expired lease is taken over")
	require.Greater(t, again.LeaseToken, c.LeaseToken)
}

// TestListen: writes that may make a workflow runnable signal every listener, coalesced and
// without blocking; the channel closes when the listener's context ends.
func TestListen(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	a, err := s.Listen(ctx)
	require.NoError(t, err)
	b, err := s.Listen(context.Background())
	require.NoError(t, err)

	for i := range 3 { // three creates, no reader: nothing blocks, one signal is kept
		create(t, s, "listened", fmt.Sprint(i), base)
	}
	for _, ch := range []<-chan struct{}{a, b} {
		_, ok := <-ch
		require.True(t, ok)
		select {
		case <-ch:
			t.Fatal("signals are coalesced")
		default:
		}
	}

	w := claimOne(t, s, base, time.Minute)
	require.NoError(t, s.Release(context.Background(), w.Lease(), base))
	<-b // a release signals

	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, ok := <-a:
			return !ok
		default:
			return false
		}
	}, 5*time.Second, time.Millisecond, "the channel closes when ctx ends")
}

// TestClaimNamesMerged: a claim naming several workflow names takes the earliest due of them
// all, in RunAt order, up to its limit, each name once however often it is given.
func TestClaimNamesMerged(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var want []int64
	for i := range 6 {
		name := []string{"x", "y", "z"}[i%3]
		w := create(t, s, name, fmt.Sprint(i), base.Add(time.Duration(6-i)*time.Second))
		if name != "z" {
			want = append([]int64{w.ID}, want...)
		}
	}
	got, err := s.Claim(context.Background(), storage.ClaimRequest{Owner: "w", Limit: 3, Names: []string{"y", "x", "y"}, TTL: time.Minute, Now: base.Add(time.Hour)})
	require.NoError(t, err)
	var ids []int64
	for _, w := range got {
		ids = append(ids, w.ID)
	}
	require.Equal(t, want[:3], ids)
}

// TestDeleteFinishedIndexes: a deleted child leaves its branch's count and pages, and its
// name and key are free again.
func TestDeleteFinishedIndexes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	create(t, s, "parent", "p", base)
	parent := claimOne(t, s, base, time.Hour)
	res, err := s.SpawnBatch(ctx, parent.Lease(), storage.SpawnRequest{
		Branch:   "branch$b",
		Steps:    []storage.Step{{Name: "branch$b", State: storage.StepPending}},
		Children: []storage.NewWorkflow{{Name: "child", Key: "c0"}, {Name: "child", Key: "c1"}},
		Now:      base,
	})
	require.NoError(t, err)
	require.Equal(t, 2, res.Inserted)
	kid := claimOne(t, s, base, time.Hour)
	require.NoError(t, s.FinishRun(ctx, kid.Lease(), storage.Finish{Commit: storage.Commit{Now: base}, State: storage.StateCompleted}))

	all := []storage.State{storage.StateIdle, storage.StateCompleted}
	n, err := s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{res.BranchStepID}, States: all, Cap: 10})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	deleted, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: base.Add(time.Second)})
	require.NoError(t, err)
	require.Equal(t, 1, deleted.Deleted)
	n, err = s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{res.BranchStepID}, States: all, Cap: 10})
	require.NoError(t, err)
	require.Equal(t, 1, n, "the deleted child is not counted")
	page, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: res.BranchStepID})
	require.NoError(t, err)
	require.Len(t, page, 1, "the deleted child is not listed")
	require.NotEqual(t, kid.ID, page[0].ID)
	again, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "child", Key: kid.Key, Now: base})
	require.NoError(t, err)
	require.True(t, created)
	require.Greater(t, again.ID, kid.ID, "IDs are not reused")
}
