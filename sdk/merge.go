package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// MergeCap bounds the count a merge probe makes: it counts at most this many unfinished
// children, so a probe costs the same at 100 children or 1,000,000.
const MergeCap = 5000

// ErrBranchFailed: a child of a FailFast branch failed, stalled or was cancelled; the error
// names the child.
var ErrBranchFailed = errors.New("chronoforge: branch child failed")

// ErrMergeTimeout: a branch's children did not all complete within its merge timeout.
var ErrMergeTimeout = errors.New("chronoforge: merge timed out")

// ErrUnmergedBranch: the workflow returned with a branch neither merged nor auto-merged.
var ErrUnmergedBranch = errors.New("chronoforge: branch never merged")

// incomplete are the child states a merge waits on. Failed and stalled children keep the
// parent waiting (an operator may retry them); a cancelled child is final and cannot be
// retried, so it does not: the merge completes and BranchResults reports it cancelled.
// A FailFast branch fails the parent on any broken child, cancelled ones included.
var (
	incomplete = []storage.State{storage.StateIdle, storage.StateRunning, storage.StateFailed, storage.StateStalled}
	broken     = []storage.State{storage.StateFailed, storage.StateStalled, storage.StateCancelled}
)

type mergeConfig struct {
	failFast bool
	// call: the branch of a Call, whose broken child is Call's result, not the workflow's
	// failure: the merge completes and Call reports the child.
	call     bool
	timeout  time.Duration
	min, max time.Duration
}

func defaultMerge() mergeConfig {
	return mergeConfig{min: 500 * time.Millisecond, max: 30 * time.Second}
}

// FailFast makes a merge of the branch fail the workflow (ErrBranchFailed, naming the child)
// as soon as one of its children is failed, stalled or cancelled, instead of waiting for an
// operator or, for a cancelled child, completing without it.
func FailFast() BranchOption {
	return branchOption(func(c *branchConfig) { c.merge.failFast = true })
}

// MergeTimeout stalls the workflow (ErrMergeTimeout) if the branch's children have not all
// completed d after the merge began waiting.
func MergeTimeout(d time.Duration) BranchOption {
	return branchOption(func(c *branchConfig) { c.merge.timeout = d })
}

// ProbeInterval bounds how often a waiting merge is probed (default 500 ms to 30 s). Between
// the bounds the next probe is scheduled from the measured drain rate of the children. Both
// must be positive and min at most max, or Branch fails the workflow with ErrInvalid.
func ProbeInterval(min, max time.Duration) BranchOption {
	return branchOption(func(c *branchConfig) { c.merge.min, c.merge.max = min, max })
}

// validate checks the merge options of branch name.
func (m mergeConfig) validate(name string) error {
	if m.min <= 0 || m.max <= 0 || m.min > m.max {
		return fmt.Errorf("%w: branch %q: ProbeInterval(%v, %v): both must be positive and the minimum at most the maximum", ErrInvalid, name, m.min, m.max)
	}
	if m.timeout < 0 {
		return fmt.Errorf("%w: branch %q: MergeTimeout(%v) is negative", ErrInvalid, name, m.timeout)
	}
	return nil
}

// mergeWait is kept in Wait.Data while a merge waits, so a worker can probe it without
// replaying the workflow.
type mergeWait struct {
	StepIDs   []int64   `json:"steps"`
	Branches  []string  `json:"branches"`
	FailFast  bool      `json:"fail_fast,omitempty"`
	Call      bool      `json:"call,omitempty"`
	Deadline  time.Time `json:"deadline,omitzero"`
	Min       int64     `json:"min"`
	Max       int64     `json:"max"`
	LastCount int       `json:"last_count"`
	LastAt    time.Time `json:"last_at"`
	Interval  int64     `json:"interval"`
}

