package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// ErrShutdown is the cause a worker gives when it cancels a run because it is shutting down.
// Execute then releases the lease so another worker can take the workflow over at once.
var ErrShutdown = errors.New("chronoforge: worker shutting down")

// Execute runs one claimed workflow once: it loads the workflow with all its steps in one
// storage call, replays the workflow function, and ends the run with one FinishRun write
// (completed, failed, stalled, or idle until its next wake). Workers call it with a workflow
// returned by storage.Claim; every write it makes is fenced by that lease.
//
// Cancel ctx to stop the run: with cause ErrShutdown the lease is released for another
// worker; with any other cause (lease lost, cancelled) nothing more is written. Execute
// returns an error only when it could not record the outcome; the workflow then runs again
// when its lease expires.
func (e *Engine) Execute(ctx context.Context, claimed storage.Workflow) error {
	def := e.defs[claimed.Name]
	if def == nil {
		// Claims are filtered by registered names, so this is a caller's mistake; give it back.
		wctx, cancel := e.detached(ctx)
		defer cancel()
		err := e.store.Release(wctx, claimed.Lease(), e.clock.Now())
		return errors.Join(fmt.Errorf("%w: %q (workflow %d)", ErrUnregistered, claimed.Name, claimed.ID), err)
	}
	var probed []int64
	if claimed.Wait.Kind == storage.WaitMerge {
		// A merge wait is probed with a capped count; the workflow replays only when it is over.
		replay, done, err := e.probeClaimed(ctx, claimed)
		if err != nil || !replay {
			return err
		}
		probed = done
	}
	wf, steps := claimed, []storage.Step(nil)
	if claimed.LeaseToken != 1 {
		// A first claim (token 1) needs no load: no run came before it, so the workflow has
		// no step records, values or error records yet, and the claimed row is all there is
		// (storage.Workflow.LeaseToken). That saves a fresh child or a new workflow one of
		// its two round trips.
		var err error
		if wf, steps, err = e.store.Load(ctx, claimed.ID); err != nil {
			return fmt.Errorf("load workflow %q key %q: %w", claimed.Name, claimed.Key, err)
		}
		if wf.LeaseToken != claimed.LeaseToken || wf.State != storage.StateRunning {
			return nil // taken over or cancelled since the claim: nothing to do
		}
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	entry := &runEntry{cancel: cancel}
	e.mu.Lock()
	e.running[wf.ID] = entry
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.running[wf.ID] == entry { // a newer run of the same workflow may have replaced it
			delete(e.running, wf.ID)
		}
		e.mu.Unlock()
	}()

	r := &run{
		eng:    e,
		def:    def,
		wf:     wf,
		lease:  claimed.Lease(),
		ctx:    runCtx,
		log:    e.logger.With("workflow", wf.Name, "key", wf.Key, "id", wf.ID),
		steps:  make(map[string]*storage.Step, len(steps)),
		seen:   map[string]bool{},
		values: map[string]json.RawMessage{},
		probed: probed,
	}
	for i := range steps {
		r.steps[steps[i].Name] = &steps[i]
	}
	e.startRun(r, claimed, steps) // telemetry: the run's span (in r.ctx), ended by finish
	if len(wf.Values) > 0 {
		if err := json.Unmarshal(wf.Values, &r.values); err != nil {
			r.halt(haltFail, fmt.Errorf("%w: workflow %q key %q: durable values: %v", ErrDecode, wf.Name, wf.Key, err))
		}
	}
	var out []byte
	var fnErr error
	if r.stopped == nil {
		out, fnErr = callWorkflow(r, def)
	}
	if r.stopped == nil && fnErr == nil {
		_ = r.gate() // joins auto-merge branches; a halt it sets decides the outcome below
	}
	err := e.finish(r, out, fnErr)
	e.notify()
	e.changedWorkflow(wf.ID)
	return err
}

func callWorkflow(r *run, def *definition) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("workflow %q panicked: %v\n%s", r.wf.Name, p, debug.Stack())
		}
	}()
	return def.run(&Context{run: r}, r.wf.Input)
}

