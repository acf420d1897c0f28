package sdk

import (
	"context"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// CleanupOptions says which final workflows Engine.Cleanup deletes. A zero cutoff leaves
// that state alone.
type CleanupOptions struct {
	// CompletedBefore: completed workflows that finished before it are deleted.
	CompletedBefore time.Time
	// FailedBefore: failed workflows that finished before it are deleted.
	FailedBefore time.Time
	// CancelledBefore: cancelled workflows that finished before it are deleted.
	CancelledBefore time.Time
	// BatchSize is how many workflows one storage call deletes at most; 0 means 1,000. Each
	// call is one atomic storage unit that also deletes at most 1,000 step rows.
	BatchSize int
}

// CleanupResult counts the workflows Engine.Cleanup deleted, per final state.
type CleanupResult struct {
	Completed, Failed, Cancelled int
}

// Total is the number of workflows deleted.
func (r CleanupResult) Total() int { return r.Completed + r.Failed + r.Cancelled }

// Cleanup deletes final workflows that finished before their state's cutoff, with their
// steps and error records, in batches of at most opts.BatchSize workflows (each batch one
// storage call, bounded in step rows too), until none is left. It never deletes an idle,
// running or stalled workflow, however old. Deleting a parent leaves its children alone: a
// child that is still live runs and completes as usual, and is deleted later by its own
// FinishedAt. On error it returns what it deleted so far with the error; running it again
// resumes. Safe to run concurrently with workers and with other cleanups on the same store.
func (e *Engine) Cleanup(ctx context.Context, opts CleanupOptions) (CleanupResult, error) {
	var res CleanupResult
	for _, c := range []struct {
		state  storage.State
		before time.Time
		n      *int
	}{
		{storage.StateCompleted, opts.CompletedBefore, &res.Completed},
		{storage.StateFailed, opts.FailedBefore, &res.Failed},
		{storage.StateCancelled, opts.CancelledBefore, &res.Cancelled},
	} {
		if c.before.IsZero() {
			continue
		}
		r := storage.CleanupRequest{Before: c.before, States: []storage.State{c.state}, Limit: opts.BatchSize}
		limit := storage.CleanupLimit(r)
		for {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			got, err := e.store.DeleteFinished(ctx, r)
			*c.n += got.Deleted
			if err != nil {
				return res, fmt.Errorf("cleanup %s workflows finished before %v: %w", c.state, c.before, err)
			}
			// A full batch may have left more behind; More means a workflow of this batch
			// still has steps to delete.
			if got.Deleted < limit && !got.More {
				break
			}
		}
	}
	return res, nil
}
