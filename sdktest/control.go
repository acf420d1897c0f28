package sdktest

import "github.com/chronoforge/chronoforge/sdk"

// The control calls below change a workflow without running it: the workflow runs at the next
// Drain, Advance or RunDue. They return the engine's error unchanged, for the test to assert.

// Send delivers v to the target's mailbox under topic, as sdk.Send does: a workflow waiting
// in sdk.Receive on that topic becomes due now. Sending to a final workflow returns an error
// matching sdk.ErrWrongState.
func (e *Env) Send(target sdk.Target, topic string, v any, opts ...sdk.SendOption) error {
	return sdk.Send(e.ctx(), e.eng, target, topic, v, opts...)
}

// Signal wakes the target so its current wait is evaluated again (sdk.Engine.Signal).
func (e *Env) Signal(target sdk.Target) error {
	return e.eng.Signal(e.ctx(), target.ID())
}

// Retry moves a stalled or failed target back to work (sdk.Engine.Retry). Injected failures
// (FailStep) count attempts across retries, so a step whose injected failures are spent runs
// its function on the retry.
func (e *Env) Retry(target sdk.Target) error {
	return e.eng.Retry(e.ctx(), target.ID())
}

// Cancel cancels the target (sdk.Engine.Cancel; sdk.WithChildren cancels its children too).
func (e *Env) Cancel(target sdk.Target, opts ...sdk.CancelOption) error {
	return e.eng.Cancel(e.ctx(), target.ID(), opts...)
}
