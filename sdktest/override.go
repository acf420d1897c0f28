package sdktest

import (
	"context"
	"reflect"

	"github.com/chronoforge/chronoforge/sdk"
)

// stepKey names a step of every workflow of one name.
type stepKey struct{ workflow, step string }

// failure is an injected failure: the step's first times attempts fail with err.
type failure struct {
	times int
	err   error
}

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
)

// OverrideStep makes every attempt of the step named step, in every workflow named workflow,
// run fn instead of the step's own function, from the next attempt on. fn must be a
// func(context.Context) (T, error) where T is the step's result type: a function of another
// shape fails the test at once, and one of the right shape but another T stalls the workflow
// with an error matching sdk.ErrInvalid (the SDK checks it). A nil fn removes the override.
//
// Overrides apply to sdk.Step calls; a result already recorded is replayed, not overridden.
func (e *Env) OverrideStep(workflow, step string, fn any) {
	e.t.Helper()
	k := stepKey{workflow, step}
	if fn == nil {
		e.mu.Lock()
		delete(e.overrides, k)
		e.mu.Unlock()
		return
	}
	ft := reflect.TypeOf(fn)
	if ft.Kind() != reflect.Func || ft.Name() != "" || ft.NumIn() != 1 || ft.In(0) != contextType ||
		ft.NumOut() != 2 || ft.Out(1) != errorType || ft.IsVariadic() {
		e.t.Fatalf("sdktest: OverrideStep(%q, %q): fn is a %v, not a func(context.Context) (T, error)", workflow, step, ft)
		return
	}
	e.mu.Lock()
	e.overrides[k] = fn
	e.mu.Unlock()
}

// FailStep makes the first times attempts of the step named step, in every workflow named
// workflow, fail with err without running the step's function; later attempts run it (or
// its override). Attempts are counted as the SDK counts them (sdk.StepCall.Attempt): per
// workflow, from the step's first execution, across operator retries. So with the default
// step policy (3 attempts) FailStep(wf, s, 2, err) is retried into a success, and
// FailStep(wf, s, 3, err) stalls the workflow. Wrap err with sdk.Permanent to stall at the
// first attempt. A times of 0 or less removes the failure; a nil err fails the test.
func (e *Env) FailStep(workflow, step string, times int, err error) {
	e.t.Helper()
	k := stepKey{workflow, step}
	e.mu.Lock()
	defer e.mu.Unlock()
	if times <= 0 {
		delete(e.failures, k)
		return
	}
	if err == nil {
		e.t.Fatalf("sdktest: FailStep(%q, %q): a nil error fails nothing", workflow, step)
		return
	}
	e.failures[k] = failure{times: times, err: err}
}

// hook is the engine's step hook: it consults the Env's tables.
func (e *Env) hook(c sdk.StepCall) (replace any, fail error) {
	k := stepKey{c.Workflow, c.Step}
	e.mu.Lock()
	defer e.mu.Unlock()
	if f, ok := e.failures[k]; ok && c.Attempt <= f.times {
		return nil, f.err
	}
	return e.overrides[k], nil
}
