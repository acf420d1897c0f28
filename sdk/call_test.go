package sdk_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
)

func TestCallReturnsTheChildsTypedOutput(t *testing.T) {
	t.Parallel()
	double := sdk.New("double", func(c *sdk.Context, n int) (int, error) { return 2 * n, nil })
	parent := sdk.New("caller", func(c *sdk.Context, n int) (string, error) {
		v, err := sdk.Call(c, "twice", double, n)
		if err != nil {
			return "", err
		}
		return fmt.Sprint("got ", v), nil
	})
	e := newMemEnv(t, sdk.WithWorkflows(double, parent))
	h, err := parent.Start(ctx, e.eng, "p", 21)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "got 42", out)

	child, err := double.Lookup(ctx, e.eng, "p$twice$call")
	require.NoError(t, err, "the child is keyed <parent key>$<name>$call")
	v, err := child.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, v)

}

func TestCallOfAFailedChildReturnsAnErrorNamingIt(t *testing.T) {
	t.Parallel()
	boom := sdk.New("boom", func(c *sdk.Context, _ int) (int, error) {
		return 0, sdk.Permanent(errors.New("card declined"))
	}, sdk.WithRetry(sdk.NoRetry))
	parent := sdk.New("handles", func(c *sdk.Context, _ int) (string, error) {
		_, err := sdk.Call(c, "charge", boom, 1)
		var we *sdk.WorkflowError
		if errors.As(err, &we) && errors.Is(err, sdk.ErrFailed) {
			return "child " + we.Key + " failed: " + we.Message, nil
		}
		return "", err
	})
	e := newMemEnv(t, sdk.WithWorkflows(boom, parent))
	h, err := parent.Start(ctx, e.eng, "p", 0)
	require.NoError(t, err)
	e.settle(h.ID(), time.Second)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Contains(t, out, "child p$charge$call failed: card declined")
}
