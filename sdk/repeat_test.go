package sdk_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// ticker is a Repeat workflow that records the ticks fn saw and the time each ran.
type ticker struct {
	mu    sync.Mutex
	ticks []time.Time
	ran   []time.Time
	fail  func(tick time.Time) error
}

func (k *ticker) fn(clock *sdk.FakeClock) func(context.Context, time.Time) error {
	return func(ctx context.Context, tick time.Time) error {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.fail != nil {
			if err := k.fail(tick); err != nil {
				return err
			}
		}
		k.ticks = append(k.ticks, tick)
		k.ran = append(k.ran, clock.Now())
		return nil
	}
}

func (k *ticker) seen() []time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]time.Time(nil), k.ticks...)
}

// repeatEnv starts a workflow that repeats on sched until it has run limit ticks.
func repeatEnv(t *testing.T, start time.Time, sched sdk.Schedule, limit int, opts ...sdk.RepeatOption) (*env, *ticker, *sdk.Handle[int]) {
	t.Helper()
	k := &ticker{}
	var clock *sdk.FakeClock
	wf := sdk.New("repeater", func(c *sdk.Context, _ int) (int, error) {
		err := sdk.Repeat(c, "job", sched, func(time.Time) bool { return len(k.seen()) >= limit }, k.fn(clock), opts...)
		if err != nil {
			return 0, err
		}
		return len(k.seen()), nil
	})
	e := newEnv(t, sdk.WithWorkflows(wf))
	clock = e.clock
	if d := start.Sub(e.clock.Now()); d > 0 {
		e.clock.Advance(d)
	}
	h, err := wf.Start(ctx, e.eng, "k", 1)
	require.NoError(t, err)
	return e, k, h
}

// next drains, then moves the clock to the workflow's wake time plus late, and reports
// whether the workflow still waits.
func (e *env) next(id int64, late time.Duration) bool {
	e.t.Helper()
	e.drain()
	w := e.state(id)
	if w.State != storage.StateIdle {
		return false
	}
	if d := w.RunAt.Sub(e.clock.Now()) + late; d > 0 {
		e.clock.Advance(d)
	}
	return true
}

func repeatMeta(t *testing.T, e *env, id int64) map[string]any {
	t.Helper()
	_, steps, err := e.store.Load(ctx, id)
	require.NoError(t, err)
	for _, s := range steps {
		if s.Name == "repeat$job" {
			var m map[string]any
			require.NoError(t, json.Unmarshal(s.Meta, &m))
			return m
		}
	}
	t.Fatal("no repeat record")
	return nil
}

func TestRepeatMonthlyFromJan31ClampsToTheMonthEnd(t *testing.T) {
	t.Parallel()
	for _, year := range []int{2028, 2027} {
		start := time.Date(year, 1, 31, 10, 0, 0, 0, time.UTC)
		e, k, h := repeatEnv(t, start, sdk.EveryMonths(1), 5)
		for e.next(h.ID(), 0) {
		}
		feb := 28
		if year == 2028 {
			feb = 29
		}
		want := []time.Time{
			start,
			time.Date(year, 2, feb, 10, 0, 0, 0, time.UTC),
			time.Date(year, 3, 31, 10, 0, 0, 0, time.UTC),
			time.Date(year, 4, 30, 10, 0, 0, 0, time.UTC),
			time.Date(year, 5, 31, 10, 0, 0, 0, time.UTC),
		}
		require.Equal(t, want, k.seen(), "year %d", year)
		out, err := h.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 5, out)
	}
}

func TestRepeatDailyKeepsLocalTimeAcrossDST(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	// From the week before spring-forward (Mar 29 2026) past fall-back (Oct 25 2026).
	start := time.Date(2026, 3, 25, 0, 0, 0, 0, berlin)
	e, k, h := repeatEnv(t, start, sdk.Daily(9, 0), 220, sdk.In(berlin))
	for e.next(h.ID(), 0) {
	}
	ticks := k.seen()
	require.Len(t, ticks, 220)
	for i, tk := range ticks {
		l := tk.In(berlin)
		require.Equal(t, 9, l.Hour(), "tick %d at %s", i, l)
		require.Equal(t, 0, l.Minute())
		require.Equal(t, time.Date(2026, 3, 25+i, 9, 0, 0, 0, berlin), l)
	}
	_, offMarch := ticks[0].In(berlin).Zone()
	_, offSummer := ticks[10].In(berlin).Zone()
	_, offNov := ticks[219].In(berlin).Zone()
	require.Equal(t, 3600, offMarch)
	require.Equal(t, 7200, offSummer)
	require.Equal(t, 3600, offNov)
}

func TestRepeatFixedPeriodNeverDriftsWhenRunsAreLate(t *testing.T) {
	t.Parallel()
	start := t0.Add(3 * time.Minute)
	e, k, h := repeatEnv(t, start, sdk.Every(15*time.Minute), 40)
	for i := 0; e.next(h.ID(), time.Duration(i%7)*time.Minute); i++ { // each run up to 6 minutes late
	}
	ticks := k.seen()
	require.Len(t, ticks, 40)
	for i, tk := range ticks {
		require.Equal(t, start.Add(time.Duration(i)*15*time.Minute), tk, "tick %d", i)
	}
}
