package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
)

func TestIdleBackoffGrowsAndAStartWakesTheWorkerAtOnce(t *testing.T) {
	t.Parallel()
	const lo, hi = 10 * time.Millisecond, 80 * time.Millisecond
	store := openStore(t)
	clock := newClock()
	echo := sdk.New("echo", func(c *sdk.Context, in string) (string, error) { return in, nil })
	eng := newEngine(t, store, clock, echo)
	w := newWorker(t, eng, PollInterval(lo, hi))
	run(t, w)

	// Each idle wait is armed only after the claim before it found nothing; advancing by the
	// wait fires it and leads to the next claim and the next, longer, wait.
	want := []time.Duration{10, 20, 40, 80, 80, 80}
	for i := range want {
		want[i] *= time.Millisecond
		eventually(t, func() bool { return len(clock.waits(hi)) > i }, "idle wait %d", i)
		require.Equal(t, want[:i+1], clock.waits(hi))
		if i < len(want)-1 {
			clock.Advance(want[i])
		}
	}
	require.Zero(t, w.Stats().Claimed)

	// The worker is parked on an 80ms wait that no one will fire: only the Start wakes it.
	before := clock.Now()
	h, err := echo.Start(bg, eng, "k", "hi")
	require.NoError(t, err)
	require.Equal(t, "hi", result(t, h))
	require.Equal(t, before, clock.Now(), "no time had to pass")
	require.EqualValues(t, 1, w.Stats().Claimed)
	eventually(t, func() bool { return len(clock.waits(hi)) > len(want) }, "wait after the claim")
	require.Equal(t, lo, clock.waits(hi)[len(want)], "finding work resets the backoff")
}

func TestClaimErrorsAreBackedOffAndNeverStopTheWorker(t *testing.T) {
	t.Parallel()
	store := &flakyStore{Storage: openStore(t)}
	store.fail.Store(3)
	echo := sdk.New("echo", func(c *sdk.Context, in string) (string, error) {
		return sdk.Step(c, "say", func(context.Context) (string, error) { return in, nil })
	})
	eng := newEngine(t, store, sdk.SystemClock{}, echo)
	w := newWorker(t, eng, PollInterval(time.Millisecond, 5*time.Millisecond))
	r := run(t, w)

	h, err := echo.Start(bg, eng, "k", "back")
	require.NoError(t, err)
	require.Equal(t, "back", result(t, h))
	require.EqualValues(t, 3, w.Stats().ClaimErrors)
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v", err)
	default:
	}
	require.NoError(t, r.stop(t))
}
