package dispatch

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func TestARunWhoseOutcomeIsNotWrittenIsLoggedAndRunsAgainAfterItsLease(t *testing.T) {
	t.Parallel()
	const ttl = 200 * time.Millisecond // real time: leases expire by the store's clock
	store := &faultyStore{Storage: openStore(t)}
	store.failFinish.Store(1)
	clock := newClock()
	var ran atomic.Int64
	echo := sdk.New("echo", func(c *sdk.Context, in string) (string, error) {
		return sdk.Step(c, "say", func(context.Context) (string, error) { ran.Add(1); return in, nil })
	})
	logs := &logBuffer{}
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(echo), sdk.WithClock(clock),
		sdk.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	require.NoError(t, err)
	w := newWorker(t, eng, LeaseTTL(ttl), PollInterval(time.Second, time.Second))
	run(t, w)

	h, err := echo.Start(bg, eng, "k1", "again")
	require.NoError(t, err)
	eventually(t, func() bool { return w.Stats().RunErrors == 1 }, "run error counted")
	require.Contains(t, logs.String(), `msg="workflow run failed" worker=`+w.Owner()+` workflow=echo key=k1`)
	require.Equal(t, storage.StateRunning, stored(t, store, h.ID()).State, "the lease is kept until it expires")

	// The last step's result rides on the run's final write (one transaction per one-step
	// run), so a final write that fails repeats that step once: at-least-once, never lost.
	// The lease expires by itself in real time; moving the engine's clock in poll-sized steps
	// makes the row due and fires the worker's next wait, wherever its loop is.
	eventually(t, func() bool {
		clock.Advance(time.Second)
		return stored(t, store, h.ID()).State == storage.StateCompleted
	}, "taken over after the lease expired")
	require.Equal(t, "again", result(t, h))
	require.EqualValues(t, 2, ran.Load())
	require.EqualValues(t, 2, w.Stats().Claimed)
}

func TestAHeartbeatBlipDoesNotStopTheRun(t *testing.T) {
	t.Parallel()
	const ttl, beat = 30 * time.Second, 5 * time.Millisecond
	store := &faultyStore{Storage: openStore(t)}
	store.failBeat.Store(1)
	clock := newClock()
	s := newThreeSteps("order")
	eng := newEngine(t, store, clock, s.wf)
	w := newWorker(t, eng, LeaseTTL(ttl), HeartbeatEvery(beat))
	run(t, w)

	h, err := s.wf.Start(bg, eng, "o1", "x")
	require.NoError(t, err)
	s.waitEntered(t)
	claimed := stored(t, store, h.ID())
	// The first beat fails; the ones after it extend the lease.
	eventually(t, func() bool { return store.beats.Load() >= 2 }, "beats after the failed one")
	got := stored(t, store, h.ID())
	require.True(t, got.LeaseUntil.After(claimed.LeaseUntil), "the lease was extended: %v, claimed until %v", got.LeaseUntil, claimed.LeaseUntil)
	require.Equal(t, claimed.LeaseToken, got.LeaseToken)
	close(s.release)
	require.Equal(t, "x-a-b-c", result(t, h))
	require.Zero(t, w.Stats().HeartbeatsLost)
}
