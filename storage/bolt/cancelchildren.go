package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/chronoforge/chronoforge/storage"
)

// CancelChildren cancels up to r.Limit unfinished children of the branch steps r.StepIDs in
// one write transaction, each as Cancel does, and returns them with their own branch steps.
// The children are found by seeking the children index for each step and unfinished state,
// stopping at r.Limit; a cancelled child's branch steps are one prefix seek of the steps
// bucket ("branch$" under its id). Transactions are serialised, so what a child wrote before
// is all there and nothing after the commit can run under its lease.
func (s *Store) CancelChildren(ctx context.Context, r storage.CancelChildrenRequest) (storage.CancelChildrenResult, error) {
	if err := storage.ValidateCancelChildren(r); err != nil {
		return storage.CancelChildrenResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.CancelChildrenResult{}, err
	}
	stepIDs := slices.Compact(slices.Sorted(slices.Values(r.StepIDs)))
	now := r.Now.UTC()
	var out storage.CancelChildrenResult
	err := s.update(func(t *txn) error {
		out = storage.CancelChildrenResult{}
		ids := t.unfinishedChildren(stepIDs, r.Limit)
		out.More = len(ids) == r.Limit
		slices.Sort(ids)
		for _, id := range ids {
			old, err := t.get(id)
			if err != nil {
				return err
			}
			if err := t.cancel(old, now); err != nil {
				return err
			}
			branches, err := t.branchSteps(id)
			if err != nil {
				return err
			}
			out.BranchStepIDs = append(out.BranchStepIDs, branches...)
		}
		out.Cancelled = ids
		return nil
	})
	if err != nil {
		return storage.CancelChildrenResult{}, fmt.Errorf("bolt: cancel children: %w", err)
	}
	slices.Sort(out.BranchStepIDs)
	return out, nil
}

// unfinishedChildren returns up to limit IDs of children of the steps that are not final. It
// collects before anything is written: the cancels move the children's index entries.
func (t *txn) unfinishedChildren(stepIDs []int64, limit int) []int64 {
	unfinished := [...]storage.State{storage.StateRunning, storage.StateIdle, storage.StateStalled}
	var ids []int64
	c := t.children.Cursor()
	for _, stepID := range stepIDs {
		for _, st := range unfinished {
			prefix := parentStatePrefix(stepID, st)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				ids = append(ids, int64(beUint(k[len(prefix):])))
				if len(ids) == limit {
					return ids
				}
			}
		}
	}
	return ids
}

// branchSteps returns the IDs of a workflow's branch step records.
func (t *txn) branchSteps(workflowID int64) ([]int64, error) {
	var out []int64
	prefix := childKey(workflowID, []byte(storage.BranchStepPrefix))
	c := t.steps.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		id, err := stepIDOf(v)
		if err != nil {
			return nil, fmt.Errorf("workflow %d step %q: %w", workflowID, k[8:], err)
		}
		out = append(out, id)
	}
	return out, nil
}
