package dispatch

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// threeSteps is a workflow whose middle step blocks on its context the first time it runs
// (until the test lets it go) and returns at once afterwards. It counts executions per step.
type threeSteps struct {
	a, b, c atomic.Int64
	entered chan struct{} // closed when b first starts
	release chan struct{} // closed to let a blocked b finish
	cause   atomic.Value  // context.Cause seen by a b that was cancelled
	wf      *sdk.Workflow[string, string]
}

func newThreeSteps(name string) *threeSteps {
	s := &threeSteps{entered: make(chan struct{}), release: make(chan struct{})}
	s.wf = sdk.New(name, func(c *sdk.Context, in string) (string, error) {
		a, err := sdk.Step(c, "a", func(context.Context) (string, error) { s.a.Add(1); return in + "-a", nil })
		if err != nil {
			return "", err
		}
		b, err := sdk.Step(c, "b", func(ctx context.Context) (string, error) {
			if s.b.Add(1) == 1 {
				close(s.entered)
				select {
				case <-ctx.Done():
					s.cause.Store(context.Cause(ctx))
					return "", ctx.Err()
				case <-s.release:
				}
			}
			return a + "-b", nil
		})
		if err != nil {
			return "", err
		}
		return sdk.Step(c, "c", func(context.Context) (string, error) { s.c.Add(1); return b + "-c", nil })
	})
	return s
}

func (s *threeSteps) counts() [3]int64 { return [3]int64{s.a.Load(), s.b.Load(), s.c.Load()} }

func (s *threeSteps) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(waitFor):
		t.Fatal("step b never started")
	}
}

func TestShutdownReleasesARunThatAnotherWorkerCompletes(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	s := newThreeSteps("order")
	eng1 := newEngine(t, store, clock, s.wf)
	w1 := newWorker(t, eng1, ShutdownTimeout(time.Millisecond), Owner("first"))
	r1 := run(t, w1)

	h, err := s.wf.Start(bg, eng1, "o1", "x")
	require.NoError(t, err)
	s.waitEntered(t)
	require.NoError(t, r1.stop(t), "a shutdown that had to cancel runs is still clean")
	require.ErrorIs(t, s.cause.Load().(error), sdk.ErrShutdown, "the step saw why it was cancelled")

	got := stored(t, store, h.ID())
	require.Equal(t, storage.StateIdle, got.State, "the lease was released, not left to expire")
	require.False(t, got.RunAt.After(clock.Now()), "released workflows are runnable at once")
	require.EqualValues(t, 1, w1.Stats().Finished)

	// Another process takes it over at once, without any time passing.
	eng2 := newEngine(t, store, clock, s.wf)
	w2 := newWorker(t, eng2, Owner("second"))
	run(t, w2)
	require.Equal(t, "x-a-b-c", result(t, h))
	require.Equal(t, [3]int64{1, 2, 1}, s.counts(), "only the interrupted step runs again")
	require.Equal(t, "second", stored(t, store, h.ID()).LeaseOwner)
}

func TestGracefulShutdownWaitsForARunThatFinishesInTime(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	s := newThreeSteps("order")
	eng := newEngine(t, store, clock, s.wf)
	w := newWorker(t, eng, ShutdownTimeout(time.Hour))
	r := run(t, w)

	h, err := s.wf.Start(bg, eng, "o1", "x")
	require.NoError(t, err)
	s.waitEntered(t)
	r.cancel() // begin shutdown while b is in flight
	select {
	case err := <-r.done:
		t.Fatalf("Run returned (%v) while a run was still in flight", err)
	default:
	}
	close(s.release)
	require.NoError(t, r.stop(t))

	require.Nil(t, s.cause.Load(), "the in-flight step was not cancelled")
	got := stored(t, store, h.ID())
	require.Equal(t, storage.StateCompleted, got.State, "the run finished before Run returned")
	require.Equal(t, [3]int64{1, 1, 1}, s.counts())
	require.Equal(t, "x-a-b-c", result(t, h))
}

