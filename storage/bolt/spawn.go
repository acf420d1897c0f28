package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/chronoforge/chronoforge/storage"
)

// Branch units: spawning a batch of children under the parent's lease, and counting a
// branch's children by state from the children index.

// SpawnBatch writes one batch of a branch's children in one write transaction, fenced by the
// parent's lease like SaveSteps. It upserts r.Steps, resolves the branch step r.Branch (which
// must then be recorded on the parent, else the error wraps storage.ErrInvalid; the first
// batch records it in the branches index for WakeMergeWaiters), and inserts
// every child whose name and key are not stored yet: idle, runnable at its RunAt (r.Now when
// zero), with ParentStepID set to the branch step's ID. Existing children of the same branch
// step, including a repeat within the batch, are left as they are; a name and key held by any
// other workflow (read from the keys index and the workflow record, in process) refuses the
// batch with a *storage.ConflictError. Any error leaves the store unchanged.
func (s *Store) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	if err := storage.ValidateLease(l); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := storage.ValidateSpawn(r); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.SpawnResult{}, err
	}
	now := r.Now.UTC()
	var out storage.SpawnResult
	err := s.update(func(t *txn) error {
		old, err := t.fence(l, s.clock())
		if err != nil {
			return err
		}
		w := *old
		hadBranch := t.steps.Get(childKey(w.ID, []byte(r.Branch))) != nil
		if err := t.commit(&w, storage.Commit{Steps: r.Steps, Now: r.Now}); err != nil {
			return err
		}
		v := t.steps.Get(childKey(w.ID, []byte(r.Branch)))
		if v == nil {
			return fmt.Errorf("%w: branch step %q is neither in the batch nor recorded on workflow %d", storage.ErrInvalid, r.Branch, w.ID)
		}
		branch, err := decodeStep(v)
		if err != nil {
			return fmt.Errorf("workflow %d step %q: %w", w.ID, r.Branch, err)
		}
		out = storage.SpawnResult{BranchStepID: branch.ID}
		if err := t.indexBranch(branch.ID, w.ID); err != nil {
			return err
		}
		var (
			conflict *storage.ConflictError
			counted  map[int64]bool // holders met, once the batch is refused
		)
		for _, c := range r.Children {
			nk := nameKey(c.Name, c.Key)
			if id := t.keys.Get(nk); id != nil {
				held, err := t.get(int64(beUint(id)))
				if err != nil {
					return err
				}
				if held.ParentStepID != branch.ID {
					if conflict != nil {
						if !counted[held.ID] { // a repeat within the batch counts once
							counted[held.ID] = true
							conflict.Others++
						}
						continue
					}
					counted = map[int64]bool{held.ID: true}
					conflict = &storage.ConflictError{
						WorkflowID: w.ID, Branch: r.Branch, BranchStepID: branch.ID,
						ID: held.ID, Name: held.Name, Key: held.Key, ParentStepID: held.ParentStepID,
					}
					if !hadBranch {
						conflict.BranchStepID = 0 // recorded by this batch, which is refused
					}
				}
				continue
			}
			if conflict != nil {
				continue // the batch is refused; only count further conflicts
			}
			seq, err := t.workflows.NextSequence()
			if err != nil {
				return err
			}
			runAt := now
			if !c.RunAt.IsZero() {
				runAt = c.RunAt.UTC()
			}
			child := &record{Workflow: storage.Workflow{
				ID:           int64(seq),
				Name:         c.Name,
				Key:          c.Key,
				Input:        c.Input,
				State:        storage.StateIdle,
				RunAt:        runAt,
				ParentStepID: branch.ID,
				TraceContext: c.TraceContext,
				Tags:         tagsOrNil(c.Tags),
				Flow:         c.Flow,
				CreatedAt:    now,
				UpdatedAt:    now,
			}}
			if err := t.keys.Put(nk, idKey(child.ID)); err != nil {
				return err
			}
			if err := t.put(nil, child); err != nil {
				return err
			}
			out.Inserted++
		}
		if conflict != nil {
			return conflict // the transaction rolls back: nothing of the batch is written
		}
		return t.put(old, &w)
	})
	if err != nil {
		return storage.SpawnResult{}, fmt.Errorf("bolt: spawn batch of branch %q: %w", r.Branch, err)
	}
	return out, nil
}

// CountChildren counts the children of q.StepIDs in q.States from the children index, in one
// read transaction. It walks only the (step, state) ranges asked for and stops at q.Cap, so
// it visits at most q.Cap entries however many children there are. Repeated step IDs or
// states count once.
func (s *Store) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	if err := storage.ValidateChildQuery(q); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	stepIDs := slices.Compact(slices.Sorted(slices.Values(q.StepIDs)))
	states := slices.Compact(slices.Sorted(slices.Values(q.States)))
	n := 0
	err := s.view(func(t *txn) error {
		for _, stepID := range stepIDs {
			for _, st := range states {
				prefix := parentStatePrefix(stepID, st)
				c := t.children.Cursor()
				for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < q.Cap; k, _ = c.Next() {
					n++
				}
				if n >= q.Cap {
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bolt: count children: %w", err)
	}
	return n, nil
}
