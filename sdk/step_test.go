package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

type order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

func TestCompletedStepNeverRunsAgain(t *testing.T) {
	t.Parallel()
	var charged, shipped, waits int
	wf := sdk.New("order.process", func(c *sdk.Context, in order) (string, error) {
		receipt, err := sdk.Step(c, "charge", func(context.Context) (string, error) {
			charged++
			return fmt.Sprintf("rcpt-%s-%d", in.ID, in.Total), nil
		})
		if err != nil {
			return "", err
		}
		// Twenty waits in a row: each run ends at the first one not yet due.
		for i := range 20 {
			waits++
			if err := sdk.Sleep(c, fmt.Sprintf("pause-%d", i), time.Minute); err != nil {
				return "", err
			}
		}
		if _, err := sdk.Step(c, "ship", func(context.Context) (int, error) { shipped++; return 1, nil }); err != nil {
			return "", err
		}
		return receipt, nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "o-1", order{ID: "o-1", Total: 42})
	require.NoError(t, err)

	runs := 0
	for range 25 {
		runs += e.drain()
		e.clock.Advance(time.Minute)
	}
	require.Equal(t, 21, runs, "one run per sleep plus the first")
	require.Equal(t, 1, charged, "a completed step must never run again")
	require.Equal(t, 1, shipped)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "rcpt-o-1-42", out)
}

func TestLoadIsOneStorageCallHoweverManySteps(t *testing.T) {
	t.Parallel()
	const steps = 300
	wf := sdk.New("many.steps", func(c *sdk.Context, _ struct{}) (int, error) {
		sum := 0
		for i := range steps {
			v, err := sdk.Step(c, fmt.Sprintf("s%d", i), func(context.Context) (int, error) { return i, nil })
			if err != nil {
				return 0, err
			}
			sum += v
		}
		if err := sdk.Sleep(c, "then", time.Hour); err != nil {
			return 0, err
		}
		return sum, nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", struct{}{})
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.EqualValues(t, 0, e.count.loads.Load(), "the first run starts from its claim: nothing is stored to load")

	// The replay after the sleep loads 301 records with one call and writes only the finish.
	e.count.saves.Store(0)
	e.clock.Advance(time.Hour)
	require.Equal(t, 1, e.drain())
	require.EqualValues(t, 1, e.count.loads.Load(), "replay must load the workflow and all its steps in one call")
	require.EqualValues(t, 0, e.count.saves.Load(), "replayed steps must not be written again")
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, steps*(steps-1)/2, out)
}

func TestStepRetriesWithBackoffThenStallsAndRetryGivesFreshBudget(t *testing.T) {
	t.Parallel()
	attempts := 0
	fail := true
	policy := sdk.Policy{Name: "p", MaxAttempts: 3, Base: 10 * time.Second, Cap: 15 * time.Second}
	wf := sdk.New("flaky", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "call", func(context.Context) (int, error) {
			attempts++
			if fail {
				return 0, fmt.Errorf("boom %d", attempts)
			}
			return attempts, nil
		}, sdk.WithRetry(policy))
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)

	require.Equal(t, 1, e.drain())
	w := e.state(h.ID())
	require.Equal(t, storage.StateIdle, w.State)
	require.Equal(t, t0.Add(10*time.Second), w.RunAt, "first retry after Base")

	e.clock.Advance(9 * time.Second)
	require.Equal(t, 0, e.drain(), "not before the delay")
	e.clock.Advance(time.Second)
	require.Equal(t, 1, e.drain())
	require.Equal(t, e.clock.Now().Add(15*time.Second), e.state(h.ID()).RunAt, "second delay doubled, clamped to Cap")

	e.clock.Advance(15 * time.Second)
	require.Equal(t, 1, e.drain())
	require.Equal(t, 3, attempts)
	require.Equal(t, storage.StateStalled, e.state(h.ID()).State, "out of retries: stalled")
	recs := e.errors(h.ID())
	require.Len(t, recs, 3, "every failure writes an error record")
	require.Equal(t, "call", recs[2].Step)
	require.Contains(t, recs[2].Message, "boom 3")
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrStalled)

	// Retry: the step gets a fresh budget and the retry is its own record.
	fail = false
	require.NoError(t, h.Retry(ctx))
	require.ErrorIs(t, h.Retry(ctx), storage.ErrWrongState, "a second retry of an idle workflow is refused")
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 4, out)
	_, steps, err := e.store.Load(ctx, h.ID())
	require.NoError(t, err)
	names := []string{}
	for _, s := range steps {
		names = append(names, s.Name)
	}
	require.Contains(t, names, "$retry$1")
}

