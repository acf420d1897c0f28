package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/sdktest"
	"github.com/chronoforge/chronoforge/storage/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

const month = 30 * 24 * time.Hour

// sleeper sleeps d, then returns how long it slept by the engine's clock.
var sleeper = sdk.New("sleeper", func(c *sdk.Context, d time.Duration) (time.Duration, error) {
	start := c.Now()
	if err := sdk.Sleep(c, "nap", d); err != nil {
		return 0, err
	}
	return c.Now().Sub(start), nil
})

// greeter runs one step, "greet", and returns its result.
var greeter = sdk.New("greeter", func(c *sdk.Context, name string) (string, error) {
	return sdk.Step(c, "greet", func(context.Context) (string, error) { return "hello " + name, nil })
})

// inbox waits for one message on "in" and returns it.
var inbox = sdk.New("inbox", func(c *sdk.Context, _ struct{}) (string, error) {
	return sdk.Receive[string](c, "msg", "in")
})

// recorder is a TB that records Fatalf instead of failing the test. Like testing.T's it
// stops the goroutine that calls it, so code under test runs through run, in a goroutine of
// its own that run waits for.
type recorder struct {
	t      *testing.T
	mu     sync.Mutex
	fatals []string
}

func (r *recorder) Helper()          {}
func (r *recorder) Cleanup(f func()) { r.t.Cleanup(f) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls fn in a goroutine and returns the Fatalf messages it recorded meanwhile.
func (r *recorder) run(fn func()) []string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.fatals
	r.fatals = nil
	return out
}

func start[In, Out any](t *testing.T, env *sdktest.Env, wf *sdk.Workflow[In, Out], key string, in In) *sdk.Handle[Out] {
	t.Helper()
	h, err := wf.Start(ctx, env.Engine(), key, in)
	require.NoError(t, err)
	return h
}

func TestDrainJumpsALongSleep(t *testing.T) {
	t.Parallel()
	env := sdktest.New(t, sleeper)
	require.Equal(t, sdktest.DefaultStart, env.Now())
	h := start(t, env, sleeper, "a", month)

	runs := env.Drain()
	require.Equal(t, 2, runs, "one run to sleep, one to finish")
	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, month, out.Truncate(time.Microsecond))
	require.False(t, env.Now().Before(sdktest.DefaultStart.Add(month)))
	require.True(t, env.Now().Before(sdktest.DefaultStart.Add(month+time.Microsecond)), "the clock stops at the wake-up, at %v", env.Now())
	nap := env.Step(h, "sleep$nap")
	require.Equal(t, sdktest.StepCompleted, nap.State)
	require.Zero(t, env.Drain(), "nothing left to run")
}

func TestAdvanceDoesNotJump(t *testing.T) {
	t.Parallel()
	env := sdktest.New(t, sleeper)
	h := start(t, env, sleeper, "a", time.Hour)

	require.Equal(t, 1, env.RunDue())
	require.Equal(t, sdk.StateIdle, env.State(h))
	require.Equal(t, "sleep", env.Describe(h).Waiting)

	require.Zero(t, env.Advance(59*time.Minute), "the sleep is not over")
	env.RequireState(h, sdk.StateIdle)
	require.True(t, env.Now().Before(sdktest.DefaultStart.Add(time.Hour)))

	require.Equal(t, 1, env.Advance(time.Minute))
	env.RequireState(h, sdk.StateCompleted)
}

func TestDrainStopsAtTheHorizon(t *testing.T) {
	t.Parallel()
	rec := &recorder{t: t}
	env := sdktest.NewWith(rec, sdktest.Options{Horizon: 7 * 24 * time.Hour}, sleeper)
	h := start(t, env, sleeper, "too-long", month)

	fatals := rec.run(func() { env.Drain() })
	require.Len(t, fatals, 1)
	require.Contains(t, fatals[0], "past the horizon")
	require.Contains(t, fatals[0], `"sleeper" key "too-long"`, "the message names the pending workflow")
	require.Contains(t, fatals[0], `waiting sleep in "sleep$nap"`)
	require.Equal(t, sdk.StateIdle, env.State(h))
	require.Equal(t, sdktest.DefaultStart, env.Now(), "the clock did not move past the horizon")
}

