package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// Record names of a Repeat: one coordination record for all its ticks, and one more, written
// only when a tick's failure stalls the workflow, that Engine.Retry resets.
func repeatRecord(name string) string      { return "repeat$" + name }
func repeatStallRecord(name string) string { return "repeat$" + name + "$stall" }

const day = 24 * time.Hour

// Schedule says when the ticks of a Repeat fall: at start + k·period, k = 0, 1, 2, ...
// A period under a day is a fixed duration. A period of whole days or months steps by the
// calendar in the Repeat's location (In, default UTC): a daily tick keeps its wall-clock time
// across DST changes, and a monthly tick keeps the start's day of the month, clamped to the
// month's end (from Jan 31: Feb 28 or 29, Mar 31, Apr 30).
type Schedule struct {
	every  time.Duration // fixed period (sub-day)
	days   int           // calendar period in days
	months int           // calendar period in months
	daily  bool          // start at the next hour:min in the location
	hour   int
	min    int
}

// Every ticks every d. A d of whole days is the calendar schedule EveryDays(d / 24h); any
// other d of a day or more is invalid.
func Every(d time.Duration) Schedule {
	if d >= day && d%day == 0 {
		return EveryDays(int(d / day))
	}
	if d >= day {
		return Schedule{every: -1} // rejected by validate
	}
	return Schedule{every: d}
}

// EveryDays ticks every n calendar days at the start's wall-clock time.
func EveryDays(n int) Schedule { return Schedule{days: n} }

// EveryMonths ticks every n months on the start's day of the month (clamped to the month's
// end) at the start's wall-clock time.
func EveryMonths(n int) Schedule { return Schedule{months: n} }

// Daily ticks every day at hour:min in the Repeat's location; the first tick is the first such
// time at or after the Repeat is first recorded (or StartAt, if given).
func Daily(hour, min int) Schedule { return Schedule{days: 1, daily: true, hour: hour, min: min} }

func (s Schedule) validate() error {
	n := 0
	if s.every != 0 {
		n++
	}
	if s.days != 0 {
		n++
	}
	if s.months != 0 {
		n++
	}
	switch {
	case n != 1 || s.every < 0 || s.days < 0 || s.months < 0:
		return fmt.Errorf("%w: a schedule needs one positive period (a sub-day duration, whole days or months)", ErrInvalid)
	case s.daily && (s.hour < 0 || s.hour > 23 || s.min < 0 || s.min > 59):
		return fmt.Errorf("%w: Daily(%d, %d) is not a time of day", ErrInvalid, s.hour, s.min)
	}
	return nil
}

// period is the nominal length of one period: the default tick timeout and catch-up window.
func (s Schedule) period() time.Duration {
	switch {
	case s.every > 0:
		return s.every
	case s.days > 0:
		return time.Duration(s.days) * day
	}
	return time.Duration(s.months) * 28 * day // the shortest month: a tick never outlives its period
}

// first returns the schedule's first tick given the time the Repeat was first recorded.
func (s Schedule) first(at time.Time, loc *time.Location) time.Time {
	if !s.daily {
		return at
	}
	l := at.In(loc)
	t := time.Date(l.Year(), l.Month(), l.Day(), s.hour, s.min, 0, 0, loc)
	if t.Before(at) {
		t = time.Date(l.Year(), l.Month(), l.Day()+1, s.hour, s.min, 0, 0, loc)
	}
	return t
}

// tick returns tick k of a schedule that starts at start, in loc.
func (s Schedule) tick(start time.Time, loc *time.Location, k int64) time.Time {
	if s.every > 0 {
		return start.Add(time.Duration(k) * s.every)
	}
	l := start.In(loc)
	if s.daily {
		// The configured time of day, even if the start fell in a DST gap and was moved.
		return time.Date(l.Year(), l.Month(), l.Day()+int(k)*s.days, s.hour, s.min, 0, 0, loc)
	}
	if s.days > 0 {
		// time.Date normalises the day overflow by the calendar and keeps the wall clock.
		return time.Date(l.Year(), l.Month(), l.Day()+int(k)*s.days, l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), loc)
	}
	total := int64(l.Month()-1) + k*int64(s.months)
	y, m := l.Year()+int(total/12), time.Month(total%12+1)
	d := l.Day()
	if last := time.Date(y, m+1, 0, 0, 0, 0, 0, loc).Day(); d > last {
		d = last // clamp to the month's end rather than overflow into the next month
	}
	return time.Date(y, m, d, l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), loc)
}

