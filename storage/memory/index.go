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
			s.unqueue(w.Name, w.Flow, entry{micros(before.RunAt), w.ID})
		}
		if !w.RunAt.IsZero() {
			s.enqueue(w.Name, w.Flow, entry{micros(w.RunAt), w.ID})
		}
	}
	if w.Flow != "" && (before.State == storage.StateRunning) != (w.State == storage.StateRunning) {
		s.trackRunning(w.Flow, w.ID, w.State == storage.StateRunning)
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

// enqueue adds e, a workflow of name governed by flow (empty: none), to the due queues:
// every row to due, and each to the queues its claims walk, dueByName and dueFree for a
// workflow without a flow and dueByFlow for one with, so a flow's held-back rows are never
// walked by the claims of other workflows.
func (s *Store) enqueue(name, flow string, e entry) {
	s.due.insert(e)
	if flow == "" {
		s.dueFree.insert(e)
		queueAt(s.dueByName, name).insert(e)
		return
	}
	byFlow := s.dueByFlow[name]
	if byFlow == nil {
		byFlow = map[string]*queue{}
		s.dueByFlow[name] = byFlow
	}
	queueAt(byFlow, flow).insert(e)
}

// queueAt returns m[k], adding an empty queue when there is none.
func queueAt(m map[string]*queue, k string) *queue {
	q := m[k]
	if q == nil {
		q = &queue{}
		m[k] = q
	}
	return q
}

// unqueue takes e out of the queues enqueue put it in.
func (s *Store) unqueue(name, flow string, e entry) {
	s.due.remove(e)
	if flow == "" {
		s.dueFree.remove(e)
		removeAt(s.dueByName, name, e)
		return
	}
	if byFlow := s.dueByFlow[name]; byFlow != nil {
		removeAt(byFlow, flow, e)
		if len(byFlow) == 0 {
			delete(s.dueByFlow, name)
		}
	}
}

// removeAt takes e out of m[k] and drops the queue once it is empty.
func removeAt(m map[string]*queue, k string, e entry) {
	if q := m[k]; q != nil {
		q.remove(e)
		if q.len() == 0 {
			delete(m, k)
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
			s.unqueue(w.Name, w.Flow, entry{micros(w.RunAt), id})
		}
		if w.State.Final() {
			s.finished.remove(entry{micros(w.FinishedAt), id})
		}
		if w.Flow != "" && w.State == storage.StateRunning {
			s.trackRunning(w.Flow, id, false)
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
