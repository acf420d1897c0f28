package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// StepOption configures one step.
type StepOption interface{ applyStep(*stepConfig) }

type stepConfig struct {
	retry   RetryPolicy
	timeout time.Duration
}

// validate checks a step's options: its policy and timeout.
func (c stepConfig) validate() error {
	if c.timeout < 0 {
		return fmt.Errorf("%w: StepTimeout(%v) is negative", ErrInvalid, c.timeout)
	}
	if c.retry != nil {
		return c.retry.validate()
	}
	return nil
}

// stepOption is a StepOption from a function.
type stepOption func(*stepConfig)

func (f stepOption) applyStep(c *stepConfig) { f(c) }

// StepTimeout bounds each attempt of a step: its function's context gets a deadline d after
// the attempt starts. An attempt that returns an error once the deadline passed failed with
// an error matching ErrStepTimeout (and context.DeadlineExceeded), recorded as an error of
// the step, and the step's policy decides whether it is tried again.
func StepTimeout(d time.Duration) StepOption {
	return stepOption(func(c *stepConfig) { c.timeout = d })
}

// stepOptions returns the options of step name in run r: the engine's policy, then the
// workflow's WithStepDefaults and WithStep(name), then opts from the call.
func (r *run) stepOptions(name string, opts []StepOption) stepConfig {
	cfg := stepConfig{retry: r.eng.stepPolicy}
	for _, o := range r.def.steps[""] {
		o.applyStep(&cfg)
	}
	for _, o := range r.def.steps[name] {
		o.applyStep(&cfg)
	}
	for _, o := range opts {
		o.applyStep(&cfg)
	}
	if cfg.retry == nil {
		cfg.retry = r.eng.stepPolicy
	}
	return cfg
}

// RetryOption sets the retry policy of a step or a workflow; see WithRetry.
type RetryOption struct{ policy RetryPolicy }

// WithRetry sets the retry policy of a step (Step option) or of a workflow function (New
// option). An invalid policy stops the run (step) or fails registration (workflow).
func WithRetry(p RetryPolicy) RetryOption { return RetryOption{policy: p} }

func (o RetryOption) applyStep(c *stepConfig)     { c.retry = o.policy }
func (o RetryOption) applyWorkflow(d *definition) { d.retry = o.policy }

// stepMeta is the SDK's bookkeeping in a step record's Meta.
type stepMeta struct {
	// Used counts failures charged to each retry policy, by policy name.
	Used map[string]int `json:"used,omitempty"`
	// NextAt is when a step between retries may run again.
	NextAt time.Time `json:"next_at,omitzero"`
	// WakeAt is the wake time of a sleep, fixed when first recorded.
	WakeAt time.Time `json:"wake_at,omitzero"`
	// Deadline is the timeout of a wait, fixed when first recorded.
	Deadline time.Time `json:"deadline,omitzero"`
	// TimedOut marks a Receive that ended at its deadline without a message.
	TimedOut bool `json:"timed_out,omitempty"`
}

func readMeta(s storage.Step) stepMeta {
	var m stepMeta
	if len(s.Meta) > 0 {
		_ = json.Unmarshal(s.Meta, &m) // the SDK wrote it; a damaged one restarts the bookkeeping
	}
	return m
}

func (m stepMeta) bytes() []byte {
	data, _ := json.Marshal(m)
	return data
}