// firstAtOrAfter returns the smallest k >= from whose tick is not before t. Fixed periods
// compute it in closed form; calendar periods estimate it from the elapsed time and correct
// the estimate by a few steps, so the cost does not grow with the number of ticks skipped.
func (s Schedule) firstAtOrAfter(start time.Time, loc *time.Location, from int64, t time.Time) int64 {
	if !s.tick(start, loc, from).Before(t) {
		return from
	}
	var k int64
	if s.every > 0 {
		elapsed := t.Sub(start)
		k = int64(elapsed / s.every)
		if time.Duration(k)*s.every < elapsed {
			k++
		}
		return max(k, from)
	}
	// Estimate from the calendar distance (a DST change moves a day tick by an hour, the
	// month-end clamp moves a month tick by a few days), one period low, then correct by
	// the few steps the estimate is off.
	if s.days > 0 {
		k = int64(t.Sub(start)/(time.Duration(s.days)*day)) - 1
	} else {
		a, b := start.In(loc), t.In(loc)
		months := int64(b.Year()-a.Year())*12 + int64(b.Month()-a.Month())
		k = months/int64(s.months) - 1
	}
	k = max(k, from)
	for s.tick(start, loc, k).Before(t) {
		k++
	}
	for k > from && !s.tick(start, loc, k-1).Before(t) {
		k--
	}
	return k
}

// RepeatOption configures a Repeat: In, StartAt, TickTimeout, StallOnError or WithRetry.
type RepeatOption interface{ applyRepeat(*repeatConfig) }

type repeatConfig struct {
	loc     *time.Location
	start   time.Time
	timeout time.Duration
	stall   bool
	retry   RetryPolicy
}

type repeatOption func(*repeatConfig)

func (o repeatOption) applyRepeat(c *repeatConfig) { o(c) }

func (o RetryOption) applyRepeat(c *repeatConfig) { c.retry = o.policy }

// In sets the location whose calendar a Repeat steps by (default UTC).
func In(loc *time.Location) RepeatOption { return repeatOption(func(c *repeatConfig) { c.loc = loc }) }

// StartAtOption is what StartAt returns: an option of Start (and StartMany's items) and of
// Repeat.
type StartAtOption struct{ t time.Time }

// StartAt sets when a workflow first becomes runnable (Start; default: at once), or the
// first tick of a Repeat (default: when it is first recorded; fixed when first recorded, so
// changing it later has no effect).
func StartAt(t time.Time) StartAtOption { return StartAtOption{t: t} }

func (o StartAtOption) applyRepeat(c *repeatConfig) { c.start = o.t }
func (o StartAtOption) applyStart(c *startConfig)   { c.at = o.t }

// TickTimeout bounds each tick (default: the period; a month counts as 28 days). It is the
// deadline of the context fn receives, and the catch-up window: a tick older than it when the
// workflow runs is skipped.
func TickTimeout(d time.Duration) RepeatOption {
	return repeatOption(func(c *repeatConfig) { c.timeout = d })
}

// StallOnError makes a tick whose retries are spent stall the workflow until Engine.Retry,
// which retries that tick, however old it is by then. By default the Repeat records the error and goes on with the next
// tick.
func StallOnError() RepeatOption { return repeatOption(func(c *repeatConfig) { c.stall = true }) }

