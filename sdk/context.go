package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Context is what a workflow function receives: the identity of the workflow and the run's
// durable state. It is not a context.Context: I/O belongs in steps, whose functions get one.
type Context struct {
	run *run
}

// ID returns the workflow's storage id.
func (c *Context) ID() int64 { return c.run.wf.ID }

// Name returns the workflow's name.
func (c *Context) Name() string { return c.run.wf.Name }

// Key returns the workflow's key.
func (c *Context) Key() string { return c.run.wf.Key }

// Logger returns a logger for workflow code. Its records carry the workflow's name, key and
// ID and, when the run is traced, the trace and span IDs of the run's span.
//
// It is quiet while the run replays what earlier runs did, so each record is logged once,
// not once per replay. A run that finds step records stored by earlier runs starts quiet
// and drops every record until it first does new work: an SDK call runs a step's function
// or a wait's condition, runs a branch body, records a result (a sleep that is over, a
// spawn batch, a merge), or suspends, stalls or fails the run. A step, sleep, branch or
// merge read back from storage does not end the quiet. From that point to the end of the
// run everything is logged. A first run (no stored records) logs from its start. So a line
// between two steps is logged by the run that executes the step before it (or, after a
// crash that lost that run's write, once more by the run that redoes it). A run that does
// nothing new (the workflow function fails again before any new step) logs nothing
// through it; the engine logs each failed run itself. Replaying reports the same state.
func (c *Context) Logger() *slog.Logger { return c.run.userLogger() }

// Now returns the current time by the engine's clock, recorded the first time each call
// runs, so a replay gets the same time: the workflow's n-th call to Now returns what the n-th
// call returned when it first ran. Use it, not time.Now, in workflow code between steps.
// (Inside a step's function it is not recorded; it is the clock's time.)
func (c *Context) Now() time.Time {
	r := c.run
	if r.inside != "" || r.stopped != nil {
		return r.eng.clock.Now()
	}
	r.nows++
	name := fmt.Sprintf("now$%d", r.nows)
	if s := r.steps[name]; s != nil && s.State == storage.StepCompleted {
		var t time.Time
		if err := json.Unmarshal(s.Result, &t); err == nil {
			return t
		}
	}
	now := r.eng.clock.Now()
	rec, _ := r.record(name)
	rec.State, rec.Attempts, rec.CompletedAt, rec.Result = storage.StepCompleted, 1, now, mustJSON(now)
	r.queue(rec) // written with the run's next write, before any later step runs
	return now
}

// Info describes the workflow a Context runs.
type Info struct {
	ID   int64
	Name string
	Key  string
	// Attempt is the run's attempt of the workflow function: 1, plus one per failed run
	// that the workflow's retry policy retried.
	Attempt int
	// Tags are the workflow's start tags (nil when none); do not modify them.
	Tags map[string]string
	// Child reports a branch child (spawned, or started by Call).
	Child bool
}

// Info returns the identity of the workflow the run belongs to.
func (c *Context) Info() Info {
	w := &c.run.wf
	return Info{ID: w.ID, Name: w.Name, Key: w.Key, Attempt: w.Attempt + 1, Tags: w.Tags, Child: w.ParentStepID != 0}
}

// Replaying reports whether the run is still replaying what earlier runs did; see Logger.
func (c *Context) Replaying() bool { return c.run.tel.replaying.Load() }

// run is the state of one execution of a workflow function.
type run struct {
	eng   *Engine
	def   *definition
	wf    storage.Workflow
	lease storage.Lease
	ctx   context.Context
	log   *slog.Logger

	steps map[string]*storage.Step // stored records by name, updated as the run writes
	seen  map[string]bool          // record names used in this run

	values      map[string]json.RawMessage
	valuesDirty bool

	pending []storage.Step // records to write with the next commit
	errs    []storage.ErrorRecord

	stopped *haltError

	branches map[string]*openBranch // branches opened in this run, by name
	inBranch bool                   // a branch body is running (branches do not nest)

	// nows counts this run's calls to Context.Now, naming their records.
	nows int

	// probed are branch steps whose children the merge probe before this run found finished.
	probed []int64

	// inside names the step (or wait) whose function is running; SDK calls that record
	// steps are a programming error there.
	inside string

	tel observed // spans, metrics and the replay flag of the quiet logger (telemetry.go)
}