var errRateLimited = errors.New("rate limited")

func TestCompositePolicyKeepsABudgetPerNamedPolicy(t *testing.T) {
	t.Parallel()
	// Errors alternate; each policy has its own budget, keyed by name.
	seq := []error{errRateLimited, errors.New("x"), errRateLimited, errors.New("y"), errRateLimited, nil}
	calls := 0
	policy := sdk.Composite{
		{Name: "rate", MaxAttempts: 10, Base: time.Minute, Cap: time.Minute, RetryOn: sdk.RetryOnErrors(errRateLimited)},
		{Name: "other", MaxAttempts: 3, Base: time.Second, Cap: time.Second},
	}
	wf := sdk.New("composite", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "call", func(context.Context) (int, error) {
			err := seq[calls]
			calls++
			return calls, err
		}, sdk.WithRetry(policy))
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	var delays []time.Duration
	for calls < len(seq) {
		require.Equal(t, 1, e.drain())
		w := e.state(h.ID())
		if w.State != storage.StateIdle {
			break
		}
		d := w.RunAt.Sub(e.clock.Now())
		delays = append(delays, d)
		e.clock.Advance(d)
	}
	// "other" failed twice (budget 3) and "rate" three times (budget 10): neither ran out.
	require.Equal(t, []time.Duration{time.Minute, time.Second, time.Minute, time.Second, time.Minute}, delays)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 6, out)
}

func TestPermanentErrorStallsAtOnce(t *testing.T) {
	t.Parallel()
	calls := 0
	wf := sdk.New("perm", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "call", func(context.Context) (int, error) {
			calls++
			return 0, sdk.Permanent(errors.New("card declined"))
		})
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.Equal(t, 1, calls)
	w := e.state(h.ID())
	require.Equal(t, storage.StateStalled, w.State)
	require.Contains(t, w.LastError, "card declined")
}

func TestWorkflowFunctionErrorsRetryThenFail(t *testing.T) {
	t.Parallel()
	runs := 0
	wf := sdk.New("wf.retry", func(c *sdk.Context, _ int) (int, error) {
		runs++
		return 0, fmt.Errorf("run %d failed", runs)
	}, sdk.WithRetry(sdk.Policy{MaxAttempts: 3, Base: time.Second, Cap: time.Minute}))
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.Equal(t, storage.StateIdle, e.state(h.ID()).State)
	e.clock.Advance(time.Second)
	require.Equal(t, 1, e.drain())
	e.clock.Advance(2 * time.Second)
	require.Equal(t, 1, e.drain())
	w := e.state(h.ID())
	require.Equal(t, storage.StateFailed, w.State)
	require.Equal(t, 3, w.Attempt)
	require.Len(t, e.errors(h.ID()), 3)
	_, err = h.Result(ctx)
	var we *sdk.WorkflowError
	require.ErrorAs(t, err, &we)
	require.ErrorIs(t, err, sdk.ErrFailed)
	require.Contains(t, we.Message, "run 3 failed")
}

