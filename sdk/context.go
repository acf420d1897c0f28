package sdk

import (
	"context"
	"encoding/json"
	"errors"
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

// Logger returns a logger carrying the workflow's name and key.
func (c *Context) Logger() *slog.Logger { return c.run.log }

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
	if r.stopped == nil {
		r.stopped = &haltError{kind: kind, cause: cause}
	}
	return r.stopped
}

// suspend stops the run until runAt (zero: until a signal).
func (r *run) suspend(runAt time.Time, wait storage.Wait) error {
	if r.stopped == nil {
		r.stopped = &haltError{kind: haltSuspend, runAt: runAt, wait: wait}
	}
	return r.stopped
}

// use claims a record name for this run: it validates the user name and rejects a second use.
func (r *run) use(what, name, record string) error {
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
	if err := r.eng.store.SaveSteps(context.WithoutCancel(r.ctx), r.lease, c); err != nil {
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

// recordError queues an error record for the step (empty for the workflow function).
func (r *run) recordError(step string, attempt int, err error) {
	r.errs = append(r.errs, storage.ErrorRecord{
		WorkflowID: r.wf.ID,
		Step:       step,
		Attempt:    attempt,
		Type:       storage.Truncate(errorType(err), storage.MaxErrorName),
		Message:    storage.Truncate(err.Error(), 4<<10),
		Values:     r.snapshot(4 << 10),
		CreatedAt:  r.eng.clock.Now(),
	})
}

func errorType(err error) string {
	for {
		var p *permanentError
		if errors.As(err, &p) && err == error(p) {
			err = p.err
			continue
		}
		return reflect.TypeOf(err).String()
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

// snapshot returns the durable values as JSON, keeping whole entries up to about limit bytes.
func (r *run) snapshot(limit int) []byte {
	if len(r.values) == 0 {
		return nil
	}
	keys := make([]string, 0, len(r.values))
	for k := range r.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]json.RawMessage{}
	size := 2
	for _, k := range keys {
		n := len(k) + len(r.values[k]) + 4
		if size+n > limit {
			continue
		}
		out[k] = r.values[k]
		size += n
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
