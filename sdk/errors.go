package sdk

import (
	"errors"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Sentinel errors of the SDK. Storage errors (storage.ErrInvalid, storage.ErrNotFound, ...)
// pass through wrapped, so errors.Is works on them too.
var (
	// ErrSuspended is returned by SDK calls once the run has stopped: a wait is pending, a
	// step is between retries or stalled, or the run lost its lease. Return it unchanged.
	ErrSuspended = errors.New("chronoforge: run suspended")
	// ErrInvalid is storage.ErrInvalid: bad names, keys or options. Nothing was written.
	ErrInvalid = storage.ErrInvalid
	// ErrTooLarge is storage.ErrTooLarge: a payload or value over its limit.
	ErrTooLarge = storage.ErrTooLarge
	// ErrNotFound is storage.ErrNotFound: no such workflow.
	ErrNotFound = storage.ErrNotFound
	// ErrWrongState is storage.ErrWrongState: the workflow's state does not allow the
	// operation (a Signal of a finished workflow, a Retry of a running one).
	ErrWrongState = storage.ErrWrongState
	// ErrConflict is storage.ErrConflict: a spawn met a workflow holding a child's name and
	// key that is not a child of that branch. Nothing of that batch was written.
	ErrConflict = storage.ErrConflict
	// ErrUnregistered: the workflow is not registered with the engine.
	ErrUnregistered = errors.New("chronoforge: workflow not registered")
	// ErrDuplicateStep: a step name was used twice in one run of a workflow.
	ErrDuplicateStep = errors.New("chronoforge: step name used twice in one run")
	// ErrDecode: a stored payload could not be decoded into the typed value.
	ErrDecode = errors.New("chronoforge: cannot decode payload")
	// ErrWaitTimeout: a WaitUntil condition did not hold before its timeout.
	ErrWaitTimeout = errors.New("chronoforge: wait timed out")
	// ErrFailed and ErrStalled match a WorkflowError by its state.
	ErrFailed  = errors.New("chronoforge: workflow failed")
	ErrStalled = errors.New("chronoforge: workflow stalled")
	// ErrCancelled is storage.ErrCancelled, the one error of a cancelled workflow: a
	// WorkflowError of a cancelled workflow (Result, Call, ChildResult) matches it, and so
	// does any write refused because the workflow was cancelled meanwhile.
	ErrCancelled = storage.ErrCancelled
	// ErrStepTimeout: a step's attempt ran past its StepTimeout; the attempt failed and the
	// step's policy decides whether it is tried again.
	ErrStepTimeout = errors.New("chronoforge: step attempt timed out")
)

// WorkflowError is what Handle.Result returns for a workflow that did not complete: it
// carries the final state and the last error message recorded.
type WorkflowError struct {
	ID      int64
	Name    string
	Key     string
	State   State
	Message string
}

func (e *WorkflowError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("workflow %q key %q is %s", e.Name, e.Key, e.State)
	}
	return fmt.Sprintf("workflow %q key %q is %s: %s", e.Name, e.Key, e.State, e.Message)
}

// Is matches ErrFailed, ErrStalled or ErrCancelled by state.
func (e *WorkflowError) Is(target error) bool {
	switch e.State {
	case StateFailed:
		return target == ErrFailed
	case StateStalled:
		return target == ErrStalled
	case StateCancelled:
		return target == ErrCancelled
	}
	return false
}

// Permanent marks err as not worth retrying: the step stalls (or the workflow fails) at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// haltKind says how a run stopped.
type haltKind int

const (
	haltSuspend haltKind = iota // wait: idle until runAt (or a wake)
	haltStall                   // step or wait out of options: stalled
	haltFail                    // unrecoverable: the workflow fails
	haltAbort                   // lease lost, cancelled, shut down or storage error: write nothing
)

// haltError is the sticky error that stops a run. It matches ErrSuspended.
type haltError struct {
	kind  haltKind
	runAt time.Time
	wait  storage.Wait
	cause error
	// recorded: the cause has its error record already, so the run's end adds none.
	recorded bool
}

func (h *haltError) Error() string {
	switch h.kind {
	case haltSuspend:
		if h.runAt.IsZero() {
			return fmt.Sprintf("%v: waiting (%s %s) for a signal", ErrSuspended, h.wait.Kind, h.wait.Step)
		}
		return fmt.Sprintf("%v: waiting (%s %s) until %s", ErrSuspended, h.wait.Kind, h.wait.Step, h.runAt.Format(time.RFC3339Nano))
	case haltStall:
		return fmt.Sprintf("%v: stalled: %v", ErrSuspended, h.cause)
	case haltFail:
		return fmt.Sprintf("%v: failing: %v", ErrSuspended, h.cause)
	}
	return fmt.Sprintf("%v: aborted: %v", ErrSuspended, h.cause)
}

func (h *haltError) Is(target error) bool { return target == ErrSuspended }
func (h *haltError) Unwrap() error        { return h.cause }