// finish writes the outcome of a run.
// ceilMicro rounds t up to the microsecond; the zero time stays zero.
func ceilMicro(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	if u := t.Truncate(time.Microsecond); !u.Equal(t) {
		return u.Add(time.Microsecond)
	}
	return t
}

func (e *Engine) finish(r *run, out []byte, fnErr error) error {
	f := storage.Finish{Attempt: r.wf.Attempt}
	if h := r.stopped; h != nil {
		switch h.kind {
		case haltAbort:
			r.log.Debug("run aborted", "cause", h.cause)
			if !errors.Is(h.cause, ErrShutdown) {
				r.endRun(nil, fnErr, h.cause)
				return nil // lease lost or cancelled: nothing more may be written
			}
			// Shutting down: keep what finished and give the workflow back, runnable now.
			f.State, f.RunAt = storage.StateIdle, e.clock.Now()
		case haltSuspend:
			// Stores keep microseconds: round the wake-up up, so that a run claimed at the
			// stored RunAt finds its wait (a retry's NextAt, a sleep's WakeAt, kept to the
			// nanosecond in the records) over, rather than suspending again at the same RunAt.
			f.State, f.RunAt, f.Wait = storage.StateIdle, ceilMicro(h.runAt), h.wait
		case haltStall:
			f.State = storage.StateStalled
			r.log.Warn("workflow stalled", "error", h.cause)
		case haltFail:
			f.State = storage.StateFailed
			if !h.recorded {
				r.recordError("", r.wf.Attempt+1, h.cause)
			}
			r.log.Error("workflow failed", "error", h.cause)
		}
	} else if fnErr == nil {
		f.State, f.Output = storage.StateCompleted, out
	} else {
		f.Attempt = r.wf.Attempt + 1
		r.recordError("", f.Attempt, fnErr)
		policy := r.def.retry
		if policy == nil {
			policy = e.workflowPolicy
		}
		// Each named policy keeps its own budget, in the run-budget record; Workflow.Attempt
		// counts all failed runs.
		rec, meta := r.budgets(policy, fnErr)
		key, delay, again := policy.decide(fnErr, meta.Used)
		meta.Used[key]++
		rec.Meta = meta.bytes()
		rec.Attempts = f.Attempt
		r.queue(rec)
		if again {
			f.State, f.RunAt, f.Wait = storage.StateIdle, e.clock.Now().Add(delay), storage.Wait{Kind: storage.WaitRetry}
			r.log.Info("workflow run failed; will retry", "attempt", f.Attempt, "delay", delay, "error", fnErr)
		} else {
			f.State = storage.StateFailed
			r.log.Error("workflow failed", "attempt", f.Attempt, "error", fnErr)
		}
	}
	f.Commit = storage.Commit{Steps: r.pending, Errors: r.errs, Now: e.clock.Now()}
	if r.valuesDirty {
		f.Values = r.encodeValues()
	}
	wctx, cancel := e.detached(r.ctx)
	defer cancel()
	err := e.finishRun(wctx, r.lease, f)
	r.endRun(&f, fnErr, err)
	if err != nil {
		if errors.Is(err, storage.ErrLeaseLost) || errors.Is(err, storage.ErrCancelled) {
			r.log.Debug("run outcome not written", "error", err)
			return nil
		}
		return fmt.Errorf("finish workflow %q key %q: %w", r.wf.Name, r.wf.Key, err)
	}
	return nil
}

// budgetRecord is the step record keeping the workflow-level retry budgets, one count per
// named policy, like a step's. Retry resets it with the workflow's attempt count.
const budgetRecord = "$workflow"

// budgets returns the budget record and its counts. A workflow whose runs failed before the
// record existed kept one shared counter, Workflow.Attempt: it is charged to the policy that
// decides err, as it was then.
func (r *run) budgets(p RetryPolicy, err error) (storage.Step, stepMeta) {
	rec, stored := r.record(budgetRecord)
	meta := readMeta(rec)
	if meta.Used == nil {
		meta.Used = map[string]int{}
		if !stored && r.wf.Attempt > 0 {
			k, _, _ := p.decide(err, map[string]int{})
			meta.Used[k] = r.wf.Attempt
		}
	}
	return rec, meta
}