func TestDrainBoundsRuns(t *testing.T) {
	t.Parallel()
	ticker := sdk.New("ticker", func(c *sdk.Context, _ struct{}) (struct{}, error) {
		return struct{}{}, sdk.Repeat(c, "tick", sdk.Every(time.Minute), nil, func(context.Context, time.Time) error { return nil })
	})
	rec := &recorder{t: t}
	env := sdktest.NewWith(rec, sdktest.Options{MaxRuns: 50}, ticker)
	start(t, env, ticker, "forever", struct{}{})

	fatals := rec.run(func() { env.Drain() })
	require.Len(t, fatals, 1)
	require.Contains(t, fatals[0], "50 runs")
	require.Contains(t, fatals[0], `"ticker" key "forever"`)
	// 50 ticks a minute apart ran; the 51st, due at minute 50, was refused and given back.
	require.Equal(t, sdktest.DefaultStart.Add(50*time.Minute), env.Now().Truncate(time.Microsecond))
	require.Equal(t, 1, env.RunDue())

	// Advance drives a Repeat one tick at a time.
	require.Equal(t, 1, env.Advance(time.Minute))
	require.Zero(t, env.Advance(30*time.Second))
}

func TestOverrideStep(t *testing.T) {
	t.Parallel()
	env := sdktest.New(t, greeter)
	env.OverrideStep("greeter", "greet", func(context.Context) (string, error) { return "stubbed", nil })
	h := start(t, env, greeter, "a", "ann")
	env.Drain()
	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "stubbed", out)

	// Removed, the step runs as written.
	env.OverrideStep("greeter", "greet", nil)
	h = start(t, env, greeter, "b", "bob")
	env.Drain()
	out, err = sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "hello bob", out)

	// Another result type: the SDK stalls the workflow, naming the mismatch.
	env.OverrideStep("greeter", "greet", func(context.Context) (int, error) { return 1, nil })
	h = start(t, env, greeter, "c", "cat")
	env.Drain()
	env.RequireState(h, sdk.StateStalled)
	require.Contains(t, env.Step(h, "greet").LastError, "not a func(context.Context) (string, error)")
}

func TestOverrideStepRefusesOtherShapes(t *testing.T) {
	t.Parallel()
	rec := &recorder{t: t}
	env := sdktest.New(rec, greeter)
	for _, fn := range []any{
		"not a function",
		func() (string, error) { return "", nil },
		func(context.Context) string { return "" },
		func(context.Context) (string, string) { return "", "" },
	} {
		fatals := rec.run(func() { env.OverrideStep("greeter", "greet", fn) })
		require.Len(t, fatals, 1, "%T", fn)
		require.Contains(t, fatals[0], "not a func(context.Context) (T, error)")
	}
}

func TestFailStep(t *testing.T) {
	t.Parallel()
	env := sdktest.New(t, greeter)
	boom := errors.New("boom")

	// Two failures: the default policy (3 attempts) retries into a success.
	env.FailStep("greeter", "greet", 2, boom)
	h := start(t, env, greeter, "a", "ann")
	env.Drain()
	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "hello ann", out)
	require.Equal(t, 3, env.Step(h, "greet").Attempts)
	errs := env.Errors(h)
	require.Len(t, errs, 2)
	for i, e := range errs {
		require.Equal(t, "greet", e.Step)
		require.Equal(t, i+1, e.Attempt)
		require.Equal(t, "boom", e.Message)
	}

	// Three failures spend the budget: the workflow stalls; a retry runs the step again,
	// and its fourth attempt is not injected.
	env.FailStep("greeter", "greet", 3, boom)
	h = start(t, env, greeter, "b", "bob")
	env.Drain()
	env.RequireState(h, sdk.StateStalled)
	require.Equal(t, sdktest.StepFailed, env.Step(h, "greet").State)
	_, err = sdktest.Result(env, h)
	require.ErrorIs(t, err, sdk.ErrStalled)
	require.NoError(t, env.Retry(h))
	env.Drain()
	out, err = sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "hello bob", out)

	// Permanent: stalls at the first attempt.
	env.FailStep("greeter", "greet", 1, sdk.Permanent(boom))
	h = start(t, env, greeter, "c", "cat")
	env.Drain()
	env.RequireState(h, sdk.StateStalled)
	require.Equal(t, 1, env.Step(h, "greet").Attempts)

	// Removed: nothing fails.
	env.FailStep("greeter", "greet", 0, nil)
	h = start(t, env, greeter, "d", "dan")
	env.Drain()
	env.RequireState(h, sdk.StateCompleted)
}

