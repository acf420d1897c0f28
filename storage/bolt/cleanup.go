package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// DeleteFinished deletes up to r.Limit (0 means 1,000) final workflows in r.States whose
// FinishedAt is before r.Before, oldest first, with their key, steps, error records, messages
// and index entries, in one write transaction. At most r.StepBudget step records go per call: the first
// workflow whose steps do not fit loses as many as fit and stays for a later call (More).
func (s *Store) DeleteFinished(ctx context.Context, r storage.CleanupRequest) (storage.CleanupResult, error) {
	if err := storage.ValidateCleanup(r); err != nil {
		return storage.CleanupResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.CleanupResult{}, err
	}
	limit, budget, states := storage.CleanupLimit(r), storage.CleanupSteps(r), storage.CleanupStates(r)
	cutoff := timeIDKey(r.Before, 0) // id 0 is never used, so this sorts before every row at Before
	var res storage.CleanupResult
	err := s.update(func(t *txn) error {
		res = storage.CleanupResult{}
		var ids []int64
		var partial int64
		var partialSteps [][]byte
		c := t.finished.Cursor()
		for k, _ := c.First(); k != nil && len(ids) < limit && bytes.Compare(k, cutoff) < 0; k, _ = c.Next() {
			id := int64(beUint(k[8:]))
			w, err := t.get(id)
			if err != nil {
				return err
			}
			if !slices.Contains(states, w.State) {
				continue
			}
			// Read at most one step past the budget left: enough to know whether all fit.
			left := budget - res.Steps
			steps := prefixKeysN(t.steps, idKey(id), left+1)
			if len(steps) > left {
				partial, partialSteps = id, steps[:left]
				break
			}
			res.Steps += len(steps)
			ids = append(ids, id)
		}
		// Deleting under the cursor would move it: the walk collects, this deletes.
		for _, id := range ids {
			if err := t.delete(id); err != nil {
				return err
			}
		}
		if partial != 0 {
			if err := t.deleteSteps(partial, partialSteps); err != nil {
				return err
			}
			res.Steps += len(partialSteps)
			res.More = true
		}
		res.Deleted = len(ids)
		return nil
	})
	if err != nil {
		return storage.CleanupResult{}, fmt.Errorf("bolt: delete finished before %v: %w", r.Before, err)
	}
	return res, nil
}

// deleteSteps removes the step records under keys (of workflow id) and their branch index
// entries, leaving the workflow and its other steps.
func (t *txn) deleteSteps(id int64, keys [][]byte) error {
	for _, k := range keys {
		if stepID, err := stepIDOf(t.steps.Get(k)); err != nil {
			return fmt.Errorf("workflow %d step %q: %w", id, k[8:], err)
		} else if err := t.branches.Delete(idKey(stepID)); err != nil {
			return err
		}
		if err := t.steps.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// prefixKeysN returns copies of at most n keys of b that start with prefix, in order.
func prefixKeysN(b *bbolt.Bucket, prefix []byte, n int) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(keys) < n && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte{}, k...))
	}
	return keys
}

// delete removes a workflow with everything stored under it: steps, error records and its
// mailbox (messages, waiting ones and keys).
func (t *txn) delete(id int64) error {
	r, err := t.get(id)
	if err != nil {
		return err
	}
	if err := t.unindex(r); err != nil {
		return err
	}
	if err := t.keys.Delete(nameKey(r.Name, r.Key)); err != nil {
		return err
	}
	if err := t.workflows.Delete(idKey(id)); err != nil {
		return err
	}
	if err := t.unindexBranches(id); err != nil {
		return err
	}
	for _, b := range []*bbolt.Bucket{t.steps, t.errors, t.messages, t.mailbox, t.msgKeys} {
		for _, k := range prefixKeys(b, idKey(id)) {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}
