package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// Engine starts, inspects and runs workflows over one storage.Storage. It holds the registry
// of workflow definitions. Workers (package dispatch) call Execute for each claimed workflow.
// An Engine is safe for concurrent use.
type Engine struct {
	store          storage.Storage
	codec          Codec
	clock          Clock
	logger         *slog.Logger
	stepPolicy     RetryPolicy
	workflowPolicy RetryPolicy
	writeTimeout   time.Duration
	pollMin        time.Duration // Result's poll for changes by other processes
	pollMax        time.Duration
	cancelBatch    int          // children per storage call of Cancel WithChildren
	stepHook       StepHook     // WithStepHook: test overrides of step functions
	group          *groupFinish // group commit of final writes, on stores that can (WithoutGroupCommit)
	noGroup        bool
	defs           map[string]*definition
	names          []string
	flows          storage.FlowController  // the store, when it enforces flows
	groups         map[string]storage.Flow // WithFlowGroup
	flowDefaults   map[string]storage.Flow // the flows declared in code, by key (SyncFlows)
	telOpts        telemetry.Options
	tel            *telemetry.Telemetry

	mu      sync.Mutex
	changed chan struct{}
	running map[int64]*runEntry
	watched map[int64]*watch // Result waiters, by workflow
}

// watch is the wake-up of the Result waiters of one workflow: closed when this engine changes
// that workflow, and dropped when its last waiter leaves.
type watch struct {
	ch      chan struct{}
	waiters int
}

// runEntry lets Cancel reach a run in progress in this process.
type runEntry struct{ cancel context.CancelCauseFunc }

// Option configures an Engine (NewEngine).
type Option interface{ applyEngine(*Engine) error }

type engineOption func(*Engine) error

func (f engineOption) applyEngine(e *Engine) error { return f(e) }

// WithWorkflows registers workflow definitions. Names must be valid and unique.
func WithWorkflows(defs ...Definition) Option {
	return engineOption(func(e *Engine) error {
		for _, d := range defs {
			if d == nil {
				return fmt.Errorf("%w: nil workflow definition", ErrInvalid)
			}
			def := d.definition()
			if def.err != nil {
				return fmt.Errorf("register workflow: %w", def.err)
			}
			if _, dup := e.defs[def.name]; dup {
				return fmt.Errorf("%w: workflow name %q registered twice", ErrInvalid, def.name)
			}
			e.defs[def.name] = def
		}
		return nil
	})
}

// WithCodec sets the payload codec (default JSONCodec).
func WithCodec(c Codec) Option {
	return engineOption(func(e *Engine) error { e.codec = c; return nil })
}

// WithClock sets the clock (default SystemClock).
func WithClock(c Clock) Option {
	return engineOption(func(e *Engine) error { e.clock = c; return nil })
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return engineOption(func(e *Engine) error { e.logger = l; return nil })
}

// WithStepRetry sets the default retry policy of steps (default DefaultStepPolicy).
func WithStepRetry(p RetryPolicy) Option {
	return engineOption(func(e *Engine) error {
		if err := p.validate(); err != nil {
			return fmt.Errorf("step retry: %w", err)
		}
		e.stepPolicy = p
		return nil
	})
}

// WithWorkflowRetry sets the default retry policy of workflow functions (default
// DefaultWorkflowPolicy).
func WithWorkflowRetry(p RetryPolicy) Option {
	return engineOption(func(e *Engine) error {
		if err := p.validate(); err != nil {
			return fmt.Errorf("workflow retry: %w", err)
		}
		e.workflowPolicy = p
		return nil
	})
}

// DefaultWriteTimeout bounds a write that must outlive its run's cancellation; see
// WithWriteTimeout.
const DefaultWriteTimeout = 30 * time.Second