func TestFailStepAndOverrideTogether(t *testing.T) {
	t.Parallel()
	env := sdktest.New(t, greeter)
	env.FailStep("greeter", "greet", 1, errors.New("flaky"))
	env.OverrideStep("greeter", "greet", func(context.Context) (string, error) { return "stubbed", nil })
	h := start(t, env, greeter, "a", "ann")
	env.Drain()
	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "stubbed", out, "after the injected failure the override runs")
	var stored string
	require.NoError(t, env.Step(h, "greet").Decode(&stored))
	require.Equal(t, "stubbed", stored)
}

func TestResultOfAnUnfinishedWorkflowFails(t *testing.T) {
	t.Parallel()
	rec := &recorder{t: t}
	env := sdktest.New(rec, inbox)
	h := start(t, env, inbox, "a", struct{}{})
	require.Equal(t, 1, env.Drain())
	require.Equal(t, "message", env.Describe(h).Waiting)

	fatals := rec.run(func() { _, _ = sdktest.Result(env, h) })
	require.Len(t, fatals, 1)
	require.Contains(t, fatals[0], "is idle, not finished")
	require.Contains(t, fatals[0], `waiting message in receive$msg`)

	require.NoError(t, env.Send(h, "in", "hi"))
	require.Equal(t, 1, env.RunDue(), "the message makes it due at once")
	var out string
	fatals = rec.run(func() { out, _ = sdktest.Result(env, h) })
	require.Empty(t, fatals)
	require.Equal(t, "hi", out)
	require.Equal(t, sdktest.DefaultStart, env.Now(), "no time passed")
	var got string
	require.NoError(t, env.Step(h, "receive$msg").Decode(&got))
	require.Equal(t, "hi", got)

	require.ErrorIs(t, env.Send(h, "in", "late"), sdk.ErrWrongState, "control calls return the engine's error")
	require.ErrorIs(t, env.Signal(h), sdk.ErrWrongState)
}

func TestRequireStateFails(t *testing.T) {
	t.Parallel()
	rec := &recorder{t: t}
	env := sdktest.New(rec, sleeper)
	h := start(t, env, sleeper, "a", time.Hour)
	env.RunDue()
	fatals := rec.run(func() { env.RequireState(h, sdk.StateCompleted) })
	require.Len(t, fatals, 1)
	require.Contains(t, fatals[0], "is idle, want completed (waiting sleep in sleep$nap; next run")
}

func TestOptionsStoreAndStart(t *testing.T) {
	t.Parallel()
	st := memory.New()
	t.Cleanup(func() { require.NoError(t, st.Close()) }) // the env leaves a given store open
	begin := time.Date(2040, time.June, 1, 8, 0, 0, 0, time.UTC)
	env := sdktest.NewWith(t, sdktest.Options{Store: st, Start: begin}, sleeper)
	require.Same(t, st, env.Store())
	require.Equal(t, begin, env.Now())

	h := start(t, env, sleeper, "a", 24*time.Hour)
	env.Drain()
	env.RequireState(h, sdk.StateCompleted)
	wf, err := st.GetWorkflow(ctx, h.ID())
	require.NoError(t, err)
	require.Equal(t, begin.Add(24*time.Hour), wf.FinishedAt.Truncate(time.Microsecond))
}