// check returns the sticky halt, or turns a cancelled run context into one.
func (r *run) check() error {
	if r.stopped != nil {
		return r.stopped
	}
	if err := r.ctx.Err(); err != nil {
		return r.halt(haltAbort, context.Cause(r.ctx))
	}
	return nil
}

// halt stops the run with the given kind and cause; the first halt wins.
func (r *run) halt(kind haltKind, cause error) error {
	r.live()
	if r.stopped == nil {
		r.stopped = &haltError{kind: kind, cause: cause}
	}
	return r.stopped
}

// suspend stops the run until runAt (zero: until a signal).
func (r *run) suspend(runAt time.Time, wait storage.Wait) error {
	if r.stopped == nil {
		r.stopped = &haltError{kind: haltSuspend, runAt: runAt, wait: wait}
		r.waitEvent(runAt, wait)
	}
	return r.stopped
}

// use claims a record name for this run: it validates the user name and rejects a second use
// and a call made from inside a step's function.
func (r *run) use(what, name, record string) error {
	if r.inside != "" {
		return r.halt(haltFail, fmt.Errorf("%w: workflow %q key %q: %s %q called inside the function of %s; "+
			"call SDK functions from the workflow function, not from a step or a wait condition",
			ErrInvalid, r.wf.Name, r.wf.Key, what, name, r.inside))
	}
	if err := validateUserName(what, name); err != nil {
		return r.halt(haltFail, fmt.Errorf("workflow %q key %q: %w", r.wf.Name, r.wf.Key, err))
	}
	if r.seen[record] {
		return r.halt(haltFail, fmt.Errorf("workflow %q key %q: %w: %s %q", r.wf.Name, r.wf.Key, ErrDuplicateStep, what, name))
	}
	r.seen[record] = true
	return nil
}

// record returns a copy of the stored record with the given name, or a new pending one.
func (r *run) record(name string) (storage.Step, bool) {
	if s := r.steps[name]; s != nil {
		return *s, true
	}
	now := r.eng.clock.Now()
	return storage.Step{WorkflowID: r.wf.ID, Name: name, State: storage.StepPending, CreatedAt: now}, false
}

// queue schedules a record for the next commit and makes it the run's view of that record.
func (r *run) queue(s storage.Step) {
	r.live()
	s.UpdatedAt = r.eng.clock.Now()
	cp := s
	r.steps[s.Name] = &cp
	r.pending = append(r.pending, s)
}

// commit writes the queued records, the values (if changed) and error records under the lease.
func (r *run) commit() error {
	c := storage.Commit{Steps: r.pending, Errors: r.errs, Now: r.eng.clock.Now()}
	if r.valuesDirty {
		c.Values = r.encodeValues()
	}
	// Not r.ctx: a step that finished while the worker shuts down still saves its result.
	// The lease fences the write, so a stale run cannot commit.
	wctx, cancel := r.eng.detached(r.ctx)
	defer cancel()
	if err := r.eng.store.SaveSteps(wctx, r.lease, c); err != nil {
		return r.halt(haltAbort, fmt.Errorf("workflow %q key %q: save steps: %w", r.wf.Name, r.wf.Key, err))
	}
	r.pending, r.errs, r.valuesDirty = nil, nil, false
	return nil
}

// flush commits queued step records (and the values with them) before user code with side
// effects runs; values alone wait for the next write.
func (r *run) flush() error {
	if len(r.pending) == 0 {
		return nil
	}
	return r.commit()
}

// recordError queues an error record for the step (empty for the workflow function). err is
// the error as the user's code returned it: its Go type and message are what is recorded,
// while the step and attempt have fields of their own.
func (r *run) recordError(step string, attempt int, err error) {
	r.errs = append(r.errs, storage.ErrorRecord{
		WorkflowID: r.wf.ID,
		Step:       step,
		Attempt:    attempt,
		Type:       storage.Truncate(errorType(err), storage.MaxErrorName),
		Message:    storage.Truncate(err.Error(), maxErrorMessage),
		Values:     r.snapshot(maxSnapshot),
		CreatedAt:  r.eng.clock.Now(),
	})
}

// Bounds of an error record's message and of its snapshot of the durable values.
const (
	maxErrorMessage = 4 << 10
	maxSnapshot     = 64 << 10
)

// errorType names the Go type of err, looking through Permanent, which only marks an error.
func errorType(err error) string {
	for {
		p, ok := err.(*permanentError)
		if !ok {
			return reflect.TypeOf(err).String()
		}
		err = p.err
	}
}