// WithWriteTimeout bounds each write a run makes after its context may have been cancelled
// (saving a finished step, the run's final write, a spawn batch, a probe's reschedule, giving
// a lease back): such writes ignore the run's cancellation, so that finished work is kept, but
// a hung database still cannot hold them, and so a worker's shutdown, longer than d (default
// DefaultWriteTimeout). Past the lease's TTL the store refuses such a write anyway, so d
// need not exceed it.
func WithWriteTimeout(d time.Duration) Option {
	return engineOption(func(e *Engine) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithWriteTimeout(%v) must be positive", ErrInvalid, d)
		}
		e.writeTimeout = d
		return nil
	})
}

// WithResultPoll sets how often Handle.Result reads its workflow to notice changes made by
// other processes (runs by workers of another engine or process): first after min, then
// doubling up to max, in real time (default 10 ms to 1 s). Changes made through this engine
// wake its waiters at once whatever the poll. Both must be positive and min at most max.
func WithResultPoll(min, max time.Duration) Option {
	return engineOption(func(e *Engine) error {
		if min <= 0 || max <= 0 || min > max {
			return fmt.Errorf("%w: WithResultPoll(%v, %v): both must be positive and the minimum at most the maximum", ErrInvalid, min, max)
		}
		e.pollMin, e.pollMax = min, max
		return nil
	})
}

// WithoutGroupCommit makes every run write its final write with a FinishRun of its own, even
// on a store that can write many at once (storage.GroupFinisher). By default, runs that end
// while another run's final write is in flight are written together by the next call (one
// round trip and one commit for all of them); a run that ends alone is written at once, as
// without group commit.
func WithoutGroupCommit() Option {
	return engineOption(func(e *Engine) error { e.noGroup = true; return nil })
}

// detached returns a context for a write that must outlive ctx's cancellation (keeping its
// values), bounded by the write timeout.
func (e *Engine) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), e.writeTimeout)
}

// NewEngine builds an engine over store. It returns an error for invalid or duplicate
// workflow names and invalid policies.
func NewEngine(store storage.Storage, opts ...Option) (*Engine, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil storage", ErrInvalid)
	}
	e := &Engine{
		store:          store,
		codec:          JSONCodec{},
		clock:          SystemClock{},
		logger:         slog.Default(),
		stepPolicy:     DefaultStepPolicy,
		workflowPolicy: DefaultWorkflowPolicy,
		writeTimeout:   DefaultWriteTimeout,
		pollMin:        10 * time.Millisecond,
		pollMax:        time.Second,
		cancelBatch:    storage.MaxCancelChildren,
		defs:           map[string]*definition{},
		changed:        make(chan struct{}),
		running:        map[int64]*runEntry{},
		watched:        map[int64]*watch{},
	}
	for _, o := range opts {
		if err := o.applyEngine(e); err != nil {
			return nil, err
		}
	}
	if g, ok := store.(storage.GroupFinisher); ok && !e.noGroup {
		e.group = &groupFinish{store: g}
	}
	tel, err := telemetry.New(e.telOpts)
	if err != nil {
		return nil, err
	}
	e.tel = tel
	for n := range e.defs {
		e.names = append(e.names, n)
	}
	sort.Strings(e.names)
	e.flows, _ = store.(storage.FlowController)
	if err := e.resolveFlows(); err != nil {
		return nil, err
	}
	return e, nil
}

// Store returns the engine's storage.
func (e *Engine) Store() storage.Storage { return e.store }

// Clock returns the engine's clock.
func (e *Engine) Clock() Clock { return e.clock }

// Logger returns the engine's logger.
func (e *Engine) Logger() *slog.Logger { return e.logger }

// Names returns the registered workflow names, sorted.
func (e *Engine) Names() []string { return append([]string(nil), e.names...) }

// Changed returns a channel that is closed the next time this engine starts, wakes or
// finishes a workflow. Workers in the same process use it to react at once
// instead of waiting for their next poll.
func (e *Engine) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

func (e *Engine) notify() {
	e.mu.Lock()
	defer e.mu.Unlock()
	close(e.changed)
	e.changed = make(chan struct{})
}