func TestChildrenAndMerge(t *testing.T) {
	t.Parallel()
	parent := sdk.New("parent", func(c *sdk.Context, n int) (int, error) {
		err := sdk.Branch(c, "fan", func(b *sdk.BranchScope) error {
			for i := range n {
				if err := sdk.Spawn(b, fmt.Sprint(i), sleeper, time.Duration(i+1)*24*time.Hour); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "fan"); err != nil {
			return 0, err
		}
		done := 0
		for res, err := range sdk.BranchResults[time.Duration](c, "fan", 0) {
			if err != nil {
				return 0, err
			}
			if res.State == sdk.StateCompleted {
				done++
			}
		}
		return done, nil
	})
	env := sdktest.New(t, parent, sleeper)
	h := start(t, env, parent, "p", 3)
	runs := env.Drain()

	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, 3, out)
	kids := env.Children(h)
	require.Len(t, kids, 3)
	for i, k := range kids {
		require.Equal(t, "sleeper", k.Name)
		require.Equal(t, fmt.Sprintf("p$fan$%d", i), k.Key)
		require.Equal(t, sdk.StateCompleted, k.State)
		require.True(t, k.Child)
	}
	require.Less(t, runs, 20, "probes while the children sleep are not jumped to one by one")
	require.Empty(t, env.Children(sdk.WorkflowID(kids[0].ID)), "a leaf has no children")
}

func TestCallParentAndChildCompleteInOneDrain(t *testing.T) {
	t.Parallel()
	caller := sdk.New("caller", func(c *sdk.Context, d time.Duration) (string, error) {
		slept, err := sdk.Call(c, "nap", sleeper, d)
		if err != nil {
			return "", err
		}
		return "child slept " + slept.Truncate(time.Hour).String(), nil
	})
	env := sdktest.New(t, caller, sleeper)
	h := start(t, env, caller, "c", month)
	runs := env.Drain()

	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "child slept 720h0m0s", out)
	kids := env.Children(h)
	require.Len(t, kids, 1)
	require.Equal(t, "c$nap$call", kids[0].Key)
	require.Equal(t, sdk.StateCompleted, kids[0].State)
	require.Less(t, runs, 10, "a month of merge probes is not run one by one")
	require.Equal(t, sdktest.StepCompleted, env.Step(h, "call$nap").State)
}

func TestCallOfAStallingChild(t *testing.T) {
	t.Parallel()
	caller := sdk.New("caller", func(c *sdk.Context, who string) (string, error) {
		out, err := sdk.Call(c, "greet", greeter, who)
		if errors.Is(err, sdk.ErrStalled) {
			return "gave up", nil
		}
		return out, err
	})
	env := sdktest.New(t, caller, greeter)
	env.FailStep("greeter", "greet", 1, sdk.Permanent(errors.New("down")))
	h := start(t, env, caller, "c", "ann")
	env.Drain()

	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "gave up", out, "the parent's merge probe saw the stalled child")
	kids := env.Children(h)
	require.Len(t, kids, 1)
	require.Equal(t, sdk.StateStalled, kids[0].State)
	require.True(t, strings.Contains(kids[0].LastError, "down"))
}

func TestCancel(t *testing.T) {
	t.Parallel()
	env := sdktest.New(t, sleeper)
	h := start(t, env, sleeper, "a", month)
	env.RunDue()
	require.NoError(t, env.Cancel(h))
	require.Zero(t, env.Drain())
	_, err := sdktest.Result(env, h)
	require.ErrorIs(t, err, sdk.ErrCancelled)
	require.ErrorIs(t, env.Cancel(h), sdk.ErrWrongState)
	require.Equal(t, sdktest.DefaultStart, env.Now(), "a cancelled sleep leaves no timer to jump to")
}

func TestSignalWakesAContinueIf(t *testing.T) {
	t.Parallel()
	var open atomic.Bool
	gate := sdk.New("gate", func(c *sdk.Context, _ struct{}) (string, error) {
		if err := sdk.ContinueIf(c, "open", func(context.Context) (bool, error) { return open.Load(), nil }); err != nil {
			return "", err
		}
		return "through", nil
	})
	env := sdktest.New(t, gate)
	h := start(t, env, gate, "g", struct{}{})
	require.Equal(t, 1, env.Drain(), "a signal wait has no timer: Drain settles at once")
	require.Equal(t, "signal", env.Describe(h).Waiting)
	require.Equal(t, sdktest.DefaultStart, env.Now())

	open.Store(true)
	require.Zero(t, env.Drain(), "nothing runs until the signal")
	require.NoError(t, env.Signal(h))
	require.Equal(t, 1, env.Drain())
	out, err := sdktest.Result(env, h)
	require.NoError(t, err)
	require.Equal(t, "through", out)
}
