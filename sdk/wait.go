package sdk

import (
	"context"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Record names of waits: the user's name behind a prefix that user names cannot contain.
func sleepRecord(name string) string    { return "sleep$" + name }
func untilRecord(name string) string    { return "until$" + name }
func continueRecord(name string) string { return "continue$" + name }

// Sleep waits d, durably. The wake time is fixed when the sleep is first recorded, so a run
// that wakes early (a signal, a restart) suspends again for the time that remains, not for d.
func Sleep(c *Context, name string, d time.Duration) error {
	r := c.run
	if err := r.check(); err != nil {
		return err
	}
	recName := sleepRecord(name)
	if err := r.use("sleep", name, recName); err != nil {
		return err
	}
	rec, _ := r.record(recName)
	if rec.State == storage.StepCompleted {
		return nil
	}
	now := r.eng.clock.Now()
	meta := readMeta(rec)
	if meta.WakeAt.IsZero() {
		meta.WakeAt = now.Add(d)
		rec.Meta = meta.bytes()
		rec.Attempts = 1
	}
	if !now.Before(meta.WakeAt) {
		rec.State, rec.CompletedAt = storage.StepCompleted, now
		r.queue(rec) // written with the next commit; if lost, replay completes it again
		return nil
	}
	if r.steps[recName] == nil {
		r.queue(rec)
	}
	return r.suspend(meta.WakeAt, storage.Wait{Kind: storage.WaitSleep, Step: recName})
}

// WaitOption configures WaitUntil and Receive.
type WaitOption interface{ applyWait(*waitConfig) }

type waitOption func(*waitConfig)

func (f waitOption) applyWait(c *waitConfig) { f(c) }

type waitConfig struct {
	timeout  time.Duration
	interval time.Duration
}

// CheckEvery sets how often WaitUntil checks its condition (default 15 seconds).
func CheckEvery(d time.Duration) WaitOption {
	return waitOption(func(c *waitConfig) { c.interval = d })
}

// WaitUntil waits until cond reports true, checking it once per run and every check interval
// (a Signal checks it at once). The timeout is fixed when the wait is first recorded; when it
// passes with cond still false the workflow stalls with an error record (ErrWaitTimeout). An
// error from cond stalls it too: waits retry nothing. cond must not call SDK functions.
func WaitUntil(c *Context, name string, cond func(ctx context.Context) (bool, error), opts ...WaitOption) error {
	r := c.run
	if err := r.check(); err != nil {
		return err
	}
	recName := untilRecord(name)
	if err := r.use("wait", name, recName); err != nil {
		return err
	}
	cfg := waitConfig{timeout: time.Hour, interval: 15 * time.Second}
	for _, o := range opts {
		o.applyWait(&cfg)
	}
	if cfg.timeout <= 0 || cfg.interval <= 0 {
		return r.halt(haltFail, fmt.Errorf("%w: wait %q needs a positive timeout and check interval", ErrInvalid, name))
	}
	rec, _ := r.record(recName)
	switch rec.State {
	case storage.StepCompleted:
		return nil
	case storage.StepFailed:
		return r.halt(haltStall, fmt.Errorf("wait %q: %s", name, rec.LastError))
	}
	now := r.eng.clock.Now()
	meta := readMeta(rec)
	if meta.Deadline.IsZero() {
		meta.Deadline = now.Add(cfg.timeout)
	}
	if err := r.flush(); err != nil {
		return err
	}
	ok, err := callStep(r, "wait "+quote(name), cond)
	if r.stopped != nil {
		return r.stopped // the condition misused the SDK (see run.use)
	}
	rec.Attempts++
	rec.Meta = meta.bytes()
	now = r.eng.clock.Now()
	switch {
	case err != nil && r.ctx.Err() != nil:
		return r.halt(haltAbort, context.Cause(r.ctx))
	case err != nil:
		// The record keeps the condition's own error; the halt says which wait and check.
		r.recordError(recName, rec.Attempts, err)
		rec.State, rec.LastError = storage.StepFailed, storage.Truncate(err.Error(), maxErrorMessage)
		r.queue(rec)
		return r.halt(haltStall, fmt.Errorf("wait %q check %d: %w", name, rec.Attempts, err))
	case ok:
		rec.State, rec.CompletedAt = storage.StepCompleted, now
		r.queue(rec)
		return nil
	case !now.Before(meta.Deadline):
		err = fmt.Errorf("%w: wait %q: condition still false after %d checks at deadline %s", ErrWaitTimeout, name, rec.Attempts, meta.Deadline.Format(time.RFC3339))
	default:
		r.queue(rec)
		next := now.Add(cfg.interval)
		if next.After(meta.Deadline) {
			next = meta.Deadline
		}
		return r.suspend(next, storage.Wait{Kind: storage.WaitUntil, Step: recName})
	}
	r.recordError(recName, rec.Attempts, err)
	rec.State, rec.LastError = storage.StepFailed, storage.Truncate(err.Error(), maxErrorMessage)
	r.queue(rec)
	return r.halt(haltStall, err)
}

// ContinueIf checks cond once per run. If it is false the workflow suspends with no timer
// until a Signal wakes it, and the condition is checked again. An error from cond stalls the
// workflow. cond must not call SDK functions.
func ContinueIf(c *Context, name string, cond func(ctx context.Context) (bool, error)) error {
	r := c.run
	if err := r.check(); err != nil {
		return err
	}
	recName := continueRecord(name)
	if err := r.use("wait", name, recName); err != nil {
		return err
	}
	rec, _ := r.record(recName)
	switch rec.State {
	case storage.StepCompleted:
		return nil
	case storage.StepFailed:
		return r.halt(haltStall, fmt.Errorf("wait %q: %s", name, rec.LastError))
	}
	if err := r.flush(); err != nil {
		return err
	}
	ok, err := callStep(r, "wait "+quote(name), cond)
	if r.stopped != nil {
		return r.stopped // the condition misused the SDK (see run.use)
	}
	rec.Attempts++
	now := r.eng.clock.Now()
	switch {
	case err != nil && r.ctx.Err() != nil:
		return r.halt(haltAbort, context.Cause(r.ctx))
	case err != nil:
		r.recordError(recName, rec.Attempts, err)
		rec.State, rec.LastError = storage.StepFailed, storage.Truncate(err.Error(), maxErrorMessage)
		r.queue(rec)
		return r.halt(haltStall, fmt.Errorf("wait %q check %d: %w", name, rec.Attempts, err))
	case ok:
		rec.State, rec.CompletedAt = storage.StepCompleted, now
		r.queue(rec)
		return nil
	}
	r.queue(rec)
	return r.suspend(time.Time{}, storage.Wait{Kind: storage.WaitSignal, Step: recName})
}
