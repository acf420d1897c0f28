package memory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Defaults and bounds of the listing and cleanup calls, as package storage documents them.
const (
	listDefault   = 100
	listMax       = 1000
	errorsDefault = 100
)

// CreateWorkflow stores a new idle workflow runnable at w.RunAt (w.Now when zero), or returns
// the stored workflow of that name and key unchanged with created == false.
func (s *Store) CreateWorkflow(ctx context.Context, w storage.NewWorkflow) (storage.Workflow, bool, error) {
	if err := storage.ValidateNew(w); err != nil {
		return storage.Workflow{}, false, err
	}
	if err := s.begin(ctx, "create workflow"); err != nil {
		return storage.Workflow{}, false, err
	}
	defer s.mu.Unlock()
	if r := s.byKey[nameKey{w.Name, w.Key}]; r != nil {
		return r.out(), false, nil
	}
	r := s.insert(w, w.ParentStepID, w.Now)
	s.notify()
	return r.out(), true, nil
}

// CreateWorkflows creates each workflow of ws that does not exist yet, under one lock.
func (s *Store) CreateWorkflows(ctx context.Context, ws []storage.NewWorkflow) ([]storage.Workflow, []bool, error) {
	if err := storage.ValidateCreateBatch(ws); err != nil {
		return nil, nil, err
	}
	if err := s.begin(ctx, "create workflows"); err != nil {
		return nil, nil, err
	}
	defer s.mu.Unlock()
	out, created := make([]storage.Workflow, len(ws)), make([]bool, len(ws))
	for i, w := range ws {
		r := s.byKey[nameKey{w.Name, w.Key}]
		if r == nil {
			r, created[i] = s.insert(w, w.ParentStepID, w.Now), true
		}
		out[i] = r.out()
	}
	if slices.Contains(created, true) {
		s.notify()
	}
	return out, created, nil
}

// insert stores the new workflow w as a child of parentStep (0: a root) at now. The caller has
// checked that its name and key are free.
func (s *Store) insert(w storage.NewWorkflow, parentStep int64, now time.Time) *record {
	s.lastWorkflow++
	now = stamp(now)
	return s.add(storage.Workflow{
		ID:           s.lastWorkflow,
		Name:         w.Name,
		Key:          w.Key,
		Input:        clone(w.Input),
		State:        storage.StateIdle,
		RunAt:        stampOr(w.RunAt, now),
		ParentStepID: parentStep,
		TraceContext: clone(w.TraceContext),
		Tags:         cloneTags(w.Tags),
		Flow:         w.Flow,
		CreatedAt:    now,
		UpdatedAt:    now,
	})
}

// GetWorkflow returns the workflow with the given id, or ErrNotFound.
func (s *Store) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	if err := s.begin(ctx, "get workflow"); err != nil {
		return storage.Workflow{}, err
	}
	defer s.mu.Unlock()
	r, err := s.lookup("get workflow", id)
	if err != nil {
		return storage.Workflow{}, err
	}
	return r.out(), nil
}

// FindWorkflow returns the workflow with the given name and key, or ErrNotFound.
func (s *Store) FindWorkflow(ctx context.Context, name, key string) (storage.Workflow, error) {
	if err := s.begin(ctx, "find workflow"); err != nil {
		return storage.Workflow{}, err
	}
	defer s.mu.Unlock()
	r := s.byKey[nameKey{name, key}]
	if r == nil {
		return storage.Workflow{}, fmt.Errorf("memory: find workflow %q key %q: %w", name, key, storage.ErrNotFound)
	}
	return r.out(), nil
}

// Load returns the workflow and all its step records, ordered by step ID.
func (s *Store) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	if err := s.begin(ctx, "load"); err != nil {
		return storage.Workflow{}, nil, err
	}
	defer s.mu.Unlock()
	r, err := s.lookup("load", id)
	if err != nil {
		return storage.Workflow{}, nil, err
	}
	steps := make([]storage.Step, 0, len(r.steps))
	for _, st := range r.steps {
		steps = append(steps, copyStep(st))
	}
	return r.out(), steps, nil
}

