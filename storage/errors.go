package storage

import (
	"errors"
	"fmt"
)

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
	// ErrLeaseReleased: the lease's own holder ended it (its run finished or gave it back), so
	// a write under it, typically a heartbeat racing the run's final write, was refused. It
	// comes wrapped together with ErrLeaseLost; nobody else holds the workflow.
	ErrLeaseReleased = errors.New("storage: lease released by its holder")
	// ErrCancelled: the workflow was cancelled; the write was refused.
	ErrCancelled = errors.New("storage: workflow cancelled")
	// ErrWrongState: the workflow is not in a state that allows the operation.
	ErrWrongState = errors.New("storage: workflow in wrong state")
	// ErrClosed: the store was closed; nothing was read or written.
	ErrClosed = errors.New("storage: store closed")
	// ErrLocked: the store is held by another process (embedded backends).
	ErrLocked = errors.New("storage: store locked by another process")
	// ErrConflict: a spawn met a workflow that holds a child's name and key but is not a
	// child of the branch step being spawned (another branch's child, or a root workflow).
	// The whole batch was refused: nothing was written.
	ErrConflict = errors.New("storage: child key held by another workflow")
	// ErrSchemaTooNew: the store's tables were migrated by a newer build than this one, which
	// could not keep them consistent, and are left untouched. Upgrade the binary. (SQL
	// backends, from Migrate and from any method.)
	ErrSchemaTooNew = errors.New("storage: the database schema is newer than this build")
	// ErrNotMigrated: the store's tables do not exist or are older than this build. Call the
	// backend's Migrate. (SQL backends, from any method but Migrate.)
	ErrNotMigrated = errors.New("storage: the database schema is not migrated (call Migrate)")
)

// ConflictError is the error SpawnBatch returns (possibly wrapped) when a child of the batch
// meets a workflow with the same name and key under another parent step. It matches
// ErrConflict and names both sides, so every backend reports a conflict the same way.
type ConflictError struct {
	// WorkflowID is the spawning (parent) workflow, Branch its branch step's name, and
	// BranchStepID that step's ID (0 when the refused batch would have recorded it first).
	WorkflowID   int64
	Branch       string
	BranchStepID int64
	// ID, Name, Key and ParentStepID are the existing workflow met first, in batch order;
	// ParentStepID 0 means a root workflow. ID is 0 if it was gone by the time the store
	// looked it up to report it.
	ID           int64
	Name         string
	Key          string
	ParentStepID int64
	// Others counts further children of the batch that conflict too; a name and key given
	// more than once in the batch counts once.
	Others int
}

func (e *ConflictError) Error() string {
	branch := fmt.Sprintf("branch step %q", e.Branch)
	if e.BranchStepID != 0 {
		branch = fmt.Sprintf("branch step %q (id %d)", e.Branch, e.BranchStepID)
	}
	holder := "a workflow that is not its child"
	switch {
	case e.ID != 0 && e.ParentStepID == 0:
		holder = fmt.Sprintf("workflow %d, a root workflow (parent step 0)", e.ID)
	case e.ID != 0:
		holder = fmt.Sprintf("workflow %d, a child of step %d", e.ID, e.ParentStepID)
	}
	child := fmt.Sprintf("%q key %q", e.Name, e.Key)
	if e.Key == "" {
		child = "a child of the batch"
	}
	msg := fmt.Sprintf("%v: %s of workflow %d cannot spawn %s: it is held by %s", ErrConflict, branch, e.WorkflowID, child, holder)
	if e.Others > 0 {
		msg += fmt.Sprintf(" (and %d more children of the batch conflict)", e.Others)
	}
	return msg
}

// Unwrap makes a ConflictError match ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }
