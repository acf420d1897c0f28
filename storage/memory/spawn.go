package memory

import (
	"context"
	"fmt"

	"github.com/chronoforge/chronoforge/storage"
)

// SpawnBatch writes one batch of a branch's children under the parent's lease l: it upserts
// r.Steps and inserts the children not stored yet, linked to the branch step. Everything that
// can refuse the batch is checked before anything is written, in this order: the input, the
// lease (storage.Fence), the branch step (among r.Steps or stored, else ErrInvalid), and the
// children's names and keys (held by a workflow that is not a child of this branch step: a
// *storage.ConflictError naming the first in batch order).
func (s *Store) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	if err := storage.ValidateLease(l); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := storage.ValidateSpawn(r); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := s.begin(ctx, "spawn batch"); err != nil {
		return storage.SpawnResult{}, err
	}
	defer s.mu.Unlock()
	parent, err := s.fenced("spawn batch", l)
	if err != nil {
		return storage.SpawnResult{}, err
	}

	var branchID int64 // the stored branch step's ID, 0 if this batch records it first
	if st := parent.step(r.Branch); st != nil {
		branchID = st.ID
	} else if !hasStep(r.Steps, r.Branch) {
		return storage.SpawnResult{}, fmt.Errorf("memory: spawn batch: %w: branch step %q of workflow %d is neither stored nor among the batch's steps", storage.ErrInvalid, r.Branch, l.WorkflowID)
	}

	// New children, each name and key once; a stored one is this branch's own (skipped) or a
	// conflict.
	var conflict *storage.ConflictError
	seen := make(map[nameKey]struct{}, len(r.Children))
	fresh := make([]storage.NewWorkflow, 0, len(r.Children))
	for _, c := range r.Children {
		k := nameKey{c.Name, c.Key}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		held := s.byKey[k]
		switch {
		case held == nil:
			fresh = append(fresh, c)
		case branchID != 0 && held.w.ParentStepID == branchID:
			// Already spawned by an earlier application of this batch.
		case conflict == nil:
			conflict = &storage.ConflictError{
				WorkflowID: l.WorkflowID, Branch: r.Branch, BranchStepID: branchID,
				ID: held.w.ID, Name: held.w.Name, Key: held.w.Key, ParentStepID: held.w.ParentStepID,
			}
		default:
			conflict.Others++
		}
	}
	if conflict != nil {
		return storage.SpawnResult{}, fmt.Errorf("memory: spawn batch: %w", conflict)
	}

	s.commit(parent, storage.Commit{Steps: r.Steps, Now: r.Now})
	branchID = parent.step(r.Branch).ID
	for _, c := range fresh {
		s.insert(c, branchID, r.Now)
	}
	if len(fresh) > 0 {
		s.notify()
	}
	return storage.SpawnResult{BranchStepID: branchID, Inserted: len(fresh)}, nil
}

func hasStep(steps []storage.Step, name string) bool {
	for _, st := range steps {
		if st.Name == name {
			return true
		}
	}
	return false
}

// CountChildren counts the children of q.StepIDs whose state is in q.States, at most q.Cap:
// one lookup of a set's size per step and state, however many children there are.
func (s *Store) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	if err := storage.ValidateChildQuery(q); err != nil {
		return 0, err
	}
	if err := s.begin(ctx, "count children"); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	states := uniq(q.States)
	n := 0
	for _, id := range uniq(q.StepIDs) {
		if b := s.children[id]; b != nil {
			for _, st := range states {
				n += len(b.byState[st])
			}
		}
		if n >= q.Cap {
			return q.Cap, nil
		}
	}
	return n, nil
}
