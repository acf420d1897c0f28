package sdk_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func TestStepTimeoutFailsTheAttemptAndThePolicyRetriesIt(t *testing.T) {
	t.Parallel()
	attempts := 0
	wf := sdk.New("slow", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "call", func(ctx context.Context) (int, error) {
			attempts++
			if attempts == 1 {
				<-ctx.Done() // the first attempt hangs until its deadline
				return 0, ctx.Err()
			}
			return attempts, nil
		}, sdk.StepTimeout(20*time.Millisecond))
	}, sdk.WithStep("call", sdk.WithRetry(sdk.Policy{Name: "p", MaxAttempts: 3, Base: time.Second})))
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, out, "the timed-out attempt was retried")
	recs := e.errors(h.ID())
	require.Len(t, recs, 1)
	require.Equal(t, "call", recs[0].Step, "the timeout is an error of its step")
	require.Equal(t, 1, recs[0].Attempt)
	require.Contains(t, recs[0].Message, "step attempt timed out after 20ms")
}

func TestStepTimeoutErrorMatchesErrStepTimeoutForRetryOn(t *testing.T) {
	t.Parallel()
	wf := sdk.New("slow-noretry", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "call", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		}, sdk.StepTimeout(time.Millisecond), sdk.WithRetry(sdk.Policy{Name: "p", MaxAttempts: 5, RetryOn: func(err error) bool {
			return !errors.Is(err, sdk.ErrStepTimeout) // timeouts are not worth retrying here
		}}))
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.drain()
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrStalled, "RetryOn saw ErrStepTimeout and declined")
	require.Len(t, e.errors(h.ID()), 1)
}

func TestStepOptionsAreCheckedWhenTheWorkflowIsRegistered(t *testing.T) {
	t.Parallel()
	fn := func(c *sdk.Context, _ int) (int, error) { return 0, nil }
	for name, opt := range map[string]sdk.WorkflowOption{
		"bad policy":       sdk.WithStep("s", sdk.WithRetry(sdk.Policy{MaxAttempts: 0})),
		"negative timeout": sdk.WithStepDefaults(sdk.StepTimeout(-time.Second)),
		"bad step name":    sdk.WithStep("a$b"),
		"bad composite":    sdk.WithStepDefaults(sdk.WithRetry(sdk.Composite{{MaxAttempts: 1}})),
	} {
		_, err := sdk.NewEngine(newMemEnv(t).store, sdk.WithWorkflows(sdk.New("wf", fn, opt)))
		require.ErrorIs(t, err, sdk.ErrInvalid, name)
	}
}

func TestContextNowIsRecordedAndIdenticalOnReplay(t *testing.T) {
	t.Parallel()
	var firsts []time.Time
	wf := sdk.New("clock", func(c *sdk.Context, _ int) (time.Time, error) {
		first := c.Now()
		firsts = append(firsts, first)
		if err := sdk.Sleep(c, "nap", time.Hour); err != nil {
			return time.Time{}, err
		}
		require.Equal(t, 1, c.Info().Attempt)
		return c.Now(), nil
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.drain()
	e.clock.Advance(time.Hour)
	e.drain()
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Len(t, firsts, 2)
	require.True(t, firsts[0].Equal(t0), "first run: %v", firsts[0])
	require.True(t, firsts[1].Equal(t0), "the replay an hour later sees the recorded time, not %v", firsts[1])
	require.True(t, out.Equal(t0.Add(time.Hour)), "a new call gets a new time: %v", out)
}

func TestContextInfo(t *testing.T) {
	t.Parallel()
	var got sdk.Info
	wf := sdk.New("info", func(c *sdk.Context, _ int) (int, error) {
		got = c.Info()
		return 0, nil
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0, sdk.Tags(map[string]string{"team": "billing"}))
	require.NoError(t, err)
	e.drain()
	require.Equal(t, sdk.Info{ID: h.ID(), Name: "info", Key: "k", Attempt: 1, Tags: map[string]string{"team": "billing"}}, got)
}

func TestStepHookReplacesAndFailsSteps(t *testing.T) {
	t.Parallel()
	wf := sdk.New("hooked", func(c *sdk.Context, _ int) (string, error) {
		a, err := sdk.Step(c, "a", func(context.Context) (string, error) { return "real", nil })
		if err != nil {
			return "", err
		}
		b, err := sdk.Step(c, "b", func(context.Context) (string, error) { return "b", nil })
		return a + "+" + b, err
	}, sdk.WithStepDefaults(sdk.WithRetry(sdk.Policy{Name: "p", MaxAttempts: 3})))
	hook := func(call sdk.StepCall) (any, error) {
		switch {
		case call.Step == "a":
			return func(context.Context) (string, error) { return "fake", nil }, nil
		case call.Step == "b" && call.Attempt < 3:
			return nil, errors.New("injected")
		}
		return nil, nil
	}
	e := newMemEnv(t, sdk.WithWorkflows(wf), sdk.WithStepHook(hook))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "fake+b", out)
	require.Len(t, e.errors(h.ID()), 2, "two injected failures of b")

	// A replacement of the wrong type stalls the step with a clear error.
	bad := sdk.New("badhook", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "n", func(context.Context) (int, error) { return 1, nil })
	})
	e2 := newMemEnv(t, sdk.WithWorkflows(bad), sdk.WithStepHook(func(sdk.StepCall) (any, error) {
		return func(context.Context) (string, error) { return "", nil }, nil
	}))
	h2, err := bad.Start(ctx, e2.eng, "k", 0)
	require.NoError(t, err)
	e2.drain()
	require.Equal(t, storage.StateStalled, e2.state(h2.ID()).State)
	require.Contains(t, e2.errors(h2.ID())[0].Message, "not a func(context.Context) (int, error)")
}