// repeatMeta is a Repeat's whole state, in its coordination record's Meta: its size does not
// depend on how many ticks ran or were skipped.
type repeatMeta struct {
	Start  time.Time      `json:"start"`             // tick 0
	Next   int64          `json:"next"`              // index of the next tick to run
	Ran    int64          `json:"ran,omitempty"`     // ticks that succeeded
	Failed int64          `json:"failed,omitempty"`  // ticks given up (continue on error)
	Last   time.Time      `json:"last,omitzero"`     // the last tick that ran
	Used   map[string]int `json:"used,omitempty"`    // retry budget of the next tick
	NextAt time.Time      `json:"next_at,omitzero"`  // the next tick's retry time
	Stall  bool           `json:"stalled,omitempty"` // the next tick stalled the workflow
	// Skipped is the total of ticks skipped by catch-up; Skip describes the latest catch-up.
	Skipped int64       `json:"skipped,omitempty"`
	Skip    *repeatSkip `json:"skip,omitempty"`
}

// repeatSkip is the summary of one catch-up: Count ticks from First to Last were skipped
// because they were older than the tick timeout when the workflow ran.
type repeatSkip struct {
	Count int64     `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	At    time.Time `json:"at"` // when the catch-up happened
}

// Repeat runs fn once per tick of schedule, durably: ticks fall at start + k·period and never
// drift, however late a run is. Each run of the workflow executes at most one tick; between
// ticks the workflow suspends until the next one. Before each tick till is called with that
// tick's time (nil: never); when it reports true Repeat returns nil and the code after it runs.
// Meanwhile Repeat returns an error matching ErrSuspended: return it.
//
// fn gets the tick's scheduled time and a context with the tick timeout. A failing fn is
// retried by the policy (WithRetry, default the engine's step policy); once retries are spent
// the error is recorded and the Repeat goes on with the next tick, or with StallOnError stalls
// the workflow. After downtime, ticks older than the tick timeout are skipped in one
// computation and summarised once in the Repeat's record; the first tick inside the window
// runs. All of a Repeat's state is one record, however many ticks it ran. fn must not call
// SDK functions and may run more than once per tick (at-least-once).
func Repeat(c *Context, name string, schedule Schedule, till func(next time.Time) bool, fn func(ctx context.Context, tick time.Time) error, opts ...RepeatOption) error {
	r := c.run
	if err := r.check(); err != nil {
		return err
	}
	recName := repeatRecord(name)
	if err := r.use("repeat", name, recName); err != nil {
		return err
	}
	cfg := repeatConfig{loc: time.UTC, retry: r.eng.stepPolicy}
	for _, o := range opts {
		o.applyRepeat(&cfg)
	}
	if cfg.loc == nil {
		cfg.loc = time.UTC
	}
	if cfg.retry == nil {
		cfg.retry = r.eng.stepPolicy
	}
	if cfg.timeout == 0 {
		cfg.timeout = schedule.period()
	}
	bad := schedule.validate()
	if bad == nil && cfg.timeout < 0 {
		bad = fmt.Errorf("%w: a negative tick timeout", ErrInvalid)
	}
	if bad == nil {
		bad = cfg.retry.validate()
	}
	if bad != nil {
		return r.halt(haltFail, fmt.Errorf("workflow %q repeat %q: %w", r.wf.Name, name, bad))
	}

	rec, stored := r.record(recName)
	if rec.State == storage.StepCompleted {
		return nil
	}
	var meta repeatMeta
	if len(rec.Meta) > 0 {
		_ = json.Unmarshal(rec.Meta, &meta) // the SDK wrote it
	}
	now := r.eng.clock.Now()
	changed := !stored
	retried := false // an operator's Retry runs the stalled tick, however old
	if meta.Start.IsZero() {
		at := now
		if !cfg.start.IsZero() {
			at = cfg.start
		}
		meta.Start = schedule.first(at, cfg.loc)
	}
	if meta.Stall {
		stall, ok := r.record(repeatStallRecord(name))
		if ok && stall.State == storage.StepFailed {
			return r.halt(haltStall, fmt.Errorf("repeat %q tick %s: retries spent: %s", name, schedule.tick(meta.Start, cfg.loc, meta.Next).Format(time.RFC3339), stall.LastError))
		}
		// Engine.Retry reset the stall record: the tick gets a fresh budget.
		meta.Stall, meta.Used, meta.NextAt, changed = false, nil, time.Time{}, true
		retried = true
	}
	save := func() {
		rec.Meta, _ = json.Marshal(meta)
		r.queue(rec)
	}
	done := func() error {
		rec.State, rec.CompletedAt = storage.StepCompleted, now
		save()
		return nil
	}

	tick := schedule.tick(meta.Start, cfg.loc, meta.Next)
	if !retried && meta.NextAt.IsZero() && tick.Before(now.Add(-cfg.timeout)) {
		// Catch-up: every tick older than the window is skipped at once.
		k := schedule.firstAtOrAfter(meta.Start, cfg.loc, meta.Next, now.Add(-cfg.timeout))
		n := k - meta.Next
		meta.Skip = &repeatSkip{Count: n, First: tick, Last: schedule.tick(meta.Start, cfg.loc, k-1), At: now}
		meta.Skipped += n
		meta.Next, meta.Used = k, nil
		tick = schedule.tick(meta.Start, cfg.loc, k)
		changed = true
	}
	if till != nil && meta.NextAt.IsZero() && till(tick) {
		return done()
	}
	wake := tick
	if !meta.NextAt.IsZero() {
		wake = meta.NextAt
	}
	if now.Before(wake) {
		if changed {
			save()
		}
		kind := storage.WaitRepeat
		if !meta.NextAt.IsZero() {
			kind = storage.WaitRetry
		}
		return r.suspend(wake, storage.Wait{Kind: kind, Step: recName})
	}

	if changed {
		save()
	}
	if err := r.flush(); err != nil {
		return err
	}
	timeout := cfg.timeout
	// Telemetry: each tick is an executed step with a span, ended once its fate is known.
	obs := r.startStep(recName, rec.Attempts+1)
	outcome := telemetry.StepAborted
	var err error
	defer func() { r.endTick(&obs, outcome, err) }()
	_, err = callStep(r, "repeat "+quote(name), func(ctx context.Context) (struct{}, error) {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		return struct{}{}, fn(ctx, tick)
	})
	if r.stopped != nil {
		return r.stopped // fn misused the SDK (see run.use)
	}
	now = r.eng.clock.Now()
	rec.Attempts++
	if err == nil {
		outcome = telemetry.StepCompleted
		meta.Ran++
		meta.Last = tick
		meta.Next++
		meta.Used, meta.NextAt = nil, time.Time{}
		rec.LastError = ""
		save()
		return r.suspend(schedule.tick(meta.Start, cfg.loc, meta.Next), storage.Wait{Kind: storage.WaitRepeat, Step: recName})
	}
	if r.ctx.Err() != nil {
		return r.halt(haltAbort, context.Cause(r.ctx)) // cancelled or shutting down: the tick runs again
	}
	if meta.Used == nil {
		meta.Used = map[string]int{}
	}
	key, delay, again := cfg.retry.decide(err, meta.Used)
	meta.Used[key]++
	r.recordError(recName, rec.Attempts, err)
	rec.LastError = storage.Truncate(err.Error(), maxErrorMessage)
	outcome = telemetry.StepFailed
	switch {
	case again:
		outcome = telemetry.StepRetrying
		meta.NextAt = now.Add(delay)
		save()
		return r.suspend(meta.NextAt, storage.Wait{Kind: storage.WaitRetry, Step: recName})
	case cfg.stall:
		meta.Stall, meta.NextAt = true, time.Time{}
		save()
		stall, _ := r.record(repeatStallRecord(name))
		stall.State, stall.LastError = storage.StepFailed, rec.LastError
		stall.Attempts++
		r.queue(stall)
		return r.halt(haltStall, fmt.Errorf("repeat %q tick %s: %w", name, tick.Format(time.RFC3339), err))
	}
	meta.Failed++
	meta.Next++
	meta.Used, meta.NextAt = nil, time.Time{}
	save()
	return r.suspend(schedule.tick(meta.Start, cfg.loc, meta.Next), storage.Wait{Kind: storage.WaitRepeat, Step: recName})
}

// endTick ends the telemetry of one tick: its span and step measurements.
func (r *run) endTick(o *stepObs, outcome telemetry.StepOutcome, err error) {
	ctx := r.stepContext()
	r.tel.stepCtx = nil
	errType := ""
	if err != nil {
		errType = errorType(err)
	}
	o.s.End(ctx, outcome, err, errType)
}
