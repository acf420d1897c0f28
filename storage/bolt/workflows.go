package bolt

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// CreateWorkflow stores a new idle workflow runnable at w.RunAt (w.Now when zero), or returns
// the existing workflow with the same name and key unchanged with created == false. The
// write transaction makes the check and the insert atomic.
func (s *Store) CreateWorkflow(ctx context.Context, w storage.NewWorkflow) (storage.Workflow, bool, error) {
	if err := storage.ValidateNew(w); err != nil {
		return storage.Workflow{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Workflow{}, false, err
	}
	var (
		out     storage.Workflow
		created bool
	)
	err := s.update(func(t *txn) error {
		var err error
		out, created, err = t.create(w)
		return err
	})
	if err != nil {
		return storage.Workflow{}, false, fmt.Errorf("bolt: create workflow %q key %q: %w", w.Name, w.Key, err)
	}
	return unalias(out), created, nil
}

// CreateWorkflows creates each workflow of ws whose name and key are not stored, and answers
// the stored one for the others, in the order of ws, in one write transaction (one fsync for
// the batch). Any error rolls the whole batch back.
func (s *Store) CreateWorkflows(ctx context.Context, ws []storage.NewWorkflow) ([]storage.Workflow, []bool, error) {
	if err := storage.ValidateCreateBatch(ws); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	out, created := make([]storage.Workflow, len(ws)), make([]bool, len(ws))
	err := s.update(func(t *txn) error {
		for i, w := range ws {
			var err error
			if out[i], created[i], err = t.create(w); err != nil {
				return fmt.Errorf("workflow %d (%q key %q): %w", i, w.Name, w.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bolt: create %d workflows: %w", len(ws), err)
	}
	for i := range out {
		out[i] = unalias(out[i])
	}
	return out, created, nil
}

// create stores w as a new idle workflow runnable at w.RunAt (w.Now when zero), or returns the
// stored workflow of its name and key with created == false.
func (t *txn) create(w storage.NewWorkflow) (storage.Workflow, bool, error) {
	nk := nameKey(w.Name, w.Key)
	if v := t.keys.Get(nk); v != nil {
		r, err := t.get(int64(beUint(v)))
		if err != nil {
			return storage.Workflow{}, false, err
		}
		return r.Workflow, false, nil
	}
	seq, err := t.workflows.NextSequence()
	if err != nil {
		return storage.Workflow{}, false, err
	}
	now := w.Now.UTC()
	runAt := w.RunAt
	if runAt.IsZero() {
		runAt = now
	}
	r := &record{Workflow: storage.Workflow{
		ID:           int64(seq),
		Name:         w.Name,
		Key:          w.Key,
		Input:        w.Input,
		State:        storage.StateIdle,
		RunAt:        runAt.UTC(),
		ParentStepID: w.ParentStepID,
		TraceContext: w.TraceContext,
		Tags:         tagsOrNil(w.Tags),
		Flow:         w.Flow,
		CreatedAt:    now,
		UpdatedAt:    now,
	}}
	if err := t.keys.Put(nk, idKey(r.ID)); err != nil {
		return storage.Workflow{}, false, err
	}
	if err := t.put(nil, r); err != nil {
		return storage.Workflow{}, false, err
	}
	return r.Workflow, true, nil
}

// unalias copies what a workflow built from the caller's input shares with it (input, trace
// context, tags), so that the result does not alias the caller's buffers.
func unalias(w storage.Workflow) storage.Workflow {
	w.Input = slices.Clone(w.Input)
	w.TraceContext = slices.Clone(w.TraceContext)
	w.Tags = tagsOrNil(w.Tags)
	return w
}

// tagsOrNil copies tags; none (nil or empty) is nil, as the contract returns it.
func tagsOrNil(tags map[string]string) map[string]string {
	if len(tags) == 0 {
		return nil
	}
	return maps.Clone(tags)
}

// GetWorkflow returns the workflow with the given id, or an error wrapping
// storage.ErrNotFound.
func (s *Store) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	if err := ctx.Err(); err != nil {
		return storage.Workflow{}, err
	}
	var out storage.Workflow
	err := s.view(func(t *txn) error {
		r, err := t.get(id)
		if err != nil {
			return err
		}
		out = r.Workflow
		return nil
	})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("bolt: %w", err)
	}
	return out, nil
}

// FindWorkflow returns the workflow with the given name and key, or an error wrapping
// storage.ErrNotFound.
func (s *Store) FindWorkflow(ctx context.Context, name, key string) (storage.Workflow, error) {
	if err := storage.ValidateFind(name, key); err != nil {
		return storage.Workflow{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Workflow{}, err
	}
	var out storage.Workflow
	err := s.view(func(t *txn) error {
		v := t.keys.Get(nameKey(name, key))
		if v == nil {
			return storage.ErrNotFound
		}
		r, err := t.get(int64(beUint(v)))
		if err != nil {
			return err
		}
		out = r.Workflow
		return nil
	})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("bolt: workflow %q key %q: %w", name, key, err)
	}
	return out, nil
}

// Load returns the workflow and all its step records, ordered by step ID, from one read
// transaction.
func (s *Store) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	if err := ctx.Err(); err != nil {
		return storage.Workflow{}, nil, err
	}
	var (
		out   storage.Workflow
		steps []storage.Step
	)
	err := s.view(func(t *txn) error {
		r, err := t.get(id)
		if err != nil {
			return err
		}
		out = r.Workflow
		prefix := idKey(id)
		c := t.steps.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			st, err := decodeStep(v)
			if err != nil {
				return fmt.Errorf("workflow %d step %q: %w", id, k[8:], err)
			}
			steps = append(steps, st)
		}
		return nil
	})
	if err != nil {
		return storage.Workflow{}, nil, fmt.Errorf("bolt: load: %w", err)
	}
	// The bucket is ordered by name; the contract orders by ID (first-recorded first).
	slices.SortFunc(steps, func(a, b storage.Step) int { return cmp.Compare(a.ID, b.ID) })
	return out, steps, nil
}

// ListWorkflows returns one page of workflows matching f: the lowest IDs between f.AfterID
// and f.BeforeID in ascending order, or with f.Desc the highest in descending order. With
// f.KeyPrefix set it reads the IDs of the matching keys from the keys index (name 0x00 key,
// so the seek lands on the first of them and the walk stops after the last: its cost is the
// matching keys, not the workflows of the name). Otherwise, with f.ParentStepID set, it walks
// that branch step's ranges of the children index (only those of f.States, if set); with
// f.States set, the state index; else every workflow. Each walk is a bbolt cursor, forwards
// from AfterID or backwards (Seek, then Prev) from BeforeID. Tags have no index: f.Tags is
// checked on the rows the walk reads.
func (s *Store) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	if err := storage.ValidateList(f); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit := storage.ListLimit(f)
	rng := idRange{after: max(f.AfterID, 0), before: f.BeforeID, desc: f.Desc}
	// DueBy is compared as a time.Time, never encoded, so any value works as it is.
	dueBy := f.DueBy
	match := func(r *record) bool {
		if f.ParentStepID != 0 && r.ParentStepID != f.ParentStepID {
			return false
		}
		if f.Name != "" && r.Name != f.Name {
			return false
		}
		if len(f.States) > 0 && !slices.Contains(f.States, r.State) {
			return false
		}
		if !strings.HasPrefix(r.Key, f.KeyPrefix) {
			return false
		}
		if slices.Contains(f.NotNames, r.Name) {
			return false
		}
		if !dueBy.IsZero() && (r.RunAt.IsZero() || r.RunAt.After(dueBy)) {
			return false
		}
		for k, v := range f.Tags {
			if got, ok := r.Tags[k]; !ok || got != v {
				return false
			}
		}
		return true
	}
	out := make([]storage.Workflow, 0, min(limit, 16))
	err := s.view(func(t *txn) error {
		var next func() (int64, bool)
		if f.KeyPrefix != "" {
			next = t.keyPrefixIDs(f.Name, f.KeyPrefix, rng)
		} else {
			next = t.scanIDs(rng, f.States, f.ParentStepID, nil)
		}
		for len(out) < limit {
			id, ok := next()
			if !ok {
				return nil
			}
			r, err := t.get(id)
			if err != nil {
				return err
			}
			if match(r) {
				out = append(out, r.Workflow)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list workflows: %w", err)
	}
	return out, nil
}

// allStates is every state, for walking all of a branch step's ranges of the children index.
var allStates = []storage.State{storage.StateIdle, storage.StateRunning, storage.StateCompleted, storage.StateFailed, storage.StateStalled, storage.StateCancelled}

// idRange is the page bounds of a walk in ID order: IDs strictly greater than after and, when
// before is positive, strictly less than before; ascending, or descending with desc.
type idRange struct {
	after, before int64
	desc          bool
}

// in reports whether id is within the bounds.
func (r idRange) in(id int64) bool { return id > r.after && (r.before <= 0 || id < r.before) }

// keyPrefixIDs returns an iterator over the ids of the workflows of name whose key starts
// with prefix, within rng, in rng's order. The keys index is ordered by key, not ID, so the
// matching ids are read (every key with the prefix, and no other) and sorted first.
func (t *txn) keyPrefixIDs(name, prefix string, rng idRange) func() (int64, bool) {
	start := nameKey(name, prefix)
	var ids []int64
	c := t.keys.Cursor()
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, start); k, v = c.Next() {
		t.stats.prefixKeys.Add(1)
		if id := int64(beUint(v)); rng.in(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if rng.desc {
		slices.Reverse(ids)
	}
	return func() (int64, bool) {
		if len(ids) == 0 {
			return 0, false
		}
		id := ids[0]
		ids = ids[1:]
		return id, true
	}
}

// scanIDs returns an iterator over workflow ids within rng, in rng's order: every workflow;
// or with states set, a merge of those states' ranges of the state index; or with parent set,
// a merge of the children index's ranges of that branch step in those states (all states
// when none are given). Each range is in ID order and a row is in exactly one of them.
// visited, when not nil, counts the index keys read.
func (t *txn) scanIDs(rng idRange, states []storage.State, parent int64, visited *atomic.Int64) func() (int64, bool) {
	if len(states) == 0 && parent == 0 {
		return idCursor(t.workflows, nil, rng, visited)
	}
	if len(states) == 0 {
		states = allStates
	}
	type stream struct {
		next func() (int64, bool)
		head int64
		ok   bool
	}
	var streams []*stream
	seen := map[storage.State]bool{}
	for _, st := range states {
		if seen[st] {
			continue
		}
		seen[st] = true
		b, prefix := t.states, append([]byte(st), 0)
		if parent != 0 {
			b, prefix = t.children, parentStatePrefix(parent, st)
		}
		s := &stream{next: idCursor(b, prefix, rng, visited)}
		s.head, s.ok = s.next()
		streams = append(streams, s)
	}
	return func() (int64, bool) {
		var best *stream
		for _, s := range streams {
			if s.ok && (best == nil || (s.head < best.head) != rng.desc) {
				best = s
			}
		}
		if best == nil {
			return 0, false
		}
		id := best.head
		best.head, best.ok = best.next()
		return id, true
	}
}

// idCursor returns an iterator over the ids of b's keys that are prefix followed by an 8-byte
// id, within rng, in rng's order: forwards from the seek to after+1, or backwards from the
// key before before (or before the end of the prefix). Keys of another length under the
// prefix are skipped. When visited is not nil, it counts every key the cursor reads.
func idCursor(b *bbolt.Bucket, prefix []byte, rng idRange, visited *atomic.Int64) func() (int64, bool) {
	c := b.Cursor()
	var k []byte
	step := c.Next
	if !rng.desc {
		k, _ = c.Seek(append(slices.Clip(prefix), idKey(rng.after+1)...))
	} else {
		step = c.Prev
		var from []byte
		if rng.before > 0 {
			from = append(slices.Clip(prefix), idKey(rng.before)...)
		} else {
			from = prefixEnd(prefix)
		}
		if from != nil {
			k, _ = c.Seek(from)
		}
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
	}
	return func() (int64, bool) {
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = step() {
			if visited != nil {
				visited.Add(1)
			}
			if len(k) != len(prefix)+8 {
				continue
			}
			id := int64(beUint(k[len(prefix):]))
			if !rng.in(id) {
				return 0, false
			}
			k, _ = step()
			return id, true
		}
		return 0, false
	}
}

// prefixEnd returns the first key after every key that starts with prefix, or nil when there
// is none (an empty prefix, or one of 0xff bytes only): the end of the bucket.
func prefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			end := slices.Clone(prefix[:i+1])
			end[i]++
			return end
		}
	}
	return nil
}

// ListErrors returns the error records of a workflow, oldest first, at most limit (0 means
// 100). It returns an error wrapping storage.ErrNotFound for an unknown workflow.
func (s *Store) ListErrors(ctx context.Context, workflowID int64, limit int) ([]storage.ErrorRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit = storage.ErrorsLimit(limit)
	var out []storage.ErrorRecord
	err := s.view(func(t *txn) error {
		if _, err := t.get(workflowID); err != nil {
			return err
		}
		prefix := idKey(workflowID)
		c := t.errors.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
			e, err := decodeError(v)
			if err != nil {
				return fmt.Errorf("workflow %d: %w", workflowID, err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list errors: %w", err)
	}
	return out, nil
}

// utc returns t in UTC, keeping the zero time zero.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}
