package memory

import (
	"slices"

	"github.com/chronoforge/chronoforge/storage"
)

// Every change of a stored workflow goes through add, update or drop, which keep the indexes
// (due, finished, children, order) in step with the rows.

// add stores a new workflow row and indexes it.
func (s *Store) add(w storage.Workflow) *record {
	r := &record{w: w}
	s.byID[w.ID] = r
	s.byKey[nameKey{w.Name, w.Key}] = r
	s.order = append(s.order, w.ID) // IDs only grow, so the order stays ascending
	if w.ParentStepID != 0 {
		b := s.children[w.ParentStepID]
		if b == nil {
			b = &branch{byState: map[storage.State]map[int64]struct{}{}}
			s.children[w.ParentStepID] = b
		}
		b.ids = append(b.ids, w.ID)
	}
	s.reindex(r, storage.Workflow{})
	return r
}

// update applies change to the row of r and moves it in the indexes it changed places in.
func (s *Store) update(r *record, change func(w *storage.Workflow)) {
	before := r.w
	change(&r.w)
	s.reindex(r, before)
}

// reindex moves r from the index positions of before (a zero Workflow: none) to those of its
// current row.
func (s *Store) reindex(r *record, before storage.Workflow) {
	w := &r.w
	if !before.RunAt.Equal(w.RunAt) {
		if !before.RunAt.IsZero() {
			s.unqueue(w.Name, entry{micros(before.RunAt), w.ID})
		}
		if !w.RunAt.IsZero() {
			s.enqueue(w.Name, entry{micros(w.RunAt), w.ID})
		}
	}
	if before.State != w.State && w.ParentStepID != 0 {
		b := s.children[w.ParentStepID]
		b.leave(before.State, w.ID)
		set := b.byState[w.State]
		if set == nil {
			set = map[int64]struct{}{}
			b.byState[w.State] = set
		}
		set[w.ID] = struct{}{}
	}
	wasFinal, isFinal := before.State.Final(), w.State.Final()
	if wasFinal && (!isFinal || !before.FinishedAt.Equal(w.FinishedAt)) {
		s.finished.remove(entry{micros(before.FinishedAt), w.ID})
	}
	if isFinal && (!wasFinal || !before.FinishedAt.Equal(w.FinishedAt)) {
		s.finished.insert(entry{micros(w.FinishedAt), w.ID})
	}
}

// leave takes child id out of the set of state.
func (b *branch) leave(state storage.State, id int64) {
	if set := b.byState[state]; set != nil {
		delete(set, id)
		if len(set) == 0 {
			delete(b.byState, state)
		}
	}
}

func (s *Store) enqueue(name string, e entry) {
	s.due.insert(e)
	q := s.dueByName[name]
	if q == nil {
		q = &queue{}
		s.dueByName[name] = q
	}
	q.insert(e)
}

func (s *Store) unqueue(name string, e entry) {
	s.due.remove(e)
	if q := s.dueByName[name]; q != nil {
		q.remove(e)
		if q.len() == 0 {
			delete(s.dueByName, name)
		}
	}
}

// drop deletes the workflows of ids with their steps and error records, and every index
// entry of them. Children of a dropped workflow's branch steps stay; their ParentStepID then
// names a step that is gone.
func (s *Store) drop(ids []int64) {
	gone := make(map[int64]struct{}, len(ids))
	for _, id := range ids {
		r := s.byID[id]
		if r == nil {
			continue
		}
		gone[id] = struct{}{}
		w := &r.w
		if !w.RunAt.IsZero() {
			s.unqueue(w.Name, entry{micros(w.RunAt), id})
		}
		if w.State.Final() {
			s.finished.remove(entry{micros(w.FinishedAt), id})
		}
		if w.ParentStepID != 0 {
			b := s.children[w.ParentStepID]
			b.leave(w.State, id)
			if i, ok := slices.BinarySearch(b.ids, id); ok {
				b.ids = slices.Delete(b.ids, i, i+1)
			}
			if len(b.ids) == 0 {
				delete(s.children, w.ParentStepID)
			}
		}
		for _, st := range r.steps {
			delete(s.stepOwner, st.ID)
		}
		delete(s.byKey, nameKey{w.Name, w.Key})
		delete(s.byID, id)
	}
	s.order = slices.DeleteFunc(s.order, func(id int64) bool {
		_, ok := gone[id]
		return ok
	})
}