func TestSwallowingSuspensionCannotCorruptTheRun(t *testing.T) {
	t.Parallel()
	after := 0
	wf := sdk.New("swallow", func(c *sdk.Context, _ int) (string, error) {
		_ = sdk.Sleep(c, "nap", time.Hour) // error ignored on purpose
		_, err := sdk.Step(c, "after", func(context.Context) (int, error) { after++; return 1, nil })
		require.ErrorIs(t, err, sdk.ErrSuspended, "every call after a suspension returns it again")
		require.Error(t, sdk.Set(c, "k", 1))
		return "done too early", nil // ignored
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	w := e.state(h.ID())
	require.Equal(t, storage.StateIdle, w.State, "the return value after a suspension is ignored")
	require.Equal(t, 0, after)
	require.Equal(t, t0.Add(time.Hour), w.RunAt)
}

func TestDuplicateStepNameFailsClearly(t *testing.T) {
	t.Parallel()
	wf := sdk.New("dup", func(c *sdk.Context, _ int) (int, error) {
		if _, err := sdk.Step(c, "a", func(context.Context) (int, error) { return 1, nil }); err != nil {
			return 0, err
		}
		return sdk.Step(c, "a", func(context.Context) (int, error) { return 2, nil })
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	e.drain()
	w := e.state(h.ID())
	require.Equal(t, storage.StateFailed, w.State)
	require.Contains(t, w.LastError, `step name used twice`)
	require.Contains(t, w.LastError, `"a"`)
}

func TestChangedResultTypeFailsNamingWorkflowStepAndType(t *testing.T) {
	t.Parallel()
	v1 := sdk.New("versioned", func(c *sdk.Context, _ int) (int, error) {
		if _, err := sdk.Step(c, "fetch", func(context.Context) (string, error) { return "text", nil }); err != nil {
			return 0, err
		}
		return 0, sdk.Sleep(c, "wait", time.Minute)
	})
	e := newEnv(t, sdk.WithWorkflows(v1))
	h, err := v1.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	e.drain()

	// A deploy changes the step's result type; the stored string cannot become a struct.
	type fetched struct{ N int }
	v2 := sdk.New("versioned", func(c *sdk.Context, _ int) (int, error) {
		f, err := sdk.Step(c, "fetch", func(context.Context) (fetched, error) { return fetched{1}, nil })
		return f.N, err
	})
	eng2, err := sdk.NewEngine(e.store, sdk.WithClock(e.clock), sdk.WithWorkflows(v2))
	require.NoError(t, err)
	e.eng = eng2
	e.clock.Advance(time.Minute)
	e.drain()
	w := e.state(h.ID())
	require.Equal(t, storage.StateFailed, w.State)
	for _, want := range []string{`"versioned"`, `"fetch"`, "sdk_test.fetched"} {
		require.Contains(t, w.LastError, want)
	}
}

func TestUndecodableInputFailsTheWorkflow(t *testing.T) {
	t.Parallel()
	wf := sdk.New("typed.input", func(c *sdk.Context, in order) (int, error) { return in.Total, nil })
	e := newEnv(t, sdk.WithWorkflows(wf))
	// Written by another program with a different input type.
	_, _, err := e.store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "typed.input", Key: "k", Input: []byte(`"not an order"`), Now: t0, RunAt: t0})
	require.NoError(t, err)
	e.drain()
	w, err := e.store.FindWorkflow(ctx, "typed.input", "k")
	require.NoError(t, err)
	require.Equal(t, storage.StateFailed, w.State)
	require.Contains(t, w.LastError, "sdk_test.order")
	require.Contains(t, w.LastError, `"typed.input"`)
}

func TestPanicsBecomeErrors(t *testing.T) {
	t.Parallel()
	wf := sdk.New("panics", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "p", func(context.Context) (int, error) { panic("kaboom") }, sdk.WithRetry(sdk.NoRetry))
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	e.drain()
	w := e.state(h.ID())
	require.Equal(t, storage.StateStalled, w.State)
	require.True(t, strings.Contains(w.LastError, "kaboom"))
}
