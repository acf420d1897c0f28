package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
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
	fail  func(ctx context.Context, tick time.Time) error
}

func (k *ticker) fn(clock *sdk.FakeClock) func(context.Context, time.Time) error {
	return func(ctx context.Context, tick time.Time) error {
		k.mu.Lock()
		fail := k.fail
		k.mu.Unlock()
		if fail != nil {
			if err := fail(ctx, tick); err != nil {
				return err
			}
		}
		k.mu.Lock()
		defer k.mu.Unlock()
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

// catchUp runs tick 0, then lets missed ticks of a one-minute schedule pass (window: ten
// minutes) and drains once more; it returns the storage calls of that drain.
func catchUp(t *testing.T, missed int) (calls int64, e *env, k *ticker, id int64) {
	e, k, h := repeatEnv(t, t0, sdk.Every(time.Minute), 1<<30, sdk.TickTimeout(10*time.Minute))
	require.Equal(t, 1, e.drain())
	require.Equal(t, []time.Time{t0}, k.seen())
	e.clock.Advance(time.Duration(missed) * time.Minute)
	before := e.count.loads.Load() + e.count.saves.Load() + e.count.finishes.Load()
	require.Equal(t, 11, e.drain(), "one run per tick inside the window")
	return e.count.loads.Load() + e.count.saves.Load() + e.count.finishes.Load() - before, e, k, h.ID()
}

func TestRepeatCatchUpSkipsMissedTicksInOneSummary(t *testing.T) {
	t.Parallel()
	calls100, _, _, _ := catchUp(t, 100)
	calls1000, e, k, id := catchUp(t, 1000)
	require.Equal(t, calls100, calls1000, "catch-up cost does not grow with the ticks missed")

	// Ticks 1..1000 were due; the 11 from 990 on are inside the ten-minute window and run.
	ticks := k.seen()
	require.Len(t, ticks, 12)
	for i, tk := range ticks[1:] {
		require.Equal(t, t0.Add(time.Duration(990+i)*time.Minute), tk)
	}
	m := repeatMeta(t, e, id)
	require.EqualValues(t, 1000-11, m["skipped"])
	skip := m["skip"].(map[string]any)
	require.EqualValues(t, 1000-11, skip["count"])
	require.Equal(t, t0.Add(time.Minute).Format(time.RFC3339Nano), skip["first"])
	require.Equal(t, t0.Add(989*time.Minute).Format(time.RFC3339Nano), skip["last"])
	_, steps, err := e.store.Load(ctx, id)
	require.NoError(t, err)
	require.Len(t, steps, 1, "one record, no record per skipped tick")
}

func TestRepeatCatchUpOnCalendarPeriods(t *testing.T) {
	t.Parallel()
	start := time.Date(2020, 1, 31, 8, 0, 0, 0, time.UTC) // six years before the clock
	e, k, h := repeatEnv(t, t0, sdk.EveryMonths(1), 1<<30, sdk.StartAt(start))
	require.Equal(t, 1, e.drain(), "only the tick inside the window runs")
	require.Equal(t, []time.Time{time.Date(2025, 12, 31, 8, 0, 0, 0, time.UTC)}, k.seen())
	require.EqualValues(t, 71, repeatMeta(t, e, h.ID())["skipped"], "Jan 2020 to Nov 2025")

	e.clock.Advance(time.Date(2026, 7, 15, 0, 0, 0, 0, time.UTC).Sub(e.clock.Now()))
	require.Equal(t, 1, e.drain())
	require.Equal(t, time.Date(2026, 6, 30, 8, 0, 0, 0, time.UTC), k.seen()[1])
	m := repeatMeta(t, e, h.ID())
	require.EqualValues(t, 76, m["skipped"])
	skip := m["skip"].(map[string]any)
	require.EqualValues(t, 5, skip["count"])
	require.Equal(t, "2026-01-31T08:00:00Z", skip["first"])
	require.Equal(t, "2026-05-31T08:00:00Z", skip["last"])
	require.Equal(t, time.Date(2026, 7, 31, 8, 0, 0, 0, time.UTC), e.state(h.ID()).RunAt.UTC())
}

func TestRepeatReplayCostFlatAsTicksAccumulate(t *testing.T) {
	t.Parallel()
	rows := func(n int) int {
		e, k, h := repeatEnv(t, t0, sdk.Every(time.Second), n)
		for e.next(h.ID(), 0) {
		}
		require.Len(t, k.seen(), n)
		_, steps, err := e.store.Load(ctx, h.ID())
		require.NoError(t, err)
		size := 0
		for _, s := range steps {
			size += len(s.Meta) + len(s.Result)
		}
		require.Less(t, size, 1024)
		return len(steps)
	}
	require.Equal(t, rows(10), rows(10000), "rows loaded per replay at 10 and 10,000 ticks")
}

func TestRepeatContinuesAfterAFailedTickByDefault(t *testing.T) {
	t.Parallel()
	e, k, h := repeatEnv(t, t0, sdk.Every(time.Minute), 4, sdk.WithRetry(sdk.NoRetry))
	k.fail = func(_ context.Context, tick time.Time) error {
		if tick.Equal(t0.Add(2 * time.Minute)) {
			return errors.New("boom")
		}
		return nil
	}
	for e.next(h.ID(), 0) {
	}
	require.Equal(t, []time.Time{t0, t0.Add(time.Minute), t0.Add(3 * time.Minute), t0.Add(4 * time.Minute)}, k.seen())
	errs := e.errors(h.ID())
	require.Len(t, errs, 1)
	require.Equal(t, "repeat$job", errs[0].Step)
	require.Equal(t, "boom", errs[0].Message)
	require.Equal(t, "*errors.errorString", errs[0].Type)
	require.Equal(t, storage.StateCompleted, e.state(h.ID()).State)
	require.EqualValues(t, 1, repeatMeta(t, e, h.ID())["failed"])
}

func TestRepeatStallOnErrorStallsUntilRetry(t *testing.T) {
	t.Parallel()
	e, k, h := repeatEnv(t, t0, sdk.Every(time.Minute), 4, sdk.WithRetry(sdk.NoRetry), sdk.StallOnError())
	broken := errors.New("down")
	k.fail = func(_ context.Context, tick time.Time) error {
		if tick.Equal(t0.Add(2 * time.Minute)) {
			return broken
		}
		return nil
	}
	for e.next(h.ID(), 0) {
	}
	require.Equal(t, storage.StateStalled, e.state(h.ID()).State)
	require.Len(t, k.seen(), 2)
	require.Len(t, e.errors(h.ID()), 1)

	k.mu.Lock()
	k.fail = nil
	k.mu.Unlock()
	require.NoError(t, e.eng.Retry(ctx, h.ID()))
	for e.next(h.ID(), 0) {
	}
	require.Equal(t, storage.StateCompleted, e.state(h.ID()).State)
	ticks := k.seen()
	require.Len(t, ticks, 4)
	require.Equal(t, t0.Add(2*time.Minute), ticks[2], "the stalled tick runs after the retry")
}

func TestRepeatRetriesATickByItsPolicy(t *testing.T) {
	t.Parallel()
	e, k, h := repeatEnv(t, t0, sdk.Every(time.Hour), 3,
		sdk.WithRetry(sdk.Policy{Name: "tick", MaxAttempts: 3, Base: time.Minute}))
	failures := 0
	k.fail = func(_ context.Context, tick time.Time) error {
		if tick.Equal(t0.Add(time.Hour)) && failures < 2 {
			failures++
			return errors.New("flaky")
		}
		return nil
	}
	for e.next(h.ID(), 0) {
	}
	require.Equal(t, []time.Time{t0, t0.Add(time.Hour), t0.Add(2 * time.Hour)}, k.seen())
	require.Len(t, e.errors(h.ID()), 2)
	k.mu.Lock()
	defer k.mu.Unlock()
	require.Equal(t, t0.Add(time.Hour+3*time.Minute), k.ran[1], "retried after 1 and 2 minutes")
}

func TestRepeatTickTimeoutBoundsFn(t *testing.T) {
	t.Parallel()
	e, k, h := repeatEnv(t, t0, sdk.Every(time.Minute), 2, sdk.TickTimeout(50*time.Millisecond), sdk.WithRetry(sdk.NoRetry))
	k.fail = func(ctx context.Context, tick time.Time) error {
		if tick.Equal(t0) {
			<-ctx.Done() // a hung tick
			return ctx.Err()
		}
		return nil
	}
	for e.next(h.ID(), 0) {
	}
	require.Equal(t, []time.Time{t0.Add(time.Minute), t0.Add(2 * time.Minute)}, k.seen())
	errs := e.errors(h.ID())
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Message, context.DeadlineExceeded.Error())
}

func TestRepeatRejectsInvalidSchedules(t *testing.T) {
	t.Parallel()
	for name, sched := range map[string]sdk.Schedule{
		"zero":        sdk.Every(0),
		"36h":         sdk.Every(36 * time.Hour),
		"no days":     sdk.EveryDays(0),
		"neg months":  sdk.EveryMonths(-1),
		"hour 25":     sdk.Daily(25, 0),
		"zero values": {},
	} {
		e, k, h := repeatEnv(t, t0, sched, 3)
		e.drain()
		_, err := h.Result(ctx)
		require.ErrorIs(t, err, sdk.ErrFailed, name)
		require.ErrorContains(t, err, `repeat "job"`, name)
		require.Empty(t, k.seen(), name)
	}
}

func TestRepeatRetriedStalledTickRunsAfterLongDowntime(t *testing.T) {
	t.Parallel()
	e, k, h := repeatEnv(t, t0, sdk.Every(time.Minute), 3, sdk.WithRetry(sdk.NoRetry), sdk.StallOnError())
	k.fail = func(context.Context, time.Time) error { return errors.New("down") }
	require.Equal(t, 1, e.drain())
	require.Equal(t, storage.StateStalled, e.state(h.ID()).State)
	k.mu.Lock()
	k.fail = nil
	k.mu.Unlock()
	e.clock.Advance(24 * time.Hour)
	require.NoError(t, e.eng.Retry(ctx, h.ID()))
	require.Equal(t, 3, e.drain(), "the retried tick, then the two ticks inside the one-minute window")
	require.Equal(t, []time.Time{t0, t0.Add(24*time.Hour - time.Minute), t0.Add(24 * time.Hour)}, k.seen())
	require.EqualValues(t, 24*60-2, repeatMeta(t, e, h.ID())["skipped"])
}

func TestRepeatDailyCatchUpOverYearsInBerlin(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	e, k, h := repeatEnv(t, t0, sdk.Daily(9, 0), 1<<30, sdk.In(berlin), sdk.StartAt(time.Date(2016, 1, 1, 0, 0, 0, 0, berlin)))
	require.Equal(t, 1, e.drain())
	// t0 is 2026-01-01 13:00 in Berlin: the window (one day) holds today's 09:00 tick.
	require.Equal(t, []time.Time{time.Date(2026, 1, 1, 9, 0, 0, 0, berlin)}, k.seen())
	days := int64(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Sub(time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC)) / (24 * time.Hour))
	require.EqualValues(t, days, repeatMeta(t, e, h.ID())["skipped"])
	require.True(t, time.Date(2026, 1, 2, 9, 0, 0, 0, berlin).Equal(e.state(h.ID()).RunAt))
}
