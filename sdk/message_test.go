package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

type parcel struct {
	ID  string
	Qty int
}

// newMemEnv is newEnv over the in-memory store.
func newMemEnv(t *testing.T, opts ...sdk.Option) *env {
	t.Helper()
	return newEnvOn(t, memory.New(), opts...)
}

func TestReceiveBeforeAndAfterTheWorkflowWaits(t *testing.T) {
	t.Parallel()
	wf := sdk.New("mailbox", func(c *sdk.Context, _ int) ([]parcel, error) {
		var got []parcel
		for i := range 3 {
			o, err := sdk.Receive[parcel](c, fmt.Sprint("o", i), "parcels")
			if err != nil {
				return nil, err
			}
			got = append(got, o)
		}
		return got, nil
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	// Sent before the workflow ever ran.
	require.NoError(t, sdk.Send(ctx, e.eng, h, "parcels", parcel{"a", 1}))
	require.Equal(t, 1, e.drain())
	w := e.state(h.ID())
	require.Equal(t, storage.StateIdle, w.State)
	require.Equal(t, storage.WaitMessage, w.Wait.Kind)
	require.Equal(t, "parcels", string(w.Wait.Data))
	require.True(t, w.RunAt.IsZero(), "a receive without timeout has no timer")

	// Sent while it waits: woken at once, no clock movement needed.
	require.NoError(t, sdk.Send(ctx, e.eng, h, "parcels", parcel{"b", 2}))
	require.NoError(t, sdk.Send(ctx, e.eng, h, "parcels", parcel{"c", 3}))
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []parcel{{"a", 1}, {"b", 2}, {"c", 3}}, out)
}

func TestReceiveTopicsAreSeparateAndOtherTopicsDoNotWake(t *testing.T) {
	t.Parallel()
	wf := sdk.New("two-topics", func(c *sdk.Context, _ int) (string, error) {
		a, err := sdk.Receive[string](c, "a", "alpha")
		if err != nil {
			return "", err
		}
		b, err := sdk.Receive[string](c, "b", "beta")
		if err != nil {
			return "", err
		}
		return a + b, nil
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.NoError(t, sdk.Send(ctx, e.eng, h, "beta", "B"))
	require.Equal(t, 0, e.drain(), "a message on another topic does not wake the workflow")
	require.NoError(t, sdk.Send(ctx, e.eng, h, "alpha", "A"))
	require.Equal(t, 1, e.drain(), "beta was waiting already: one run takes both")
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "AB", out)
}

func TestReceiveTimeoutIsAnErrorTheWorkflowHandles(t *testing.T) {
	t.Parallel()
	wf := sdk.New("timeout", func(c *sdk.Context, _ int) (string, error) {
		v, err := sdk.Receive[string](c, "reply", "replies", sdk.WaitTimeout(time.Hour))
		switch {
		case err == nil:
			return "got " + v, nil
		case errors.Is(err, sdk.ErrWaitTimeout):
			return "timed out", nil
		}
		return "", err
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	require.Equal(t, 1, e.drain())
	require.Equal(t, t0.Add(time.Hour), e.state(h.ID()).RunAt)
	e.clock.Advance(time.Hour)
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "timed out", out)
	// A message after the end is refused: the workflow is final.
	err = sdk.Send(ctx, e.eng, h, "replies", "late")
	require.ErrorIs(t, err, sdk.ErrWrongState)
}

func TestSendWithMessageKeyIsIdempotent(t *testing.T) {
	t.Parallel()
	wf := sdk.New("idem", func(c *sdk.Context, _ int) ([]int, error) {
		var got []int
		for i := range 2 {
			v, err := sdk.Receive[int](c, fmt.Sprint(i), "n")
			if err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, sdk.Send(ctx, e.eng, h, "n", 1, sdk.MessageKey("evt-1")))
	}
	require.Equal(t, 1, e.drain())
	require.NoError(t, sdk.Send(ctx, e.eng, h, "n", 1, sdk.MessageKey("evt-1")), "a resend after receipt is still a no-op")
	require.Equal(t, 0, e.drain())
	require.NoError(t, sdk.Send(ctx, e.eng, h, "n", 2, sdk.MessageKey("evt-2")))
	require.Equal(t, 1, e.drain())
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, out)
}

// A crash between the receive and the next step: the replay returns the same message, and
// the second message stays for the second receive.
func TestReceiveReplayReturnsTheSameMessage(t *testing.T) {
	t.Parallel()
	crash := true
	var seen []string
	wf := sdk.New("replay", func(c *sdk.Context, _ int) (string, error) {
		v, err := sdk.Receive[string](c, "first", "t")
		if err != nil {
			return "", err
		}
		seen = append(seen, v)
		return sdk.Step(c, "after", func(context.Context) (string, error) {
			if crash {
				crash = false
				return "", sdk.Permanent(fmt.Errorf("boom"))
			}
			return v, nil
		}, sdk.WithRetry(sdk.NoRetry))
	})
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	require.NoError(t, sdk.Send(ctx, e.eng, h, "t", "one"))
	require.NoError(t, sdk.Send(ctx, e.eng, h, "t", "two"))
	e.drain()
	require.Equal(t, storage.StateStalled, e.state(h.ID()).State)
	require.NoError(t, h.Retry(ctx))
	e.drain()
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "one", out)
	require.Equal(t, []string{"one", "one"}, seen, "the replay received the same message, not the next")
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	wf := sdk.New("errs", func(c *sdk.Context, _ int) (int, error) { return 1, nil })
	e := newMemEnv(t, sdk.WithWorkflows(wf))
	require.ErrorIs(t, sdk.Send(ctx, e.eng, sdk.WorkflowID(999), "t", 1), sdk.ErrNotFound)
	h, err := wf.Start(ctx, e.eng, "k", 0)
	require.NoError(t, err)
	require.ErrorIs(t, sdk.Send(ctx, e.eng, h, "bad$topic", 1), sdk.ErrInvalid)
	require.ErrorIs(t, sdk.Send(ctx, e.eng, h, "", 1), sdk.ErrInvalid)
	require.ErrorIs(t, sdk.Send(ctx, e.eng, h, "t", func() {}), sdk.ErrInvalid, "an unencodable value")
}