// ListWorkflows returns one page of workflows matching f, in ID order. It walks the IDs after
// f.AfterID (those of f.ParentStepID's children only, when it is set) until the page is full.
func (s *Store) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	if err := storage.ValidateList(f); err != nil {
		return nil, err
	}
	if err := s.begin(ctx, "list workflows"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	limit := storage.ClampLimit(f.Limit, listDefault, listMax)
	dueBy, ok := storage.DueByBound(f.DueBy)
	if !ok {
		return nil, nil // nothing stored is due before MinTime
	}
	match := func(w *storage.Workflow) bool {
		switch {
		case f.Name != "" && w.Name != f.Name,
			!strings.HasPrefix(w.Key, f.KeyPrefix),
			len(f.States) > 0 && !slices.Contains(f.States, w.State),
			slices.Contains(f.NotNames, w.Name),
			!dueBy.IsZero() && (w.RunAt.IsZero() || w.RunAt.After(dueBy)),
			f.ParentStepID != 0 && w.ParentStepID != f.ParentStepID,
			!hasTags(w.Tags, f.Tags):
			return false
		}
		return true
	}
	ids := s.order
	if f.ParentStepID != 0 {
		b := s.children[f.ParentStepID]
		if b == nil {
			return nil, nil
		}
		ids = s.pageSource(b, f.States, f.AfterID)
	}
	from, _ := slices.BinarySearch(ids, f.AfterID+1)
	to := len(ids)
	if f.BeforeID > 0 {
		to, _ = slices.BinarySearch(ids, f.BeforeID)
	}
	out := make([]storage.Workflow, 0, min(limit, max(to-from, 0)))
	for i := range max(to-from, 0) {
		if len(out) == limit {
			break
		}
		id := ids[from+i]
		if f.Desc {
			id = ids[to-1-i]
		}
		if r := s.byID[id]; match(&r.w) {
			out = append(out, r.out())
		}
	}
	return out, nil
}

// pageSource returns the ascending IDs a page of b's children is read from: all of them, or,
// when the states asked for hold few of them (a probe looking for the one failed child among
// thousands that completed), just those, gathered from the state sets and sorted.
func (s *Store) pageSource(b *branch, states []storage.State, after int64) []int64 {
	if len(states) == 0 {
		return b.ids
	}
	states = uniq(states)
	n := 0
	for _, st := range states {
		n += len(b.byState[st])
	}
	if n*8 >= len(b.ids) {
		return b.ids
	}
	ids := make([]int64, 0, n)
	for _, st := range states {
		for id := range b.byState[st] {
			if id > after {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// ListErrors returns the error records of a workflow, oldest first, at most limit (0 means
// 100).
func (s *Store) ListErrors(ctx context.Context, workflowID int64, limit int) ([]storage.ErrorRecord, error) {
	if err := s.begin(ctx, "list errors"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	r, err := s.lookup("list errors", workflowID)
	if err != nil {
		return nil, err
	}
	n := limit
	if n <= 0 {
		n = errorsDefault
	}
	n = min(n, len(r.errs))
	out := make([]storage.ErrorRecord, 0, n)
	for _, e := range r.errs[:n] {
		out = append(out, copyError(e))
	}
	return out, nil
}

// DeleteFinished deletes up to r.Limit final workflows in r.States finished before
// r.Before, those that finished first first, with their steps and error records, deleting
// at most r.StepBudget steps: the first workflow whose steps do not fit loses as many as fit
// and stays until a later call.
func (s *Store) DeleteFinished(ctx context.Context, r storage.CleanupRequest) (storage.CleanupResult, error) {
	var res storage.CleanupResult
	if err := storage.ValidateCleanup(r); err != nil {
		return res, err
	}
	if err := s.begin(ctx, "delete finished"); err != nil {
		return res, err
	}
	defer s.mu.Unlock()
	limit, budget, states := storage.CleanupLimit(r), storage.CleanupSteps(r), storage.CleanupStates(r)
	var ids []int64
	var partial *record
	s.finished.ascend(func(e entry) bool {
		w := s.byID[e.id]
		if len(ids) == limit || !w.w.FinishedAt.Before(r.Before) {
			return false
		}
		if !slices.Contains(states, w.w.State) {
			return true
		}
		if n := len(w.steps); n > budget-res.Steps {
			partial = w
			return false
		}
		res.Steps += len(w.steps)
		ids = append(ids, e.id)
		return true
	})
	if partial != nil {
		n := budget - res.Steps
		cut := partial.steps[len(partial.steps)-n:]
		for _, st := range cut {
			delete(s.stepOwner, st.ID)
			if partial.byName != nil {
				delete(partial.byName, st.Name)
			}
		}
		partial.steps = slices.Clip(partial.steps[:len(partial.steps)-n])
		res.Steps += n
		res.More = true
	}
	s.drop(ids)
	res.Deleted = len(ids)
	return res, nil
}

// uniq returns xs without repeats, in first-seen order.
func uniq[T comparable](xs []T) []T {
	out := make([]T, 0, len(xs))
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// hasTags reports whether have carries every tag of want with the same value.
func hasTags(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}
