package storage

import "errors"

// Sentinel errors. Backends wrap them with context; callers test with errors.Is.
var (
	// ErrNotFound: no workflow (or record) with that identity.
	ErrNotFound = errors.New("storage: not found")
	// ErrInvalid: the input was malformed (empty or overlong name or key, control characters,
	// an unknown state). Nothing was written.
	ErrInvalid = errors.New("storage: invalid input")
	// ErrTooLarge: a payload exceeded its limit. Nothing was written.
	ErrTooLarge = errors.New("storage: payload too large")
	// ErrLeaseLost: the lease is no longer the workflow's current lease, live by the store's
	// clock, so the write was refused (fencing). Nothing was written. The message says why
	// (see Fence): superseded, naming the current holder, released, or expired.
	ErrLeaseLost = errors.New("storage: lease lost")
	// ErrCancelled: the workflow was cancelled; the write was refused.
	ErrCancelled = errors.New("storage: workflow cancelled")
	// ErrWrongState: the workflow is not in a state that allows the operation.
	ErrWrongState = errors.New("storage: workflow in wrong state")
	// ErrLocked: the store is held by another process (embedded backends).
	ErrLocked = errors.New("storage: store locked by another process")
)