// changedWorkflow wakes the Result waiters of workflow id (and only them): this engine
// changed its state.
func (e *Engine) changedWorkflow(id int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if w := e.watched[id]; w != nil {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// watch registers a Result waiter of workflow id. The returned function gives the channel
// to wait on before each read of the workflow; leave ends the registration.
func (e *Engine) watch(id int64) (next func() <-chan struct{}, leave func()) {
	e.mu.Lock()
	w := e.watched[id]
	if w == nil {
		w = &watch{ch: make(chan struct{})}
		e.watched[id] = w
	}
	w.waiters++
	e.mu.Unlock()
	next = func() <-chan struct{} {
		e.mu.Lock()
		defer e.mu.Unlock()
		return w.ch
	}
	leave = func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if w.waiters--; w.waiters == 0 {
			delete(e.watched, id)
		}
	}
	return next, leave
}

func (e *Engine) checkRegistered(d *definition) error {
	if d.err != nil {
		return d.err
	}
	switch held := e.defs[d.name]; {
	case held == nil:
		return fmt.Errorf("%w: %q (add it with sdk.WithWorkflows)", ErrUnregistered, d.name)
	case held != d:
		return fmt.Errorf("%w: %q: another definition is registered under that name "+
			"(two sdk.New calls with one name?); use the definition passed to sdk.WithWorkflows", ErrUnregistered, d.name)
	}
	return nil
}

// Get returns the stored workflow row with the given id, for workers and tooling; everyday
// code uses Describe, which speaks the SDK's own types.
func (e *Engine) Get(ctx context.Context, id int64) (storage.Workflow, error) {
	return e.store.GetWorkflow(ctx, id)
}

// Signal wakes the workflow with the given id so that its current wait is evaluated now: a
// ContinueIf or WaitUntil condition is checked again, a Sleep re-suspends for the time that
// remains. A signal that arrives while the workflow runs is kept for when the run ends.
// A completed, failed, cancelled or stalled workflow is not woken: Signal then returns an
// error matching ErrWrongState that names the state (use Retry for a stalled one).
func (e *Engine) Signal(ctx context.Context, id int64) (err error) {
	ctx, span := e.tel.StartProducer(ctx, telemetry.OpSignal, telemetry.Workflow{ID: id})
	defer func() { telemetry.EndProducer(span, telemetry.OpSignal, telemetry.Workflow{}, err, "") }()
	woken, err := e.store.Wake(ctx, id, e.clock.Now())
	if err != nil {
		return fmt.Errorf("signal workflow %d: %w", id, err)
	}
	if !woken {
		wf, err := e.store.GetWorkflow(ctx, id)
		if err != nil {
			return fmt.Errorf("signal workflow %d: not woken: %w", id, err)
		}
		return fmt.Errorf("signal workflow %q key %q: %w: it is %s; only idle or running workflows can be signalled", wf.Name, wf.Key, ErrWrongState, wf.State)
	}
	e.notify()
	e.changedWorkflow(id)
	return nil
}

// CancelOption configures Cancel.
type CancelOption interface{ applyCancel(*cancelConfig) }

type cancelOption func(*cancelConfig)

func (f cancelOption) applyCancel(c *cancelConfig) { f(c) }

type cancelConfig struct{ children bool }

// WithChildren makes Cancel also cancel the children of the workflow's branches that are not
// final (idle, running or stalled), and their children in turn. The parent is cancelled
// first, so it spawns no more. The tree is cancelled level by level in bulk, without loading
// any child: one load of the workflow, then one storage call per
// storage.MaxCancelChildren children of a level (and one per storage.MaxCancelSteps
// branches), so 100,000 children cost about 100 calls instead of two per child. Memory holds
// one level's branch step IDs. Completed and failed children are left as they are. Given
// for a workflow that is cancelled already, Cancel goes on with its children, so a cancel of a
// tree that was interrupted (a crash, a lost connection) is completed by calling it again.
func WithChildren() CancelOption {
	return cancelOption(func(c *cancelConfig) { c.children = true })
}

// Cancel marks the workflow cancelled. A run in progress in this process stops at its next SDK
// call and its step's context is cancelled; runs in other processes stop at their next write
// or heartbeat. Nothing more is committed for it. Its branch children run on unless
// WithChildren is given.
func (e *Engine) Cancel(ctx context.Context, id int64, opts ...CancelOption) (err error) {
	ctx, span := e.tel.StartProducer(ctx, telemetry.OpCancel, telemetry.Workflow{ID: id})
	defer func() { telemetry.EndProducer(span, telemetry.OpCancel, telemetry.Workflow{}, err, "") }()
	var cfg cancelConfig
	for _, o := range opts {
		o.applyCancel(&cfg)
	}
	if err := e.cancel(ctx, id); err != nil {
		// Cancelling an already cancelled workflow WithChildren carries on with its children,
		// so a cancel of a tree that was interrupted can be completed by calling it again.
		wf, gerr := e.store.GetWorkflow(ctx, id)
		if !cfg.children || !errors.Is(err, storage.ErrWrongState) || gerr != nil || wf.State != storage.StateCancelled {
			return err
		}
	}
	if cfg.children {
		if err := e.cancelChildren(ctx, id); err != nil {
			return err
		}
	}
	// A cancelled child is final: if it was its branch's last unfinished one, its parent's
	// merge is over now, not at the parent's next probe.
	if wf, err := e.store.GetWorkflow(ctx, id); err == nil && wf.ParentStepID != 0 {
		if _, err := e.WakeMerges(ctx, []int64{wf.ParentStepID}); err != nil {
			e.logger.Warn("cancel: waking the parent's merge failed; it resumes at its next probe", "id", id, "error", err)
		}
	}
	return nil
}

func (e *Engine) cancel(ctx context.Context, id int64) error {
	if err := e.store.Cancel(ctx, id, e.clock.Now()); err != nil {
		return fmt.Errorf("cancel workflow %d: %w", id, err)
	}
	e.mu.Lock()
	if r := e.running[id]; r != nil {
		r.cancel(storage.ErrCancelled)
	}
	e.mu.Unlock()
	e.notify()
	e.changedWorkflow(id)
	return nil
}

// cancelChildren cancels the unfinished children of every branch of workflow id, and theirs
// in turn, level by level, without loading any child: one Load of the workflow for its
// branch steps, then storage calls of up to cancelBatch children each (storage.CancelChildren)
// over the branch steps of one level, which return the branch steps of the next. It keeps one
// level's branch step IDs in memory. A run of a cancelled child in this process is stopped
// at once, as Cancel stops one, by looking the returned IDs up among this engine's runs.
func (e *Engine) cancelChildren(ctx context.Context, id int64) error {
	_, steps, err := e.store.Load(ctx, id)
	if err != nil {
		return fmt.Errorf("cancel children of workflow %d: %w", id, err)
	}
	var level []int64
	for _, s := range steps {
		if strings.HasPrefix(s.Name, storage.BranchStepPrefix) {
			level = append(level, s.ID)
		}
	}
	cancelled := 0
	defer func() {
		if cancelled > 0 {
			e.notify()
		}
	}()
	for len(level) > 0 {
		var next []int64
		for start := 0; start < len(level); start += storage.MaxCancelSteps {
			chunk := level[start:min(start+storage.MaxCancelSteps, len(level))]
			for {
				res, err := e.store.CancelChildren(ctx, storage.CancelChildrenRequest{StepIDs: chunk, Limit: e.cancelBatch, Now: e.clock.Now()})
				if err != nil {
					return fmt.Errorf("cancel children of workflow %d (%d cancelled before): %w", id, cancelled, err)
				}
				cancelled += len(res.Cancelled)
				e.cancelled(res.Cancelled)
				next = append(next, res.BranchStepIDs...)
				if !res.More {
					break
				}
			}
		}
		level = next
	}
	return nil
}

// cancelled stops the runs of the given workflows that this engine has in progress and wakes
// their Result waiters: the store cancelled them.
func (e *Engine) cancelled(ids []int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		if r := e.running[id]; r != nil {
			r.cancel(storage.ErrCancelled)
		}
		if w := e.watched[id]; w != nil {
			close(w.ch)
			w.ch = make(chan struct{})
		}
	}
}