func TestExpiredLeaseOfADeadWorkerIsTakenOver(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	s := newThreeSteps("order")

	// The dead worker: claims directly, runs step a, is killed inside b, and never finishes
	// (a kill is a cancellation whose cause is not sdk.ErrShutdown: nothing is written).
	dead := newEngine(t, store, clock, s.wf)
	h, err := s.wf.Start(bg, dead, "o1", "x")
	require.NoError(t, err)
	claimed, err := store.Claim(bg, storage.ClaimRequest{Owner: "dead-worker", Limit: 1, Names: dead.Names(), TTL: 30 * time.Second, Now: clock.Now()})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	killCtx, kill := context.WithCancelCause(bg)
	executed := make(chan error, 1)
	go func() { executed <- dead.Execute(killCtx, claimed[0]) }()
	s.waitEntered(t)
	kill(errors.New("kill -9"))
	require.NoError(t, <-executed)
	require.Equal(t, "dead-worker", stored(t, store, h.ID()).LeaseOwner)

	eng := newEngine(t, store, clock, s.wf)
	w := newWorker(t, eng, PollInterval(time.Second, time.Second))
	run(t, w)
	// The worker has claimed (and found nothing) once it parks on its poll wait. Its clock
	// then reads an hour later, long past the dead lease's RunAt: the lease is still live by
	// the store's clock, so the poll that fires finds nothing either.
	eventually(t, func() bool { return clock.count(time.Second) >= 1 }, "worker polls")
	clock.Advance(time.Hour)
	eventually(t, func() bool { return clock.count(time.Second) >= 2 }, "worker polled an hour later")
	require.Zero(t, w.Stats().Claimed, "a live lease is not taken, whatever the worker's clock says")

	// Had the dead worker's last heartbeat been a short one, its lease would run out soon
	// (real time): shorten it so, rather than wait out the 30 seconds.
	require.NoError(t, store.Heartbeat(bg, claimed[0].Lease(), 100*time.Millisecond, clock.Now()))
	eventually(t, func() bool {
		clock.Advance(time.Second) // fires the poll wait, wherever the loop is
		return stored(t, store, h.ID()).State == storage.StateCompleted
	}, "taken over after the lease expired")
	require.Equal(t, "x-a-b-c", result(t, h))
	require.Equal(t, [3]int64{1, 2, 1}, s.counts(), "step a is not run again")
	got := stored(t, store, h.ID())
	require.Equal(t, w.Owner(), got.LeaseOwner)
	require.Greater(t, got.LeaseToken, claimed[0].LeaseToken)
	require.EqualValues(t, 1, w.Stats().Claimed)
}

func TestHeartbeatsKeepALongStepsLease(t *testing.T) {
	t.Parallel()
	// Real time: the lease expires by the store's clock, and heartbeats keep it.
	const ttl, beat = 300 * time.Millisecond, 15 * time.Millisecond
	base := openStore(t)
	store := &faultyStore{Storage: base}
	s := newThreeSteps("order")
	eng1 := newEngine(t, store, sdk.SystemClock{}, s.wf)
	w1 := newWorker(t, eng1, LeaseTTL(ttl), HeartbeatEvery(beat), Owner("holder"))
	run(t, w1)

	h, err := s.wf.Start(bg, eng1, "o1", "x")
	require.NoError(t, err)
	s.waitEntered(t)
	require.Equal(t, "holder", stored(t, base, h.ID()).LeaseOwner)

	// A second process that would take the workflow the moment its lease lapsed: its clock
	// runs an hour ahead, so the leased row always looks due to it, and it polls often.
	claims := &flakyStore{Storage: base}
	eng2 := newEngine(t, claims, skewedClock{time.Hour}, s.wf)
	w2 := newWorker(t, eng2, LeaseTTL(ttl), HeartbeatEvery(beat), PollInterval(time.Millisecond, time.Millisecond), Owner("rival"))
	run(t, w2)

	// Step b runs for more than twice the TTL: every beat extends the lease, and the rival,
	// claiming all along, never gets it.
	beats, rivalClaims := store.beats.Load(), claims.claims.Load()
	eventually(t, func() bool { return store.beats.Load() >= beats+int64(3*ttl/beat) }, "heartbeats over three TTLs")
	require.Greater(t, claims.claims.Load(), rivalClaims, "the rival kept claiming")
	got := stored(t, base, h.ID())
	require.Equal(t, "holder", got.LeaseOwner)
	require.Equal(t, storage.StateRunning, got.State)
	require.Zero(t, w2.Stats().Claimed, "the rival never got the workflow")

	close(s.release)
	require.Equal(t, "x-a-b-c", result(t, h))
	require.Equal(t, [3]int64{1, 1, 1}, s.counts())
	require.Zero(t, w1.Stats().HeartbeatsLost)
}

func TestHeartbeatStopsARunCancelledElsewhere(t *testing.T) {
	t.Parallel()
	const beat = 10 * time.Millisecond
	store := openStore(t)
	clock := newClock()
	s := newThreeSteps("order")
	eng := newEngine(t, store, clock, s.wf)
	w := newWorker(t, eng, HeartbeatEvery(beat))
	run(t, w)

	h, err := s.wf.Start(bg, eng, "o1", "x")
	require.NoError(t, err)
	s.waitEntered(t)

	// Cancelled by another process (an operator's CLI): only the heartbeat can tell this one.
	operator := newEngine(t, store, clock, s.wf)
	require.NoError(t, operator.Cancel(bg, h.ID()))

	eventually(t, func() bool { return w.Stats().Finished == 1 }, "run stopped")
	require.ErrorIs(t, s.cause.Load().(error), storage.ErrCancelled)
	require.EqualValues(t, 1, w.Stats().HeartbeatsLost)
	require.Zero(t, w.Stats().RunErrors)
	require.Equal(t, storage.StateCancelled, stored(t, store, h.ID()).State)
	require.Equal(t, [3]int64{1, 1, 0}, s.counts())
}