func decodeError(r *run, step string, t reflect.Type, err error) error {
	return fmt.Errorf("%w: workflow %q key %q step %q: into %s: %v", ErrDecode, r.wf.Name, r.wf.Key, step, t, err)
}

func (r *run) encodeValues() []byte {
	if len(r.values) == 0 {
		return []byte("{}")
	}
	data, _ := json.Marshal(r.values) // RawMessages were produced by json.Marshal
	return data
}

// snapshot returns the durable values as a JSON object of at most limit bytes. Every key is
// present; a value that does not fit is replaced by the marker {"$omitted_bytes": n}, n being
// its encoded size, smallest values kept first so as many as possible stay whole. Only when
// the markers alone overflow (thousands of keys) are the last keys, in key order, left out,
// and "$omitted_keys" says how many.
func (r *run) snapshot(limit int) []byte {
	if len(r.values) == 0 {
		return nil
	}
	keys := make([]string, 0, len(r.values))
	for k := range r.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	marker := func(n int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"$omitted_bytes":%d}`, n)) }
	// Entry sizes as encoded: "key":value plus a comma; keys need no escaping beyond what
	// json.Marshal adds, so measure them that way.
	entry := func(k string, v json.RawMessage) int { kb, _ := json.Marshal(k); return len(kb) + 1 + len(v) + 1 }
	size := 2
	out := make(map[string]json.RawMessage, len(keys))
	kept := 0
	for _, k := range keys {
		m := marker(len(r.values[k]))
		if size+entry(k, m) > limit-64 { // room for "$omitted_keys"
			break
		}
		out[k] = m
		size += entry(k, m)
		kept++
	}
	if kept < len(keys) {
		out["$omitted_keys"] = json.RawMessage(fmt.Sprint(len(keys) - kept))
	}
	// Upgrade markers to whole values, smallest first, while they fit.
	order := append([]string(nil), keys[:kept]...)
	sort.SliceStable(order, func(i, j int) bool { return len(r.values[order[i]]) < len(r.values[order[j]]) })
	for _, k := range order {
		grow := len(r.values[k]) - len(out[k])
		if grow > 0 && size+grow > limit {
			break
		}
		out[k] = r.values[k]
		size += grow
	}
	data, _ := json.Marshal(out)
	return data
}

// Get reads the durable value stored under key into a T. It reports false when the key was
// never set. A value that cannot be decoded into T stops the run with an error naming the key
// and type.
func Get[T any](c *Context, key string) (T, bool, error) {
	var zero T
	r := c.run
	if err := r.check(); err != nil {
		return zero, false, err
	}
	if err := validateUserName("value", key); err != nil {
		return zero, false, Permanent(err)
	}
	raw, ok := r.values[key]
	if !ok {
		return zero, false, nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return zero, false, r.halt(haltFail, decodeError(r, "value "+key, reflect.TypeFor[T](), err))
	}
	return v, true, nil
}

// Set stores v (JSON-encoded, at most MaxValueSize bytes) under key. The value is saved in the
// same write as the next step that completes (or the end of the run), never separately.
// A bad key, an unencodable value or one over the limit returns a Permanent error wrapping
// ErrInvalid or ErrTooLarge and stores nothing.
func Set(c *Context, key string, v any) error {
	r := c.run
	if err := r.check(); err != nil {
		return err
	}
	raw, err := encodeValue(key, v)
	if err != nil {
		return Permanent(fmt.Errorf("workflow %q key %q: %w", r.wf.Name, r.wf.Key, err))
	}
	r.values[key] = raw
	r.valuesDirty = true
	return nil
}

// SetOnce stores v under key only if key has no value yet, and reports whether it did.
func SetOnce(c *Context, key string, v any) (bool, error) {
	r := c.run
	if err := r.check(); err != nil {
		return false, err
	}
	if err := validateUserName("value", key); err != nil {
		return false, Permanent(err)
	}
	if _, ok := r.values[key]; ok {
		return false, nil
	}
	return true, Set(c, key, v)
}

func encodeValue(key string, v any) (json.RawMessage, error) {
	if err := validateUserName("value", key); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: value %q is not JSON-encodable: %v", ErrInvalid, key, err)
	}
	if len(raw) > MaxValueSize {
		return nil, fmt.Errorf("%w: value %q is %d bytes encoded, more than %d", ErrTooLarge, key, len(raw), MaxValueSize)
	}
	return raw, nil
}
