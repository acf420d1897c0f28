package sdk_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func echo(name string) *sdk.Workflow[string, string] {
	return sdk.New(name, func(c *sdk.Context, in string) (string, error) { return in, nil })
}

func TestRegistryRejectsInvalidAndDuplicateNames(t *testing.T) {
	t.Parallel()
	store := newEnv(t).store
	for _, tc := range []struct {
		name string
		defs []sdk.Definition
		want string
	}{
		{"empty name", []sdk.Definition{echo("")}, "empty"},
		{"dollar", []sdk.Definition{echo("a$b")}, "reserved"},
		{"control", []sdk.Definition{echo("a\nb")}, "control character"},
		{"too long", []sdk.Definition{echo(strings.Repeat("n", storage.MaxNameLen+1))}, "longer than"},
		{"duplicate", []sdk.Definition{echo("same"), echo("same")}, "registered twice"},
		{"nil fn", []sdk.Definition{sdk.New[int, int]("nilfn", nil)}, "nil function"},
		{"bad composite", []sdk.Definition{sdk.New("bad.policy", func(*sdk.Context, int) (int, error) { return 0, nil },
			sdk.WithRetry(sdk.Composite{{MaxAttempts: 2}}))}, "no Name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sdk.NewEngine(store, sdk.WithWorkflows(tc.defs...))
			require.ErrorIs(t, err, sdk.ErrInvalid)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestStartIsIdempotentAndTheStoredInputWins(t *testing.T) {
	t.Parallel()
	wf := echo("echo")
	e := newEnv(t, sdk.WithWorkflows(wf))
	h1, err := wf.Start(ctx, e.eng, "k", "first")
	require.NoError(t, err)
	h2, err := wf.Start(ctx, e.eng, "k", "second")
	require.NoError(t, err)
	require.Equal(t, h1.ID(), h2.ID())
	require.Equal(t, 1, e.drain())
	out, err := h2.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "first", out)

	h3, err := wf.Lookup(ctx, e.eng, "k")
	require.NoError(t, err)
	require.Equal(t, h1.ID(), h3.ID())
	_, err = wf.Lookup(ctx, e.eng, "missing")
	require.ErrorIs(t, err, sdk.ErrNotFound)
}

func TestBadStartInputWritesNothing(t *testing.T) {
	t.Parallel()
	wf := echo("echo")
	other := echo("not.registered")
	e := newEnv(t, sdk.WithWorkflows(wf))
	for _, tc := range []struct {
		key  string
		in   string
		want error
	}{
		{"", "x", sdk.ErrInvalid},
		{strings.Repeat("k", storage.MaxKeyLen+1), "x", sdk.ErrInvalid},
		{"a$b", "x", sdk.ErrInvalid},
		{"tab\tkey", "x", sdk.ErrInvalid},
		{"big", strings.Repeat("x", storage.MaxPayload), sdk.ErrTooLarge},
	} {
		_, err := wf.Start(ctx, e.eng, tc.key, tc.in)
		require.ErrorIs(t, err, tc.want, "key %.20q", tc.key)
	}
	_, err := other.Start(ctx, e.eng, "k", "x")
	require.ErrorIs(t, err, sdk.ErrUnregistered)
	require.Contains(t, err.Error(), "not.registered")

	all, err := e.store.ListWorkflows(ctx, storage.ListFilter{})
	require.NoError(t, err)
	require.Empty(t, all, "rejected starts must write nothing")
}

func TestCancelStopsARunInProgress(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	var after int
	var eng *sdk.Engine
	wf := sdk.New("cancellable", func(c *sdk.Context, _ int) (int, error) {
		_, err := sdk.Step(c, "block", func(ctx context.Context) (int, error) {
			close(entered)
			<-ctx.Done() // the step sees the cancellation through its context
			return 0, ctx.Err()
		})
		if err != nil {
			return 0, err
		}
		_, err = sdk.Step(c, "after", func(context.Context) (int, error) { after++; return 1, nil })
		return 1, err
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	eng = e.eng
	h, err := wf.Start(ctx, eng, "k", 1)
	require.NoError(t, err)
	done := make(chan int)
	go func() { done <- e.drain() }()
	<-entered
	require.NoError(t, h.Cancel(ctx))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop after Cancel")
	}
	require.Equal(t, 0, after)
	w := e.state(h.ID())
	require.Equal(t, storage.StateCancelled, w.State)
	_, err = h.Result(ctx)
	require.ErrorIs(t, err, sdk.ErrCancelled)
	require.ErrorIs(t, h.Cancel(ctx), storage.ErrWrongState)
	require.Empty(t, e.errors(h.ID()), "a cancelled step writes no failure")
}

func TestResultHonoursItsContext(t *testing.T) {
	t.Parallel()
	wf := echo("echo")
	e := newEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", "x")
	require.NoError(t, err)
	c, cancel := context.WithCancel(ctx)
	cancel()
	_, err = h.Result(c)
	require.ErrorIs(t, err, context.Canceled)
}

func TestAnotherDefinitionUnderARegisteredNameIsNamedAsSuch(t *testing.T) {
	t.Parallel()
	registered, other := echo("greet"), echo("greet")
	e := newEnv(t, sdk.WithWorkflows(registered))
	_, err := other.Start(ctx, e.eng, "k", "hi")
	require.ErrorIs(t, err, sdk.ErrUnregistered)
	require.ErrorContains(t, err, "another definition is registered under that name")
	_, err = echo("stranger").Start(ctx, e.eng, "k", "hi")
	require.ErrorContains(t, err, "add it with sdk.WithWorkflows", "a name nobody registered keeps its hint")
}

func TestSignalReportsAWorkflowItDidNotWake(t *testing.T) {
	t.Parallel()
	done := echo("signal.done")
	stalls := sdk.New("signal.stalls", func(c *sdk.Context, _ string) (string, error) {
		return sdk.Step(c, "no", func(context.Context) (string, error) { return "", sdk.Permanent(errors.New("no")) })
	})
	waits := sdk.New("signal.waits", func(c *sdk.Context, _ string) (string, error) {
		return "", sdk.ContinueIf(c, "go", func(context.Context) (bool, error) { return false, nil })
	})
	e := newEnv(t, sdk.WithWorkflows(done, stalls, waits))
	hd, err := done.Start(ctx, e.eng, "k", "x")
	require.NoError(t, err)
	hs, err := stalls.Start(ctx, e.eng, "k", "x")
	require.NoError(t, err)
	hw, err := waits.Start(ctx, e.eng, "k", "x")
	require.NoError(t, err)
	hc, err := waits.Start(ctx, e.eng, "cancelled", "x")
	require.NoError(t, err)
	e.drain()
	require.NoError(t, hc.Cancel(ctx))

	require.NoError(t, hw.Signal(ctx), "a waiting workflow is woken")
	for want, h := range map[storage.State]interface{ Signal(context.Context) error }{
		storage.StateCompleted: hd, storage.StateStalled: hs, storage.StateCancelled: hc,
	} {
		err := h.Signal(ctx)
		require.ErrorIs(t, err, sdk.ErrWrongState, "signal of a %s workflow", want)
		require.ErrorContains(t, err, "it is "+string(want))
	}
}
