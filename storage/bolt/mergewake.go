package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// Waking the parents of drained branches, and the branches index that finds a branch step's
// workflow: step records are keyed by workflow and name, so without it a step ID names no row.

// WakeMergeWaiters wakes the owner of every step of r.StepIDs that has no child in r.States,
// if the owner is idle on a merge wait (RunAt becomes the earlier of RunAt and r.At) or
// running (the wake is kept for FinishRun, as Wake does). Owners are found in the branches
// index, which SpawnBatch fills, so a step no SpawnBatch named wakes nothing. A read
// transaction seeks one key per step and state in the children index and finds what would
// change; only then does one write transaction, shared with concurrent finishes, check again
// and wake. Repeated calls for parents already woken write nothing.
func (s *Store) WakeMergeWaiters(ctx context.Context, r storage.MergeWakeRequest) (int, error) {
	if err := storage.ValidateMergeWake(r); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	stepIDs := slices.Compact(slices.Sorted(slices.Values(r.StepIDs)))
	states := slices.Compact(slices.Sorted(slices.Values(r.States)))
	at := r.At.UTC()
	var woken, changes int
	err := s.view(func(t *txn) error {
		var err error
		woken, changes, err = t.wakeMergeWaiters(stepIDs, states, at, false)
		return err
	})
	if err == nil && changes > 0 {
		err = s.batch(func(t *txn) error {
			var err error
			woken, _, err = t.wakeMergeWaiters(stepIDs, states, at, true)
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("bolt: wake merge waiters: %w", err)
	}
	return woken, nil
}

// wakeMergeWaiters finds the owners to wake and, when write is set, wakes them. It returns
// how many owners qualify and how many of them a write would change.
func (t *txn) wakeMergeWaiters(stepIDs []int64, states []storage.State, at time.Time, write bool) (woken, changes int, err error) {
	seen := map[int64]bool{}
	children := t.children.Cursor()
	for _, stepID := range stepIDs {
		v := t.branches.Get(idKey(stepID))
		if v == nil || hasChildIn(children, stepID, states) {
			continue
		}
		owner := int64(beUint(v))
		if seen[owner] {
			continue
		}
		seen[owner] = true
		old, err := t.get(owner)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		w := *old
		switch {
		case old.State == storage.StateIdle && old.Wait.Kind == storage.WaitMerge:
			w.RunAt = storage.Earliest(old.RunAt, at)
		case old.State == storage.StateRunning:
			// RunAt must stay equal to the lease expiry while leased.
			w.Wake = storage.Earliest(old.Wake, at)
		default:
			continue
		}
		woken++
		if w.RunAt.Equal(old.RunAt) && w.Wake.Equal(old.Wake) {
			continue
		}
		changes++
		if write {
			if err := t.put(old, &w); err != nil {
				return 0, 0, err
			}
		}
	}
	return woken, changes, nil
}

// hasChildIn reports whether the branch step has a child in one of states: one seek per state,
// stopping at the first child found.
func hasChildIn(c *bbolt.Cursor, stepID int64, states []storage.State) bool {
	for _, st := range states {
		prefix := parentStatePrefix(stepID, st)
		if k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// indexBranch records the workflow that owns a branch step, once.
func (t *txn) indexBranch(stepID, workflowID int64) error {
	k := idKey(stepID)
	if t.branches.Get(k) != nil {
		return nil
	}
	return t.branches.Put(k, idKey(workflowID))
}

// unindexBranches removes the branches index entries of a workflow's step records, before the
// workflow is deleted.
func (t *txn) unindexBranches(workflowID int64) error {
	c := t.steps.Cursor()
	prefix := idKey(workflowID)
	var stepIDs []int64
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		id, err := stepIDOf(v)
		if err != nil {
			return fmt.Errorf("workflow %d step %q: %w", workflowID, k[8:], err)
		}
		stepIDs = append(stepIDs, id)
	}
	for _, id := range stepIDs {
		if err := t.branches.Delete(idKey(id)); err != nil {
			return err
		}
	}
	return nil
}

// indexBranchesFrom fills the branches index of a file written before it existed: every step
// that children name as their parent is looked up once in a pass over the step records.
// Branches without children need no entry: nothing can be left to wait for.
func indexBranchesFrom(t *txn) error {
	parents := map[int64]bool{}
	c := t.children.Cursor()
	for k, _ := c.First(); k != nil; {
		id := beUint(k[:8])
		parents[int64(id)] = true
		if id == ^uint64(0) {
			break
		}
		k, _ = c.Seek(idKey(int64(id + 1)))
	}
	if len(parents) == 0 {
		return nil
	}
	return t.steps.ForEach(func(k, v []byte) error {
		id, err := stepIDOf(v)
		if err != nil {
			return fmt.Errorf("step record %x: %w", k, err)
		}
		if !parents[id] {
			return nil
		}
		return t.indexBranch(id, int64(beUint(k[:8])))
	})
}

// stepIDOf reads a step record's ID without decoding the rest: it follows the version byte
// and the workflow ID.
func stepIDOf(v []byte) (int64, error) {
	d := decoder{b: v}
	d.version("step")
	d.int() // workflow id
	id := d.int()
	if d.err != nil {
		return 0, fmt.Errorf("decode step: %w", d.err)
	}
	return id, nil
}