// Merge waits until every named branch (all open ones when names is empty) is sealed and
// all its children finished: completed, or cancelled (see FailFast for stricter joins).
// While children run, the workflow is suspended and a worker probes the merge with a capped
// count, without replaying the workflow; the workflow runs again once the probe finds the
// children done. A name given twice counts once, and a branch an earlier Merge of this run
// joined is done already. Merging a name never opened is an error.
func Merge(c *Context, names ...string) error {
	r := c.run
	if err := r.check(); err != nil {
		return err
	}
	if len(names) == 0 {
		for n, b := range r.branches {
			if !b.merged {
				names = append(names, n)
			}
		}
	} else {
		names = slices.Clone(names)
	}
	sortStrings(names)
	names = slices.Compact(names)
	var bs []*openBranch
	for _, n := range names {
		if b := r.branches[n]; b != nil && b.merged && r.seen[mergeRecord(n)] {
			continue // joined by an earlier Merge of this run
		}
		if err := r.use("merge", n, mergeRecord(n)); err != nil {
			return err
		}
		b := r.branches[n]
		if b == nil {
			return r.halt(haltFail, fmt.Errorf("%w: workflow %q merges branch %q, which was never opened", ErrInvalid, r.wf.Name, n))
		}
		bs = append(bs, b)
	}
	return r.merge(bs)
}

