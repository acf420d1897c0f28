package sdktest_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/sdktest"
)

// TestCheckout is the test the README shows, word for word.
func TestCheckout(t *testing.T) {
	env := sdktest.New(t, checkout) // memory store, fake clock at sdktest.DefaultStart, no goroutines
	env.FailStep("checkout", "charge", 2, errors.New("payment provider unavailable"))

	h, err := checkout.Start(t.Context(), env.Engine(), "order-1", Order{ID: "o1", Amount: 4200})
	require.NoError(t, err)
	env.Drain() // two retries, then the 30-day sleep: the clock jumps, nothing waits
	env.RequireState(h, sdk.StateIdle)
	require.Equal(t, "message", env.Describe(h).Waiting)

	require.NoError(t, env.Send(h, "confirm", true))
	env.Drain()
	out, err := sdktest.Result(env, h) // never blocks: fails the test if h is not final
	require.NoError(t, err)
	require.Equal(t, "keep ch_o1", out)
	require.Equal(t, 3, env.Step(h, "charge").Attempts)
	require.Len(t, env.Errors(h), 2)
}