// Step runs fn once and persists its result under name. On replay a completed step returns
// its stored result without running fn. The result is written before any later step, wait
// condition or spawn runs, together with the durable values, or with the run's final write. A failing fn is retried by the step's policy (default
// DefaultStepPolicy) in later runs, after the policy's delay; when its attempts are spent, or
// fn returns a Permanent error, the workflow stalls until an operator retries it. Meanwhile
// Step returns an error matching ErrSuspended: return it.
//
// fn receives the run's context, which is cancelled when the workflow is cancelled, the
// worker loses its lease or shuts down. fn may run more than once (at-least-once): make its
// side effects idempotent. Using one name twice in a run is an error (ErrDuplicateStep).
func Step[T any](c *Context, name string, fn func(ctx context.Context) (T, error), opts ...StepOption) (T, error) {
	var zero T
	r := c.run
	if err := r.check(); err != nil {
		return zero, err
	}
	if err := r.use("step", name, name); err != nil {
		return zero, err
	}
	cfg := r.stepOptions(name, opts)
	rec, _ := r.record(name)
	switch rec.State {
	case storage.StepCompleted:
		r.tel.run.Replayed++ // read back from storage: no span
		var v T
		if err := r.eng.codec.Unmarshal(rec.Result, &v); err != nil {
			return zero, r.halt(haltFail, decodeError(r, name, reflect.TypeFor[T](), err))
		}
		return v, nil
	case storage.StepFailed:
		return zero, r.halt(haltStall, fmt.Errorf("step %q: retries spent: %s", name, rec.LastError))
	}
	if err := cfg.validate(); err != nil {
		return zero, r.halt(haltFail, fmt.Errorf("workflow %q step %q: %w", r.wf.Name, name, err))
	}
	meta := readMeta(rec)
	now := r.eng.clock.Now()
	if meta.NextAt.After(now) {
		return zero, r.suspend(meta.NextAt, storage.Wait{Kind: storage.WaitRetry, Step: name})
	}

	// Records queued by earlier steps are written before this one runs, so a crash inside
	// it repeats only this step.
	if err := r.flush(); err != nil {
		return zero, err
	}
	obs := r.startStep(name, rec.Attempts+1) // telemetry: the step's span, ended once its fate is decided
	v, err := callStep(r, "step "+quote(name), attempt(r, name, rec.Attempts+1, cfg, fn))
	defer obs.end(r, &rec, &err)
	if r.stopped != nil {
		return zero, r.stopped // the function misused the SDK (see run.use); nothing is recorded
	}
	rec.Attempts++
	now = r.eng.clock.Now()
	if err == nil {
		var data []byte
		data, err = r.eng.codec.Marshal(v)
		if err == nil {
			rec.State, rec.Result, rec.CompletedAt, rec.LastError = storage.StepCompleted, data, now, ""
			rec.Meta = nil
			// Written with the next write of the run: before the next step runs, with a spawn
			// batch, or with the run's final write (so a one-step workflow commits once).
			r.queue(rec)
			return v, nil
		}
		err = Permanent(fmt.Errorf("encode result %s: %w", reflect.TypeFor[T](), err))
	}
	if r.ctx.Err() != nil {
		// Cancelled, lease lost or shutting down: nothing is recorded; the step runs again.
		return zero, r.halt(haltAbort, context.Cause(r.ctx))
	}
	// The record and the policy get the user's error as returned; the step and attempt have
	// fields of their own, and only the halt's message adds them.
	r.recordError(name, rec.Attempts, err)
	rec.LastError = storage.Truncate(err.Error(), maxErrorMessage)
	if meta.Used == nil {
		meta.Used = map[string]int{}
	}
	key, delay, again := cfg.retry.decide(err, meta.Used)
	meta.Used[key]++
	if !again {
		rec.State = storage.StepFailed
		rec.Meta = meta.bytes()
		r.queue(rec)
		return zero, r.halt(haltStall, fmt.Errorf("step %q attempt %d: %w", name, rec.Attempts, err))
	}
	meta.NextAt = now.Add(delay)
	rec.Meta = meta.bytes()
	r.queue(rec)
	return zero, r.suspend(meta.NextAt, storage.Wait{Kind: storage.WaitRetry, Step: name})
}

// callStep runs fn, the function of the step or wait condition named what, with the run's
// context, turning a panic into a *PanicError. While it runs, SDK calls that record steps
// are refused (run.use).
func callStep[T any](r *run, what string, fn func(context.Context) (T, error)) (v T, err error) {
	r.live() // user code runs: new work, so Context.Logger speaks from here on
	r.inside = what
	defer func() {
		r.inside = ""
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return fn(r.stepContext())
}

// PanicError is the error recorded when a step's function or a wait condition panics.
type PanicError struct {
	// Value is what was passed to panic.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack []byte
}

func (p *PanicError) Error() string { return fmt.Sprintf("panic: %v\n%s", p.Value, p.Stack) }

func quote(s string) string { return fmt.Sprintf("%q", s) }

// attempt returns the function one attempt of step name runs: fn, or what the engine's step
// hook puts in its place, bounded by the step's timeout.
func attempt[T any](r *run, name string, n int, cfg stepConfig, fn func(context.Context) (T, error)) func(context.Context) (T, error) {
	if h := r.eng.stepHook; h != nil {
		replace, fail := h(StepCall{Workflow: r.wf.Name, Key: r.wf.Key, ID: r.wf.ID, Step: name, Attempt: n})
		switch f := replace.(type) {
		case nil:
		case func(context.Context) (T, error):
			fn = f
		default:
			err := Permanent(fmt.Errorf("%w: the step hook replaced step %q with a %T, not a func(context.Context) (%s, error)", ErrInvalid, name, replace, reflect.TypeFor[T]()))
			fn = func(context.Context) (T, error) { var zero T; return zero, err }
		}
		if fail != nil {
			fn = func(context.Context) (T, error) { var zero T; return zero, fail }
		}
	}
	if cfg.timeout <= 0 {
		return fn
	}
	return func(ctx context.Context) (T, error) {
		tctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
		v, err := fn(tctx)
		if err != nil && ctx.Err() == nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w after %v: %w", ErrStepTimeout, cfg.timeout, err)
		}
		return v, err
	}
}

// StepCall identifies one attempt of a step, as a step hook sees it (WithStepHook).
type StepCall struct {
	Workflow string
	Key      string
	ID       int64
	Step     string
	// Attempt counts the step's executions, this one included (1 for the first).
	Attempt int
}

// StepHook is consulted before each attempt of every Step (WithStepHook). It may return a
// function to run instead of the step's own (it must be a func(context.Context) (T, error)
// of the step's result type T), or an error that fails the attempt without running
// anything; nil and nil run the step as written.
type StepHook func(call StepCall) (replace any, fail error)

// WithStepHook installs a step hook: meant for tests (package sdktest builds its step
// overrides and injected failures on it), never needed in production code.
func WithStepHook(h StepHook) Option {
	return engineOption(func(e *Engine) error { e.stepHook = h; return nil })
}
