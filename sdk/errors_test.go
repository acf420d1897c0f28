package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// quotaError is a user's error type that a RetryOn predicate recognises by type assertion.
type quotaError struct{ resetIn time.Duration }

func (q *quotaError) Error() string { return fmt.Sprintf("quota exceeded, resets in %v", q.resetIn) }

func TestErrorRecordsKeepTheUsersErrorTypeAndRetryOnSeesIt(t *testing.T) {
	t.Parallel()
	var seen []error
	policy := sdk.Policy{Name: "quota", MaxAttempts: 2, Base: time.Second, Cap: time.Second, RetryOn: func(err error) bool {
		seen = append(seen, err)
		_, ok := err.(*quotaError) // a type assertion, not errors.As: it must get the user's error
		return ok
	}}
	step := sdk.New("err.step", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "call", func(context.Context) (int, error) { return 0, &quotaError{time.Minute} }, sdk.WithRetry(policy))
	})
	until := sdk.New("err.until", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.WaitUntil(c, "ready", func(context.Context) (bool, error) { return false, &quotaError{time.Second} })
	})
	cont := sdk.New("err.continue", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.ContinueIf(c, "go", func(context.Context) (bool, error) { return false, &quotaError{time.Hour} })
	})
	e := newEnv(t, sdk.WithWorkflows(step, until, cont))
	hs, err := step.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	hu, err := until.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	hc, err := cont.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.settle(hs.ID(), time.Second)
	e.settle(hu.ID(), time.Second)
	e.settle(hc.ID(), time.Second)

	require.Len(t, seen, 2, "RetryOn is asked once per failure")
	for _, err := range seen {
		require.IsType(t, &quotaError{}, err, "RetryOn must receive the step's own error")
	}
	for _, c := range []struct {
		id                  int64
		step, message, kind string
	}{
		{hs.ID(), "call", "quota exceeded, resets in 1m0s", "step"},
		{hu.ID(), "until$ready", "quota exceeded, resets in 1s", "until"},
		{hc.ID(), "continue$go", "quota exceeded, resets in 1h0m0s", "continue"},
	} {
		recs := e.errors(c.id)
		require.NotEmpty(t, recs, c.kind)
		for i, rec := range recs {
			require.Equal(t, "*sdk_test.quotaError", rec.Type, "%s record %d type", c.kind, i)
			require.Equal(t, c.message, rec.Message, "%s record %d message: the user's, without the SDK's prefix", c.kind, i)
			require.Equal(t, c.step, rec.Step, "%s record %d step", c.kind, i)
			require.Equal(t, i+1, rec.Attempt, "%s record %d attempt", c.kind, i)
		}
		require.Equal(t, storage.StateStalled, e.state(c.id).State, c.kind)
	}
}