func TestShutdownKeepsTheResultOfAStepThatIgnoresItsContext(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	entered := make(chan struct{})
	release := make(chan struct{})
	var runs atomic.Int64
	wf := sdk.New("stubborn", func(c *sdk.Context, in string) (string, error) {
		out, err := sdk.Step(c, "slow", func(ctx context.Context) (string, error) {
			if runs.Add(1) == 1 {
				close(entered)
				<-ctx.Done() // sees the cancellation, but finishes its work anyway
				<-release
			}
			return in, nil
		})
		if err != nil {
			return "", err
		}
		// The run was cancelled for shutdown: the next SDK call stops it.
		_, err = sdk.Step(c, "after", func(context.Context) (int, error) { runs.Add(100); return 1, nil })
		return out, err
	})
	eng := newEngine(t, store, clock, wf)
	w := newWorker(t, eng, ShutdownTimeout(0))
	r := run(t, w)
	h, err := wf.Start(bg, eng, "k", "x")
	require.NoError(t, err)
	<-entered
	r.cancel()
	close(release)
	require.NoError(t, r.stop(t))

	got := stored(t, store, h.ID())
	require.Equal(t, storage.StateIdle, got.State, "released for another worker at once, not left to expire")
	require.False(t, got.RunAt.After(clock.Now()))

	run(t, newWorker(t, newEngine(t, store, clock, wf)))
	require.Equal(t, "x", result(t, h))
	require.EqualValues(t, 101, runs.Load(), "the finished step was saved during shutdown and not run again")
}

// hangingStore stands for a database that stops answering: once hung, every write blocks
// until its context ends, as a driver call on a dead connection does.
type hangingStore struct {
	storage.Storage
	hung atomic.Bool
}

func (h *hangingStore) block(ctx context.Context) error {
	if !h.hung.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (h *hangingStore) SaveSteps(ctx context.Context, l storage.Lease, c storage.Commit) error {
	if err := h.block(ctx); err != nil {
		return err
	}
	return h.Storage.SaveSteps(ctx, l, c)
}

func (h *hangingStore) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	if err := h.block(ctx); err != nil {
		return err
	}
	return h.Storage.FinishRun(ctx, l, f)
}

func (h *hangingStore) Release(ctx context.Context, l storage.Lease, now time.Time) error {
	if err := h.block(ctx); err != nil {
		return err
	}
	return h.Storage.Release(ctx, l, now)
}

func (h *hangingStore) Heartbeat(ctx context.Context, l storage.Lease, ttl time.Duration, now time.Time) error {
	if err := h.block(ctx); err != nil {
		return err
	}
	return h.Storage.Heartbeat(ctx, l, ttl, now)
}

// TestShutdownIsBoundedWhenTheStoreHangs: the database stops answering while a run is in
// flight. The writes that outlive the run's cancellation (its step's result, the final write,
// the release) are each bounded, so Run still returns; the workflow resumes once the database
// answers again.
func TestShutdownIsBoundedWhenTheStoreHangs(t *testing.T) {
	t.Parallel()
	store := &hangingStore{Storage: openStore(t)}
	clock := newClock()
	entered := make(chan struct{})
	var runs atomic.Int64
	wf := sdk.New("hung", func(c *sdk.Context, in string) (string, error) {
		return sdk.Step(c, "slow", func(ctx context.Context) (string, error) {
			if runs.Add(1) == 1 {
				close(entered)
				<-ctx.Done() // finishes anyway: its result must be saved, and that write hangs
			}
			return in, nil
		})
	})
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(wf), sdk.WithClock(clock), sdk.WithLogger(discard), sdk.WithWriteTimeout(100*time.Millisecond))
	require.NoError(t, err)
	r := run(t, newWorker(t, eng, ShutdownTimeout(0), LeaseTTL(time.Second)))
	h, err := wf.Start(bg, eng, "k", "x")
	require.NoError(t, err)
	<-entered
	store.hung.Store(true)
	r.cancel()
	require.NoError(t, r.stop(t), "Run returns although every write hangs")

	store.hung.Store(false)
	run(t, newWorker(t, newEngine(t, store, clock, wf)))
	// Its lease lapses by the store's clock; moving the engines' clock makes the row due and
	// wakes the idle worker's poll.
	eventually(t, func() bool {
		clock.Advance(time.Second)
		return stored(t, store, h.ID()).State == storage.StateCompleted
	}, "the workflow resumes when the database answers again")
	require.Equal(t, "x", result(t, h))
}
