package sdk

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPolicyDelayDoublesAndCaps(t *testing.T) {
	p := Policy{MaxAttempts: 10, Base: time.Second, Cap: 30 * time.Second}
	var got []time.Duration
	for n := 1; n <= 7; n++ {
		got = append(got, p.Delay(n))
	}
	require.Equal(t, []time.Duration{1, 2, 4, 8, 16, 30, 30}, scale(got, time.Second))
	require.Equal(t, 30*time.Second, p.Delay(1000), "no overflow for large n")
}

func scale(ds []time.Duration, unit time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d / unit
	}
	return out
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	p := Policy{MaxAttempts: 10, Base: 8 * time.Second, Cap: time.Minute, Jitter: true}
	for range 1000 {
		d := p.delayFor(1)
		require.GreaterOrEqual(t, d, 4*time.Second)
		require.LessOrEqual(t, d, 8*time.Second)
	}
}

func TestPolicyBudgetAndPermanent(t *testing.T) {
	p := Policy{Name: "p", MaxAttempts: 3, Base: time.Second}
	_, _, again := p.decide(errors.New("x"), map[string]int{"p": 1})
	require.True(t, again, "second failure of three attempts retries")
	_, _, again = p.decide(errors.New("x"), map[string]int{"p": 2})
	require.False(t, again, "third failure spends the budget")
	_, _, again = p.decide(Permanent(errors.New("x")), nil)
	require.False(t, again)
	k, _, again := Composite{{Name: "only", MaxAttempts: 5, RetryOn: func(error) bool { return false }}}.decide(errors.New("x"), nil)
	require.False(t, again, "an error no policy accepts is not retried")
	require.Equal(t, "unmatched", k)
}
