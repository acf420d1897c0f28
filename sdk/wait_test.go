package sdk_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func TestSleepWokenEarlyWaitsOnlyForTheRemainingTime(t *testing.T) {
	t.Parallel()
	wf := sdk.New("sleeper", func(c *sdk.Context, _ int) (string, error) {
		if err := sdk.Sleep(c, "nap", 10*time.Minute); err != nil {
			return "", err
		}
		return "awake", nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.Equal(t, t0.Add(10*time.Minute), e.state(h.ID()).RunAt)

	e.clock.Advance(4 * time.Minute)
	require.NoError(t, h.Signal(ctx)) // an early wake
	require.Equal(t, 1, e.drain())
	w := e.state(h.ID())
	require.Equal(t, storage.StateIdle, w.State)
	require.Equal(t, t0.Add(10*time.Minute), w.RunAt, "re-suspends until the original wake time, not 10 more minutes")
	require.Equal(t, storage.WaitSleep, w.Wait.Kind)

	e.clock.Advance(6 * time.Minute)
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "awake", out)
}

func TestWaitUntilChecksEveryIntervalAndStallsAtTheTimeout(t *testing.T) {
	t.Parallel()
	ready := false
	checks := 0
	wf := sdk.New("waiter", func(c *sdk.Context, _ int) (int, error) {
		if err := sdk.WaitUntil(c, "ready", func(context.Context) (bool, error) {
			checks++
			return ready, nil
		}, sdk.WaitTimeout(time.Hour), sdk.CheckEvery(25*time.Minute)); err != nil {
			return 0, err
		}
		return checks, nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.Equal(t, t0.Add(25*time.Minute), e.state(h.ID()).RunAt)
	e.clock.Advance(25 * time.Minute)
	require.Equal(t, 1, e.drain())
	e.clock.Advance(25 * time.Minute)
	require.Equal(t, 1, e.drain())
	require.Equal(t, t0.Add(time.Hour), e.state(h.ID()).RunAt, "the last check is clamped to the timeout fixed at first record")
	e.clock.Advance(10 * time.Minute)
	require.Equal(t, 1, e.drain())
	w := e.state(h.ID())
	require.Equal(t, storage.StateStalled, w.State)
	require.Contains(t, w.LastError, "wait timed out")
	recs := e.errors(h.ID())
	require.Len(t, recs, 1)
	require.Equal(t, "until$ready", recs[0].Step)

	// An operator retries once the condition can hold: a fresh deadline, and it completes.
	ready = true
	require.NoError(t, h.Retry(ctx))
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, out)
}

func TestContinueIfWaitsWithoutTimerUntilSignalled(t *testing.T) {
	t.Parallel()
	approved := false
	wf := sdk.New("approval", func(c *sdk.Context, _ int) (string, error) {
		if err := sdk.ContinueIf(c, "approved", func(context.Context) (bool, error) { return approved, nil }); err != nil {
			return "", err
		}
		return "shipped", nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	w := e.state(h.ID())
	require.Equal(t, storage.StateIdle, w.State)
	require.True(t, w.RunAt.IsZero(), "no timer")
	require.Equal(t, storage.WaitSignal, w.Wait.Kind)
	e.clock.Advance(1000 * time.Hour)
	require.Equal(t, 0, e.drain(), "nothing wakes it but a signal")

	require.NoError(t, h.Signal(ctx))
	require.Equal(t, 1, e.drain(), "a signal re-checks the condition")
	require.Equal(t, storage.StateIdle, e.state(h.ID()).State)

	approved = true
	require.NoError(t, h.Signal(ctx))
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "shipped", out)
}

func TestDurableValuesAreSavedWithTheStepThatChangedThem(t *testing.T) {
	t.Parallel()
	type progress struct{ Done int }
	var seen []int
	wf := sdk.New("values", func(c *sdk.Context, _ int) (int, error) {
		first, err := sdk.SetOnce(c, "started", "yes")
		if err != nil {
			return 0, err
		}
		p, _, err := sdk.Get[progress](c, "progress")
		if err != nil {
			return 0, err
		}
		seen = append(seen, p.Done)
		if first {
			if err := sdk.Set(c, "progress", progress{Done: 1}); err != nil {
				return 0, err
			}
		}
		if _, err := sdk.Step(c, "one", func(context.Context) (int, error) { return 1, nil }); err != nil {
			return 0, err
		}
		if err := sdk.Sleep(c, "nap", time.Minute); err != nil {
			return 0, err
		}
		return p.Done, nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.EqualValues(t, 0, e.count.saves.Load(), "step one, the values and the sleep are one write: the run's finish")
	require.EqualValues(t, 1, e.count.finishes.Load())
	require.JSONEq(t, `{"started":"yes","progress":{"Done":1}}`, string(e.state(h.ID()).Values))
	e.clock.Advance(time.Minute)
	require.Equal(t, 1, e.drain())
	require.Equal(t, []int{0, 1}, seen, "the second run reads what the first saved; SetOnce did not overwrite")
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, out)
}

func TestOversizedValueIsRejectedAndNothingIsStored(t *testing.T) {
	t.Parallel()
	var setErr error
	wf := sdk.New("big.value", func(c *sdk.Context, _ int) (int, error) {
		setErr = sdk.Set(c, "blob", strings.Repeat("x", sdk.MaxValueSize))
		if err := sdk.Set(c, "bad$key", 1); err == nil {
			t.Error("a '$' in a value name must be rejected")
		}
		_, ok, err := sdk.Get[string](c, "blob")
		if err != nil || ok {
			t.Errorf("the oversized value must not be stored: ok=%v err=%v", ok, err)
		}
		return 1, nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	e.drain()
	require.ErrorIs(t, setErr, sdk.ErrTooLarge)
	require.Contains(t, setErr.Error(), `"blob"`)
	require.True(t, sdk.IsPermanent(setErr))
	w := e.state(h.ID())
	require.Equal(t, storage.StateCompleted, w.State)
	require.NotContains(t, string(w.Values), "blob")
}