// merge joins the branches bs: done now, or suspended on a merge wait.
func (r *run) merge(bs []*openBranch) error {
	var pending []*openBranch
	for _, b := range bs {
		if !b.merged {
			pending = append(pending, b)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	now := r.eng.clock.Now()
	w := mergeWait{Min: int64(pending[0].opts.merge.min), Max: int64(pending[0].opts.merge.max)}
	first, _ := r.record(mergeRecord(pending[0].name))
	if first.State == storage.StepFailed {
		return r.halt(haltStall, fmt.Errorf("merge of branch %q: %s", pending[0].name, first.LastError))
	}
	var meta stepMeta
	if len(first.Meta) > 0 {
		meta = readMeta(first)
	}
	for _, b := range pending {
		w.StepIDs = append(w.StepIDs, b.stepID)
		w.Branches = append(w.Branches, b.name)
		w.FailFast = w.FailFast || b.opts.merge.failFast
		w.Call = b.opts.merge.call
		if t := b.opts.merge.timeout; t > 0 {
			d := now.Add(t)
			if !meta.Deadline.IsZero() {
				d = meta.Deadline
			}
			w.Deadline = storage.Earliest(w.Deadline, d)
		}
	}
	res, culprit, err := probeDone, storage.Workflow{}, error(nil)
	if !r.drained(w.StepIDs) {
		pctx, obs := r.tel.run.StartProbe(r.ctx, len(w.StepIDs)) // telemetry: the probe's span, a child of the run's
		res, culprit, err = r.eng.probe(pctx, &w, now)
		obs.End(pctx, probeEnd(res, &w, err))
	}
	if err != nil {
		return r.halt(haltAbort, err)
	}
	if res == probeFailed && w.Call {
		res = probeDone // Call reads the broken child and returns it as its error
	}
	switch res {
	case probeDone:
		for _, b := range pending {
			rec, _ := r.record(mergeRecord(b.name))
			rec.State, rec.Attempts, rec.CompletedAt = storage.StepCompleted, rec.Attempts+1, now
			r.queue(rec)
			b.merged = true
		}
		return nil
	case probeFailed:
		err := fmt.Errorf("%w: workflow %q key %q: child %q (workflow %q, id %d) of branch %q is %s",
			ErrBranchFailed, r.wf.Name, r.wf.Key, culprit.Key, culprit.Name, culprit.ID, w.branchOf(culprit.ParentStepID), culprit.State)
		if culprit.LastError != "" {
			err = fmt.Errorf("%w: %s", err, culprit.LastError)
		}
		r.recordError(mergeRecord(pending[0].name), 1, err)
		r.halt(haltFail, err)
		r.stopped.recorded = true // one error record, on the merge, not another for the run
		return r.stopped
	case probeTimeout:
		err := fmt.Errorf("%w: workflow %q branches %v: children still running at %s", ErrMergeTimeout, r.wf.Name, w.Branches, w.Deadline.Format(time.RFC3339))
		r.recordError(first.Name, 1, err)
		// Failed, so that an operator's Retry resets it and the merge gets a fresh deadline.
		first.State, first.LastError = storage.StepFailed, storage.Truncate(err.Error(), 4<<10)
		r.queue(first)
		return r.halt(haltStall, err)
	}
	// Waiting: record the deadline once, then suspend on the probe's schedule.
	if first.State != storage.StepPending || meta.Deadline != w.Deadline || r.steps[first.Name] == nil {
		meta.Deadline = w.Deadline
		first.Meta = meta.bytes()
		r.queue(first)
	}
	h := r.suspend(now.Add(time.Duration(w.Interval)), storage.Wait{Kind: storage.WaitMerge, Step: first.Name, Data: mustJSON(w)})
	return h
}

// drained reports whether this run's merge probe (before the replay) found every child of
// these branch steps finished, so counting them again is not needed.
func (r *run) drained(stepIDs []int64) bool {
	if len(r.probed) == 0 {
		return false
	}
	for _, id := range stepIDs {
		if !slices.Contains(r.probed, id) {
			return false
		}
	}
	return true
}

type probeResult int

const (
	probeWaiting probeResult = iota
	probeDone
	probeFailed
	probeTimeout
)

// branchOf names the branch whose step ID is id.
func (w *mergeWait) branchOf(id int64) string {
	for i, s := range w.StepIDs {
		if s == id && i < len(w.Branches) {
			return w.Branches[i]
		}
	}
	return fmt.Sprint(id)
}

// probe answers a merge wait with capped counts and, while waiting, schedules the next probe
// from the drain rate (children finished per second since the last probe), clamped to
// [Min, Max]. It updates w in place. For probeFailed it returns the broken child.
func (e *Engine) probe(ctx context.Context, w *mergeWait, now time.Time) (probeResult, storage.Workflow, error) {
	n, err := e.store.CountChildren(ctx, storage.ChildQuery{StepIDs: w.StepIDs, States: incomplete, Cap: MergeCap})
	if err != nil {
		return 0, storage.Workflow{}, fmt.Errorf("merge probe of branches %v: %w", w.Branches, err)
	}
	if w.FailFast {
		// After the count: once no child is unfinished, the broken ones (final, or stalled
		// and counted above) can no longer change unseen, so a child cancelled while the
		// probe ran is never missed.
		bad, err := e.store.CountChildren(ctx, storage.ChildQuery{StepIDs: w.StepIDs, States: broken, Cap: 1})
		if err != nil {
			return 0, storage.Workflow{}, fmt.Errorf("merge probe of branches %v: %w", w.Branches, err)
		}
		if bad > 0 {
			// Only now, once: find the child to name (one short listing per branch at most).
			for _, id := range w.StepIDs {
				page, err := e.store.ListWorkflows(ctx, storage.ListFilter{ParentStepID: id, States: broken, Limit: 1})
				if err != nil {
					return 0, storage.Workflow{}, fmt.Errorf("merge probe of branches %v: %w", w.Branches, err)
				}
				if len(page) > 0 {
					return probeFailed, page[0], nil
				}
			}
		}
	}
	if n == 0 {
		return probeDone, storage.Workflow{}, nil
	}
	if !w.Deadline.IsZero() && !now.Before(w.Deadline) {
		return probeTimeout, storage.Workflow{}, nil
	}
	minI, maxI := time.Duration(w.Min), time.Duration(w.Max)
	next := time.Duration(w.Interval)
	switch {
	case w.LastAt.IsZero() || next == 0:
		next = minI
	case n < w.LastCount && now.After(w.LastAt):
		// children drain at rate = done / elapsed; expect the rest in n / rate
		rate := float64(w.LastCount-n) / now.Sub(w.LastAt).Seconds()
		next = time.Duration(float64(n) / rate * float64(time.Second))
	default:
		next *= 2 // no progress: back off
	}
	next = min(max(next, minI), maxI)
	if !w.Deadline.IsZero() && now.Add(next).After(w.Deadline) {
		next = w.Deadline.Sub(now)
	}
	w.LastCount, w.LastAt, w.Interval = n, now, int64(next)
	return probeWaiting, storage.Workflow{}, nil
}

// probeClaimed handles a claimed workflow that waits on a merge without replaying it: while
// the children are not done it reschedules the probe with one write and reports false; once
// they are (or fail-fast or the timeout fires) it reports true and the workflow is replayed.
// When it found the children done it returns the branch steps, so the replay's merge does
// not count them again: children that all finished (completed or cancelled) stay finished.
func (e *Engine) probeClaimed(ctx context.Context, wf storage.Workflow) (bool, []int64, error) {
	var w mergeWait
	if err := json.Unmarshal(wf.Wait.Data, &w); err != nil || len(w.StepIDs) == 0 {
		return true, nil, nil // unreadable: let the replay rebuild the wait
	}
	now := e.clock.Now()
	ctx, obs := e.startProbe(ctx, wf, &w) // telemetry: a span linked to the workflow's start, and the claim lag
	res, _, err := e.probe(ctx, &w, now)
	defer func() { obs.End(ctx, probeEnd(res, &w, err)) }()
	if res == probeDone && err == nil {
		return true, w.StepIDs, nil
	}
	if err != nil || res != probeWaiting {
		return true, nil, err
	}
	wctx, cancel := e.detached(ctx)
	defer cancel()
	err = e.store.FinishRun(wctx, wf.Lease(), storage.Finish{
		State:   storage.StateIdle,
		RunAt:   now.Add(time.Duration(w.Interval)),
		Wait:    storage.Wait{Kind: storage.WaitMerge, Step: wf.Wait.Step, Data: mustJSON(w)},
		Attempt: wf.Attempt,
		Commit:  storage.Commit{Now: now},
	})
	if err != nil && !errors.Is(err, storage.ErrLeaseLost) && !errors.Is(err, storage.ErrCancelled) {
		return false, nil, fmt.Errorf("reschedule merge probe of workflow %q key %q: %w", wf.Name, wf.Key, err)
	}
	return false, nil, nil
}

// gate runs when the workflow function returned: auto-merge branches are joined (suspending
// until their children are done) and a branch neither merged nor auto-merged fails the
// workflow.
func (r *run) gate() error {
	var auto []*openBranch
	var names []string
	for n := range r.branches {
		names = append(names, n)
	}
	sortStrings(names)
	for _, n := range names {
		b := r.branches[n]
		switch {
		case b.merged:
		case b.opts.autoMerge:
			auto = append(auto, b)
		default:
			return r.halt(haltFail, fmt.Errorf("%w: workflow %q returned with branch %q neither merged nor auto-merged: "+
				"call sdk.Merge(c, %q) before returning, or open the branch with sdk.AutoMerge()", ErrUnmergedBranch, r.wf.Name, n, n))
		}
	}
	if len(auto) == 0 {
		return nil
	}
	for _, b := range auto {
		if err := r.use("merge", b.name, mergeRecord(b.name)); err != nil {
			return err
		}
	}
	return r.merge(auto)
}

// ChildResult is one child of a branch as seen after a merge.
type ChildResult[Out any] struct {
	ID    int64
	Key   string
	Name  string
	State State
	// Output is the decoded output of a completed child.
	Output Out
	// Err is, for a child that did not complete, a *WorkflowError carrying its state and last
	// error (errors.Is(err, ErrCancelled) for a cancelled child); for a completed child whose
	// output does not decode, an error matching ErrDecode.
	Err error
}

// BranchResults pages through the children of a branch opened in this run, in creation
// order, pageSize at a time (0 means 500), decoding each completed child's output into Out
// (use json.RawMessage for mixed child types). Call it after the branch is merged: the
// results are then final, so reading them outside a step is safe on replay. It reads every
// child again on every replay of the workflow (a later sleep or step retry replays it), so
// for large branches fold the results once, inside a recorded step, with FoldResults.
func BranchResults[Out any](c *Context, branch string, pageSize int) iter.Seq2[ChildResult[Out], error] {
	return func(yield func(ChildResult[Out], error) bool) {
		r := c.run
		if err := r.check(); err != nil {
			yield(ChildResult[Out]{}, err)
			return
		}
		b := r.branches[branch]
		if b == nil || b.stepID == 0 {
			yield(ChildResult[Out]{}, fmt.Errorf("%w: branch %q was not opened in this run", ErrInvalid, branch))
			return
		}
		for res, err := range childResults[Out](r.ctx, r.eng, branch, b.stepID, pageSize) {
			if !yield(res, err) || err != nil {
				return
			}
		}
	}
}

// FoldResults folds the results of a merged branch into one value, inside a step named
// name: fn is called once per child, in creation order, with the accumulator (init for the
// first child) and the child's result, and the final accumulator is the step's stored
// result. So the children are read once, ⌈N/pageSize⌉ storage calls (pageSize 0 means 500),
// however often the workflow replays later, and memory holds one page and the accumulator,
// whatever N. An error from fn is the step's error, retried by the step's policy (opts).
// The branch must be merged in this run before; otherwise the workflow fails with ErrInvalid.
func FoldResults[Out, Acc any](c *Context, name, branch string, init Acc, fn func(acc Acc, res ChildResult[Out]) (Acc, error), pageSize int, opts ...StepOption) (Acc, error) {
	r := c.run
	if err := r.check(); err != nil {
		return init, err
	}
	b := r.branches[branch]
	if b == nil || !b.merged {
		return init, r.halt(haltFail, fmt.Errorf("%w: workflow %q: FoldResults %q of branch %q, which is not merged in this run; call sdk.Merge first", ErrInvalid, r.wf.Name, name, branch))
	}
	if fn == nil {
		return init, r.halt(haltFail, fmt.Errorf("%w: workflow %q: FoldResults %q has no function", ErrInvalid, r.wf.Name, name))
	}
	return Step(c, name, func(ctx context.Context) (Acc, error) {
		acc := init
		for res, err := range childResults[Out](ctx, r.eng, branch, b.stepID, pageSize) {
			if err != nil {
				return init, err
			}
			if acc, err = fn(acc, res); err != nil {
				return init, err
			}
		}
		return acc, nil
	}, opts...)
}

// childResults pages through the children of branch step stepID, in ID order.
func childResults[Out any](ctx context.Context, e *Engine, branch string, stepID int64, pageSize int) iter.Seq2[ChildResult[Out], error] {
	return func(yield func(ChildResult[Out], error) bool) {
		limit := storage.ClampLimit(pageSize, 500, storage.MaxListLimit)
		var after int64
		for {
			page, err := e.store.ListWorkflows(ctx, storage.ListFilter{ParentStepID: stepID, AfterID: after, Limit: limit})
			if err != nil {
				yield(ChildResult[Out]{}, fmt.Errorf("branch %q results: %w", branch, err))
				return
			}
			for _, w := range page {
				res := ChildResult[Out]{ID: w.ID, Key: w.Key, Name: w.Name, State: State(w.State)}
				switch {
				case w.State == storage.StateCompleted:
					if err := e.codec.Unmarshal(w.Output, &res.Output); err != nil {
						res.Err = fmt.Errorf("%w: child %q output into %s: %v", ErrDecode, w.Key, typeName[Out](), err)
					}
				default:
					// Cancelled (a merge completes over those), or failed or stalled when
					// read before the merge.
					res.Err = &WorkflowError{ID: w.ID, Name: w.Name, Key: w.Key, State: State(w.State), Message: w.LastError}
				}
				if !yield(res, nil) {
					return
				}
				after = w.ID
			}
			if len(page) < limit {
				return
			}
		}
	}
}
