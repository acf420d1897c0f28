package memory

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

var (
	_ storage.Storage        = (*Store)(nil)
	_ storage.Notifier       = (*Store)(nil)
	_ storage.GroupFinisher  = (*Store)(nil)
	_ storage.FlowController = (*Store)(nil)
)

// Store is an in-memory storage.Storage. It is safe for concurrent use; its zero value is not
// usable: make one with New.
type Store struct {
	clock func() time.Time

	mu     sync.Mutex
	closed bool

	// The last IDs given out; IDs are never reused, not even after DeleteFinished.
	lastWorkflow, lastStep, lastError, lastMessage int64

	byID      map[int64]*record
	byKey     map[nameKey]*record
	order     []int64           // every workflow ID, ascending
	due       queue             // workflows with a RunAt, by RunAt
	dueFree   queue             // the same, of the workflows without a flow
	dueByName map[string]*queue // dueFree per workflow name
	// dueByFlow holds the workflows with a RunAt and a flow: name -> flow key -> queue.
	dueByFlow map[string]map[string]*queue
	flows     map[string]*flowState // stored flows by key
	// running holds, per flow key (stored or not), the running workflows of the key.
	running   map[string]map[int64]struct{}
	finished  queue             // final workflows, by FinishedAt
	stepOwner map[int64]int64   // step ID -> the workflow it belongs to
	children  map[int64]*branch // branch step ID -> its children
	listeners map[*listener]struct{}
}

// nameKey is the identity of a workflow besides its ID.
type nameKey struct{ name, key string }

// record is one stored workflow with its steps and error records. Its slices belong to the
// store: they are copied in when written and copied out when read.
type record struct {
	w storage.Workflow
	// wake is the earliest Wake received while the workflow ran, applied when the run ends
	// (the contract's "Wakes during a run"); zero when none.
	wake  time.Time
	steps []*storage.Step // in ID order
	// byName indexes steps once there are more than a few; most workflows (a child of a
	// fan-out) have one or two, and a map each would double their footprint.
	byName map[string]*storage.Step
	errs   []storage.ErrorRecord // oldest first
	// msgs is the mailbox, oldest first; consumed messages stay (a key stays taken) until
	// the workflow is deleted.
	msgs []*storage.Message
}

// stepScanMax is the most steps a record finds by name without its byName index.
const stepScanMax = 8

// step returns the step record named name, or nil.
func (r *record) step(name string) *storage.Step {
	if r.byName != nil {
		return r.byName[name]
	}
	for _, st := range r.steps {
		if st.Name == name {
			return st
		}
	}
	return nil
}

// addStep appends a new step record; its ID is the greatest yet, so steps stay in ID order.
func (r *record) addStep(st *storage.Step) {
	r.steps = append(r.steps, st)
	switch {
	case r.byName != nil:
		r.byName[st.Name] = st
	case len(r.steps) > stepScanMax:
		r.byName = make(map[string]*storage.Step, 2*len(r.steps))
		for _, s := range r.steps {
			r.byName[s.Name] = s
		}
	}
}

// branch indexes the children of one branch step.
type branch struct {
	ids     []int64 // ascending
	byState map[storage.State]map[int64]struct{}
}

// Option configures a Store.
type Option func(*Store)

// WithClock makes now the store's clock: the clock leases expire by (see "Two clocks" in
// package storage). The default is time.Now. A test that moves now forward expires leases
// without waiting for them; now must be safe for concurrent use.
func WithClock(now func() time.Time) Option {
	return func(s *Store) {
		if now != nil {
			s.clock = now
		}
	}
}

// New returns an empty store.
func New(opts ...Option) *Store {
	s := &Store{
		clock:     time.Now,
		byID:      map[int64]*record{},
		byKey:     map[nameKey]*record{},
		dueByName: map[string]*queue{},
		dueByFlow: map[string]map[string]*queue{},
		flows:     map[string]*flowState{},
		running:   map[string]map[int64]struct{}{},
		stepOwner: map[int64]int64{},
		children:  map[int64]*branch{},
		listeners: map[*listener]struct{}{},
	}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// Close drops every workflow and closes the channels Listen handed out. Every later call
// returns an error wrapping storage.ErrClosed; a second Close returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for l := range s.listeners {
		s.dropListener(l)
	}
	s.byID, s.byKey, s.order, s.dueByName, s.dueByFlow = nil, nil, nil, nil, nil
	s.flows, s.running = nil, nil
	s.due, s.dueFree, s.finished = queue{}, queue{}, queue{}
	s.stepOwner, s.children = nil, nil
	return nil
}

// begin starts a method's critical section: it checks ctx, locks the store and checks that it
// is open. On nil the caller holds s.mu and must unlock it.
func (s *Store) begin(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %s: %w", op, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("memory: %s: %w", op, storage.ErrClosed)
	}
	return nil
}

// storeNow reads the store's clock, to the microsecond like every stored time.
func (s *Store) storeNow() time.Time {
	return stamp(s.clock())
}

// lookup returns the record of workflow id, or an error wrapping ErrNotFound.
func (s *Store) lookup(op string, id int64) (*record, error) {
	r := s.byID[id]
	if r == nil {
		return nil, fmt.Errorf("memory: %s: workflow %d: %w", op, id, storage.ErrNotFound)
	}
	return r, nil
}

// stamp is how the store keeps a time: in UTC, to the microsecond, without a monotonic
// reading; the zero time stays zero (unset).
func stamp(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// stampOr is stamp(t), or stamp(def) when t is zero.
func stampOr(t, def time.Time) time.Time {
	if t.IsZero() {
		return stamp(def)
	}
	return stamp(t)
}

// micros is the queue key of a stored time.
func micros(t time.Time) int64 { return t.UnixMicro() }

// clone copies b; nil stays nil.
func clone(b []byte) []byte { return bytes.Clone(b) }

func cloneWait(w storage.Wait) storage.Wait {
	w.Data = clone(w.Data)
	return w
}

// out returns a copy of the stored workflow that shares nothing with the store.
func (r *record) out() storage.Workflow {
	w := r.w
	w.Input = clone(w.Input)
	w.Output = clone(w.Output)
	w.Values = clone(w.Values)
	w.TraceContext = clone(w.TraceContext)
	w.Wait = cloneWait(w.Wait)
	w.Tags = cloneTags(w.Tags)
	return w
}

// cloneTags copies tags; none (nil or empty) is nil.
func cloneTags(tags map[string]string) map[string]string {
	if len(tags) == 0 {
		return nil
	}
	return maps.Clone(tags)
}

func copyStep(st *storage.Step) storage.Step {
	c := *st
	c.Result = clone(c.Result)
	c.Meta = clone(c.Meta)
	return c
}

func copyError(e storage.ErrorRecord) storage.ErrorRecord {
	e.Values = clone(e.Values)
	return e
}
