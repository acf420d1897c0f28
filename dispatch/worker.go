package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// ErrRunning is returned by Run when the Worker is already running.
var ErrRunning = errors.New("dispatch: worker is already running")

// Worker claims and runs the workflows an sdk.Engine knows, over the engine's storage. Build
// it with New and drive it with Run. Several Workers, in one process or many, may share a
// store: leases keep each workflow to one worker at a time.
type Worker struct {
	eng   *sdk.Engine
	store storage.Storage
	clock sdk.Clock
	log   *slog.Logger
	names []string
	cfg   config

	running atomic.Bool
	stats   counters
}

// New builds a worker for eng. It returns an error wrapping storage.ErrInvalid for a nil
// engine, an engine with no registered workflows (it would have nothing to claim) or an
// invalid option, naming the option.
func New(eng *sdk.Engine, opts ...Option) (*Worker, error) {
	if eng == nil {
		return nil, fmt.Errorf("%w: dispatch: nil engine", storage.ErrInvalid)
	}
	names := eng.Names()
	if len(names) == 0 {
		// An empty name filter would claim every workflow in the store, known or not.
		return nil, fmt.Errorf("%w: dispatch: the engine has no registered workflows (add them with sdk.WithWorkflows)", storage.ErrInvalid)
	}
	cfg := defaults()
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: dispatch: nil option", storage.ErrInvalid)
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.resolve(); err != nil {
		return nil, err
	}
	return &Worker{
		eng:   eng,
		store: eng.Store(),
		clock: eng.Clock(),
		log:   eng.Logger().With("worker", cfg.owner),
		names: names,
		cfg:   cfg,
	}, nil
}

// Owner returns the lease owner the worker claims as.
func (w *Worker) Owner() string { return w.cfg.owner }

// Run claims and runs workflows until ctx is done, then shuts down gracefully: it stops
// claiming, waits up to ShutdownTimeout (real time) for runs in flight, cancels the rest with
// cause sdk.ErrShutdown so their leases are released, waits for them and returns nil. Storage
// errors never end Run; they are logged and retried with backoff. Every goroutine Run starts
// has ended when it returns. A Worker runs once at a time: a concurrent second call returns
// ErrRunning. Run may be called again after it returned.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer w.running.Store(false)

	// Runs outlive ctx during the graceful wait, so their contexts hang off a detached parent
	// (keeping ctx's values) that only the shutdown deadline cancels.
	runsCtx, cancelRuns := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelRuns(nil)

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.watchUnknown(ctx) })

	// Parents are woken for children that end during the graceful wait too: the flusher
	// stops after the runs (deferred before wg.Wait, so it runs first).
	wakeCtx, stopWakes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWakes()
	wakes := newMergeWakes()
	wg.Go(func() { w.wakeMerges(wakeCtx, wakes) })

	// A governed workflow must not be claimed before its flow's limits are stored.
	if !w.syncFlows(ctx) {
		return nil
	}
	held := w.cfg.concurrency + w.cfg.prefetch
	l := &loop{w: w, wg: &wg, runsCtx: runsCtx, stop: ctx, done: make(chan struct{}, held),
		slots: make(chan struct{}, w.cfg.concurrency), wakes: wakes}
	if n, ok := w.store.(storage.Notifier); ok {
		ch, err := n.Listen(ctx)
		if err != nil {
			w.log.Warn("store notifications unavailable; polling only", "error", err)
		}
		l.notify = ch
	}
	l.claimLoop(ctx)
	l.drain(cancelRuns)
	return nil
}

