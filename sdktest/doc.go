// Package sdktest is a test kit for code built on chronoforge: it runs workflows inside a
// unit test, in the test's goroutine, with time under the test's control.
//
// New builds an Env: an sdk.Engine over a fresh in-memory store (package storage/memory) with
// an sdk.FakeClock that starts at DefaultStart and moves only when the Env moves it. Nothing
// runs in the background: workflows run when the test calls
//
//   - Drain: run everything due now, then jump the clock to the next timer (a sleep, a step's
//     retry delay, a wait's next check, a merge probe) and run again, until no workflow is due
//     and none has a timer (every one is final, stalled, or waits for a message or a signal);
//   - Advance: move the clock by a duration and run what is due at that instant;
//   - RunDue: run what is due now, without moving the clock.
//
// So a workflow that sleeps for 30 days, retries a step with backoff and then waits for a
// message runs to its end in milliseconds of real time, deterministically.
//
// OverrideStep and FailStep replace a step's function or inject failures into its first
// attempts (through sdk.WithStepHook), so a unit test needs no fake payment provider.
// State, Steps, Errors, Children and Result inspect what the workflows did.
//
// # Errors
//
// Control calls that a test may expect to fail (Send, Signal, Retry, Cancel) return the
// engine's error unchanged, for the test to assert (errors.Is(err, sdk.ErrWrongState)).
// Everything else fails the test with t.Fatalf on an error, because it only goes wrong when
// the test itself is wrong: a storage error, a workflow that never settles, a Result asked of
// a workflow that is still running.
//
// An Env is meant for one test goroutine: do not call its methods from step functions or
// from other goroutines.
package sdktest