func TestPanicIsRecordedAsAPanicError(t *testing.T) {
	t.Parallel()
	wf := sdk.New("err.panic", func(c *sdk.Context, _ int) (int, error) {
		return sdk.Step(c, "boom", func(context.Context) (int, error) { panic("kaboom") }, sdk.WithRetry(sdk.NoRetry))
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.drain()
	recs := e.errors(h.ID())
	require.Len(t, recs, 1)
	require.Equal(t, "*sdk.PanicError", recs[0].Type)
	require.True(t, strings.HasPrefix(recs[0].Message, "panic: kaboom"), recs[0].Message)
}

func TestErrorSnapshotKeepsEveryKeyAndMarksValuesThatDoNotFit(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 15<<10) // a legal value (under 16 KiB) of which five cannot fit in 64 KiB
	wf := sdk.New("err.snapshot", func(c *sdk.Context, _ int) (int, error) {
		for i := range 8 {
			if err := sdk.Set(c, fmt.Sprintf("big%d", i), big); err != nil {
				return 0, err
			}
		}
		if err := sdk.Set(c, "small", 42); err != nil {
			return 0, err
		}
		return sdk.Step(c, "fail", func(context.Context) (int, error) { return 0, errors.New("no") }, sdk.WithRetry(sdk.NoRetry))
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.drain()
	recs := e.errors(h.ID())
	require.Len(t, recs, 1)
	snap := recs[0].Values
	require.LessOrEqual(t, len(snap), 64<<10, "the snapshot is capped at 64 KiB")
	var got map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(snap, &got))
	require.Len(t, got, 9, "every key is present")
	require.JSONEq(t, "42", string(got["small"]))
	whole, marked := 0, 0
	for i := range 8 {
		v := got[fmt.Sprintf("big%d", i)]
		var s string
		if json.Unmarshal(v, &s) == nil {
			require.Equal(t, big, s)
			whole++
			continue
		}
		require.JSONEq(t, fmt.Sprintf(`{"$omitted_bytes":%d}`, len(big)+2), string(v), "a value that does not fit is replaced by a marker with its size")
		marked++
	}
	require.Equal(t, 4, whole, "as many whole values as fit")
	require.Equal(t, 4, marked)
}

func TestErrorSnapshotWithMoreKeysThanFit(t *testing.T) {
	t.Parallel()
	wf := sdk.New("err.keys", func(c *sdk.Context, _ int) (int, error) {
		for i := range 1200 {
			if err := sdk.Set(c, fmt.Sprintf("%s%04d", strings.Repeat("k", 90), i), i); err != nil {
				return 0, err
			}
		}
		return sdk.Step(c, "fail", func(context.Context) (int, error) { return 0, errors.New("no") }, sdk.WithRetry(sdk.NoRetry))
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.drain()
	recs := e.errors(h.ID())
	require.Len(t, recs, 1)
	require.LessOrEqual(t, len(recs[0].Values), 64<<10)
	var got map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(recs[0].Values, &got))
	var omitted int
	require.NoError(t, json.Unmarshal(got["$omitted_keys"], &omitted), "the snapshot says how many keys it left out")
	require.Equal(t, 1200, len(got)-1+omitted, "kept plus omitted keys account for every key")
}

func TestWorkflowLevelCompositeKeepsABudgetPerNamedPolicy(t *testing.T) {
	t.Parallel()
	// Runs fail with alternating errors; each policy allows 3 runs in all (2 failures retried).
	seq := []error{errRateLimited, errors.New("x"), errRateLimited, errors.New("y"), nil}
	runs := 0
	policy := sdk.Composite{
		{Name: "rate", MaxAttempts: 3, Base: time.Minute, Cap: time.Minute, RetryOn: sdk.RetryOnErrors(errRateLimited)},
		{Name: "other", MaxAttempts: 3, Base: time.Second, Cap: time.Second},
	}
	wf := sdk.New("wf.composite", func(c *sdk.Context, _ int) (int, error) {
		err := seq[runs]
		runs++
		return runs, err
	}, sdk.WithRetry(policy))
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	// With one shared counter the fourth failure would have been the third charged to one
	// budget of 3 and failed the workflow.
	out, err := h.Result(ctx)
	require.NoError(t, err, "each named policy has its own budget at workflow level")
	require.Equal(t, 5, out)
	require.Equal(t, 4, e.state(h.ID()).Attempt, "Attempt still counts every failed run")
}

func TestWorkflowRetryGivesTheWorkflowBudgetsAFreshStart(t *testing.T) {
	t.Parallel()
	fail := true
	wf := sdk.New("wf.budget.retry", func(c *sdk.Context, _ int) (int, error) {
		if fail {
			return 0, errors.New("down")
		}
		return 7, nil
	}, sdk.WithRetry(sdk.Composite{{Name: "all", MaxAttempts: 2, Base: time.Second, Cap: time.Second}}))
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	require.Equal(t, storage.StateFailed, e.state(h.ID()).State)
	require.NoError(t, h.Retry(ctx))
	e.drain() // fails once more: the fresh budget allows a retry
	require.Equal(t, storage.StateIdle, e.state(h.ID()).State, "after Retry the budget starts again")
	fail = false
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, out)
}

func TestSDKCallsInsideAStepFunctionFailTheWorkflow(t *testing.T) {
	t.Parallel()
	nested := map[string]func(c *sdk.Context) error{
		"step": func(c *sdk.Context) error {
			_, err := sdk.Step(c, "inner", func(context.Context) (int, error) { return 1, nil })
			return err
		},
		"sleep":  func(c *sdk.Context) error { return sdk.Sleep(c, "inner", time.Second) },
		"branch": func(c *sdk.Context) error { return sdk.Branch(c, "inner", func(*sdk.BranchScope) error { return nil }) },
	}
	var defs []sdk.Definition
	hs := map[string]*sdk.Workflow[int, int]{}
	innerRan := 0
	for what, call := range nested {
		wf := sdk.New("nested."+what, func(c *sdk.Context, _ int) (int, error) {
			return sdk.Step(c, "outer", func(context.Context) (int, error) {
				_ = call(c) // even a swallowed error must not let the inner call record anything
				innerRan++
				return 1, nil
			})
		})
		hs[what] = wf
		defs = append(defs, wf)
	}
	e := newEnv(t, sdk.WithWorkflows(defs...))
	for what, wf := range hs {
		h, err := wf.Start(ctx, e.eng, "k", 0)
		require.NoError(t, err)
		e.drain()
		w, steps, err := e.store.Load(ctx, h.ID())
		require.NoError(t, err)
		require.Equal(t, storage.StateFailed, w.State, what)
		require.Contains(t, w.LastError, `called inside the function of step "outer"`, what)
		require.Contains(t, w.LastError, `"inner"`, what)
		require.Empty(t, steps, "%s: neither the inner nor the outer call recorded a step", what)
	}
	require.Equal(t, len(nested), innerRan)
}
