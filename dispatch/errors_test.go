package dispatch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func TestARunWhoseOutcomeIsNotWrittenIsLoggedAndRunsAgainAfterItsLease(t *testing.T) {
	t.Parallel()
	const ttl = 30 * time.Second
	store := &faultyStore{Storage: openStore(t)}
	store.failFinish.Store(1)
	clock := newClock()
	var ran int
	echo := sdk.New("echo", func(c *sdk.Context, in string) (string, error) {
		return sdk.Step(c, "say", func(context.Context) (string, error) { ran++; return in, nil })
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
	// Move time in poll-sized steps: wherever the worker's loop is, its next wait fires.
	eventually(t, func() bool {
		clock.Advance(time.Second)
		return stored(t, store, h.ID()).State == storage.StateCompleted
	}, "taken over after the lease expired")
	require.Equal(t, "again", result(t, h))
	require.Equal(t, 2, ran)
	require.EqualValues(t, 2, w.Stats().Claimed)
}

func TestAHeartbeatBlipDoesNotStopTheRun(t *testing.T) {
	t.Parallel()
	const ttl, beat = 30 * time.Second, 10 * time.Second
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
	claimedUntil := stored(t, store, h.ID()).LeaseUntil
	for k := 1; k <= 2; k++ { // the first beat fails, the second extends the lease
		eventually(t, func() bool { return clock.count(beat) >= k }, "beat %d armed", k)
		clock.Advance(beat)
	}
	eventually(t, func() bool { return clock.count(beat) >= 3 }, "second beat done")
	require.True(t, stored(t, store, h.ID()).LeaseUntil.Equal(claimedUntil.Add(2*beat)))
	close(s.release)
	require.Equal(t, "x-a-b-c", result(t, h))
	require.Zero(t, w.Stats().HeartbeatsLost)
}