// syncFlows stores the flow defaults declared in code (sdk.Engine.SyncFlows) before the first
// claim, retrying with the worker's backoff while the store fails. It reports false when ctx
// ended first.
func (w *Worker) syncFlows(ctx context.Context) bool {
	backoff := w.cfg.pollMin
	for {
		err := w.eng.SyncFlows(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		w.log.Warn("storing the flows declared in code failed; retrying before the first claim", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, w.cfg.pollMax)
	}
}

// loop is the state of one call to Run, owned by Run's goroutine.
type loop struct {
	w       *Worker
	wg      *sync.WaitGroup
	runsCtx context.Context
	// stop is Run's context: once it is done, claimed workflows still waiting for a slot are
	// given back at once.
	stop context.Context
	// done receives once per finished run; it has room for every slot, so runs never block.
	done chan struct{}
	// active counts the workflows held: running, or claimed ahead and waiting for one of
	// slots (Prefetch), whose capacity is the concurrency.
	active int
	slots  chan struct{}
	// notify receives the store's cross-process wake-ups (nil when it has none).
	notify <-chan struct{}
	// wakes collects the branch steps of child runs that ended, for their parents' wake-up.
	wakes *mergeWakes
}

// claimLoop claims and starts workflows until ctx is done.
func (l *loop) claimLoop(ctx context.Context) {
	w := l.w
	backoff := w.cfg.pollMin
	for ctx.Err() == nil {
		l.reap()
		l.gather(ctx)
		var wake <-chan time.Time
		var changed <-chan struct{}
		if free := w.cfg.concurrency + w.cfg.prefetch - l.active; free > 0 {
			limit := min(w.cfg.batch, free)
			// Taken before the claim, so work started while it runs still wakes the wait below.
			changed = w.eng.Changed()
			claimed, err := w.claim(ctx, limit)
			if err != nil && ctx.Err() != nil {
				return
			}
			for _, wf := range claimed {
				l.start(wf)
			}
			delay := backoff
			switch {
			case err != nil:
				backoff = w.grow(backoff)
			case len(claimed) == limit:
				backoff = w.cfg.pollMin
				continue // a full batch: there may be more
			case len(claimed) > 0:
				backoff, delay = w.cfg.pollMin, w.cfg.pollMin
			default:
				backoff = w.grow(backoff)
			}
			wake = w.clock.After(delay)
		}
		// With no free slot, wake and changed are nil: only a finished run or ctx wakes us.
		select {
		case <-ctx.Done():
		case <-l.done:
			l.active--
		case <-changed:
		case <-wake:
		case _, ok := <-l.notify:
			if !ok {
				l.notify = nil // the listener ended; keep polling
			}
		}
	}
}

// gather waits, up to the claim window, while only a few slots are free and runs are still
// in flight, so that one claim fills several slots rather than one claim per finished run.
// Claims are serial in the loop, so batching them is what lets the slots stay busy.
func (l *loop) gather(ctx context.Context) {
	w := l.w
	held := w.cfg.concurrency + w.cfg.prefetch
	want := min(w.cfg.batch, max(1, w.cfg.concurrency/2))
	free := held - l.active
	if w.cfg.claimWindow <= 0 || l.active == 0 || free == 0 || free >= want {
		return
	}
	// Real time: this smooths database round trips; it is not workflow time.
	t := time.NewTimer(w.cfg.claimWindow)
	defer t.Stop()
	for held-l.active < want {
		select {
		case <-l.done:
			l.active--
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// grow doubles an idle backoff up to the poll maximum (without overflowing).
func (w *Worker) grow(d time.Duration) time.Duration {
	if d > w.cfg.pollMax/2 {
		return w.cfg.pollMax
	}
	return 2 * d
}

// reap counts the runs that finished since the last look, without blocking.
func (l *loop) reap() {
	for {
		select {
		case <-l.done:
			l.active--
		default:
			return
		}
	}
}

// start runs one claimed workflow in its own goroutine.
func (l *loop) start(wf storage.Workflow) {
	l.active++
	l.wg.Go(func() {
		defer func() { l.done <- struct{}{} }()
		l.w.execute(l.runsCtx, l.stop, l.slots, wf)
		if wf.ParentStepID != 0 {
			// After the run's final write: if it was its branch's last child, no sibling is
			// left for the flush to find, and the parent is woken.
			l.wakes.add(wf.ParentStepID)
		}
	})
}

// drain waits for the runs in flight after ctx is done: up to the shutdown timeout, then it
// cancels them with cause sdk.ErrShutdown and waits for them to return. Real time is used
// because a shutdown deadline is a promise to the process manager, not to workflow time.
func (l *loop) drain(cancelRuns context.CancelCauseFunc) {
	l.reap()
	if l.active == 0 {
		return
	}
	w := l.w
	w.log.Info("worker stopping: waiting for runs in flight", "runs", l.active, "timeout", w.cfg.shutdownTimeout)
	deadline := time.NewTimer(w.cfg.shutdownTimeout)
	defer deadline.Stop()
	for l.active > 0 {
		select {
		case <-l.done:
			l.active--
		case <-deadline.C:
			w.log.Warn("worker stopping: shutdown timeout passed, cancelling runs in flight", "runs", l.active)
			cancelRuns(sdk.ErrShutdown)
			for ; l.active > 0; l.active-- {
				<-l.done
			}
		}
	}
}

// claim takes up to limit workflows. Errors are logged and counted here; the caller backs off.
func (w *Worker) claim(ctx context.Context, limit int) ([]storage.Workflow, error) {
	claimed, err := w.eng.Claim(ctx, storage.ClaimRequest{
		Owner: w.cfg.owner,
		Limit: limit,
		Names: w.names,
		TTL:   w.cfg.ttl,
		Now:   w.clock.Now(),
	})
	if err != nil {
		if ctx.Err() == nil {
			w.stats.claimErrors.Add(1)
			w.log.Warn("claim failed; backing off", "error", err)
		}
		return nil, err
	}
	w.stats.claimed.Add(int64(len(claimed)))
	return claimed, nil
}
