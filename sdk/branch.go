package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"reflect"

	"github.com/chronoforge/chronoforge/storage"
)

// Record names of branches: "branch$<name>" seals the branch, "spawn$<branch>$<name>" tracks
// one Spawn or SpawnEach (its cursor), "merge$<branch>" records a completed join.
func branchRecord(name string) string        { return "branch$" + name }
func spawnRecord(branch, name string) string { return "spawn$" + branch + "$" + name }
func mergeRecord(branch string) string       { return "merge$" + branch }

// DefaultSpawnBatch is the number of children SpawnEach writes per transaction.
const DefaultSpawnBatch = 1000

// openBranch is a branch known to this run: opened (or replayed as sealed) by Branch.
type openBranch struct {
	name   string
	stepID int64
	opts   branchConfig
	merged bool
}

// BranchOption configures a branch.
type BranchOption func(*branchConfig)

type branchConfig struct {
	autoMerge bool
	merge     mergeConfig
}

// AutoMerge joins the branch when the workflow function returns: the steps after the branch
// run while its children run, and the workflow completes only once they are done. Call Merge
// right after Branch instead to block there.
func AutoMerge() BranchOption { return func(c *branchConfig) { c.autoMerge = true } }

// BranchScope is what a branch body receives: the handle Spawn and SpawnEach write through.
type BranchScope struct {
	r      *run
	name   string
	record string
	stepID int64 // the branch step's ID once stored
}

// Branch opens a branch named name and runs body, which creates child workflows with Spawn
// and SpawnEach. When body returns nil the branch is sealed: on replay a sealed branch never
// runs body again, so an expensive source is enumerated once. Branches do not nest. Every
// branch must be joined, by Merge or AutoMerge, before the workflow completes; otherwise the
// workflow fails with an error naming the branch.
func Branch(c *Context, name string, body func(b *BranchScope) error, opts ...BranchOption) error {
	r := c.run
	if err := r.check(); err != nil {
		return err
	}
	rec := branchRecord(name)
	if err := r.use("branch", name, rec); err != nil {
		return err
	}
	if r.inBranch {
		return r.halt(haltFail, fmt.Errorf("%w: workflow %q: branch %q opened inside another branch; branches do not nest", ErrInvalid, r.wf.Name, name))
	}
	cfg := branchConfig{merge: defaultMerge()}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.merge.validate(name); err != nil {
		return r.halt(haltFail, fmt.Errorf("workflow %q: %w", r.wf.Name, err))
	}
	ob := &openBranch{name: name, opts: cfg}
	if r.branches == nil {
		r.branches = map[string]*openBranch{}
	}
	stored, _ := r.record(rec)
	if stored.State == storage.StepCompleted {
		ob.stepID = stored.ID
		ob.merged = r.steps[mergeRecord(name)] != nil && r.steps[mergeRecord(name)].State == storage.StepCompleted
		r.branches[name] = ob
		return nil
	}
	b := &BranchScope{r: r, name: name, record: rec, stepID: stored.ID}
	r.inBranch = true
	err := body(b)
	r.inBranch = false
	if r.stopped != nil {
		return r.stopped
	}
	if err != nil {
		return fmt.Errorf("branch %q: %w", name, err)
	}
	if b.stepID == 0 {
		// Nothing was spawned yet: store the branch record now so it has an ID to merge on.
		if _, err := b.spawn(nil, nil); err != nil {
			return err
		}
	}
	sealed, _ := r.record(rec)
	sealed.State, sealed.CompletedAt = storage.StepCompleted, r.eng.clock.Now()
	sealed.Attempts = max(sealed.Attempts, 1)
	r.queue(sealed) // written with the next commit; until then a replay re-runs the idempotent body
	ob.stepID = b.stepID
	r.branches[name] = ob
	return nil
}

// spawn writes one batch: the given step records and children, with the branch record and
// whatever the run has queued, in one fenced transaction.
func (b *BranchScope) spawn(steps []storage.Step, children []storage.NewWorkflow) (int, error) {
	r := b.r
	all := append([]storage.Step(nil), r.pending...)
	if b.stepID == 0 {
		if _, ok := r.steps[b.record]; !ok {
			rec, _ := r.record(b.record)
			rec.UpdatedAt = r.eng.clock.Now()
			all = append(all, rec)
		}
	}
	all = append(all, steps...)
	wctx, cancel := r.eng.detached(r.ctx)
	defer cancel()
	res, err := r.eng.store.SpawnBatch(wctx, r.lease, storage.SpawnRequest{
		Branch: b.record, Steps: all, Children: children, Now: r.eng.clock.Now(),
	})
	if err != nil {
		return 0, r.halt(haltAbort, fmt.Errorf("workflow %q key %q: branch %q: spawn: %w", r.wf.Name, r.wf.Key, b.name, err))
	}
	r.pending = nil
	for _, s := range all {
		cp := s
		r.steps[s.Name] = &cp
	}
	b.stepID = res.BranchStepID
	if rec := r.steps[b.record]; rec != nil {
		rec.ID = res.BranchStepID
	}
	return res.Inserted, nil
}

// Child is one child workflow to spawn: a registered workflow and its encoded input. Build
// it with NewChild.
type Child struct {
	def   *definition
	input any
}

// NewChild pairs a workflow with its input for SpawnEach, so one source may spawn children
// of different types.
func NewChild[In, Out any](wf *Workflow[In, Out], in In) Child {
	return Child{def: wf.def, input: in}
}

// childKey is "<parent key>$<branch>$<name>" plus "_<suffix>" for SpawnEach items.
func (b *BranchScope) childKey(name, suffix string) string {
	k := b.r.wf.Key + "$" + b.name + "$" + name
	if suffix != "" {
		k += "_" + suffix
	}
	return k
}

func (b *BranchScope) newChild(c Child, key string) (storage.NewWorkflow, error) {
	r := b.r
	if c.def == nil {
		return storage.NewWorkflow{}, fmt.Errorf("%w: empty Child (build it with sdk.NewChild)", ErrInvalid)
	}
	if err := r.eng.checkRegistered(c.def); err != nil {
		return storage.NewWorkflow{}, err
	}
	if err := storage.ValidateKey(key); err != nil {
		return storage.NewWorkflow{}, err
	}
	input, err := r.eng.codec.Marshal(c.input)
	if err != nil {
		return storage.NewWorkflow{}, fmt.Errorf("encode input of child %q: %w", key, err)
	}
	now := r.eng.clock.Now()
	return storage.NewWorkflow{Name: c.def.name, Key: key, Input: input, RunAt: now, Now: now}, nil
}

// begin validates a spawn name and claims its record; it reports whether the spawn is done.
func (b *BranchScope) begin(what, name string) (storage.Step, bool, error) {
	r := b.r
	if err := r.check(); err != nil {
		return storage.Step{}, false, err
	}
	if !r.inBranch {
		return storage.Step{}, false, r.halt(haltFail, fmt.Errorf("%w: %s %q called outside its branch body", ErrInvalid, what, name))
	}
	rec := spawnRecord(b.name, name)
	if err := r.use(what, name, rec); err != nil {
		return storage.Step{}, false, err
	}
	if len(rec) > storage.MaxNameLen {
		return storage.Step{}, false, r.halt(haltFail, fmt.Errorf("%w: branch %q and %s %q together are too long (record %d bytes, at most %d)", ErrInvalid, b.name, what, name, len(rec), storage.MaxNameLen))
	}
	s, _ := r.record(rec)
	return s, s.State == storage.StepCompleted, nil
}

// Spawn creates one child workflow in the branch, keyed "<parent key>$<branch>$<name>". It is
// idempotent: on replay, or if the child exists, nothing more is created.
func Spawn[In, Out any](b *BranchScope, name string, wf *Workflow[In, Out], in In) error {
	rec, done, err := b.begin("spawn", name)
	if err != nil || done {
		return err
	}
	child, err := b.newChild(NewChild(wf, in), b.childKey(name, ""))
	if err != nil {
		return b.r.halt(haltFail, fmt.Errorf("workflow %q: branch %q spawn %q: %w", b.r.wf.Name, b.name, name, err))
	}
	rec.State, rec.Attempts, rec.CompletedAt = storage.StepCompleted, 1, b.r.eng.clock.Now()
	_, err = b.spawn([]storage.Step{rec}, []storage.NewWorkflow{child})
	return err
}

// SpawnOption configures SpawnEach.
type SpawnOption func(*spawnConfig)

type spawnConfig struct{ batch int }

// BatchSize sets how many children SpawnEach writes per transaction (default
// DefaultSpawnBatch, at most storage.MaxSpawnBatch).
func BatchSize(n int) SpawnOption { return func(c *spawnConfig) { c.batch = n } }

// spawnMeta is the cursor of a SpawnEach, stored in its record after every batch.
type spawnMeta struct {
	Cursor  []byte `json:"cursor,omitempty"`
	Read    int64  `json:"read"`
	Batches int64  `json:"batches"`
}

// SpawnEach creates one child per item of source, in batches. fn maps an item to the child
// workflow and input (NewChild), so children may be of mixed types. Each batch is one
// storage transaction that inserts the children (idempotently, by key), makes them runnable
// and stores the source's cursor, so a crash anywhere leaves exactly one child per item and
// the next run resumes at the next batch. Children of keyed sources are keyed
// "<parent>$<branch>$<name>_<item key>"; positional sources use the item's index.
func SpawnEach[T any](b *BranchScope, name string, source Source[T], fn func(item T) (Child, error), opts ...SpawnOption) error {
	r := b.r
	rec, done, err := b.begin("spawn", name)
	if err != nil || done {
		return err
	}
	cfg := spawnConfig{batch: DefaultSpawnBatch}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.batch < 1 || cfg.batch > storage.MaxSpawnBatch {
		return r.halt(haltFail, fmt.Errorf("%w: spawn %q batch size %d must be 1..%d", ErrInvalid, name, cfg.batch, storage.MaxSpawnBatch))
	}
	if source == nil || fn == nil {
		return r.halt(haltFail, fmt.Errorf("%w: spawn %q needs a source and a function", ErrInvalid, name))
	}
	if c, ok := source.(interface{ close() }); ok {
		defer c.close() // a run that stops mid-source must not leave an iterator running
	}
	var meta spawnMeta
	if len(rec.Meta) > 0 {
		if err := json.Unmarshal(rec.Meta, &meta); err != nil {
			return r.halt(haltFail, fmt.Errorf("%w: spawn %q cursor: %v", ErrDecode, name, err))
		}
	}
	fail := func(err error) error {
		return r.halt(haltFail, fmt.Errorf("workflow %q key %q: branch %q spawn %q: %w", r.wf.Name, r.wf.Key, b.name, name, err))
	}
	for {
		if err := r.check(); err != nil {
			return err
		}
		page, next, err := source.Page(r.ctx, meta.Cursor, cfg.batch)
		if err != nil {
			if r.ctx.Err() != nil {
				return r.halt(haltAbort, context.Cause(r.ctx))
			}
			// A failing source fails the run; the workflow policy retries it from the cursor.
			return fmt.Errorf("branch %q spawn %q: source: %w", b.name, name, err)
		}
		if len(page) == 0 {
			rec.State, rec.CompletedAt = storage.StepCompleted, r.eng.clock.Now()
			rec.Attempts = max(rec.Attempts, 1)
			rec.Meta = mustJSON(meta)
			r.queue(rec) // the cursor is at the end already; the seal rides on the next write
			return nil
		}
		children := make([]storage.NewWorkflow, 0, len(page))
		for i, it := range page {
			suffix := it.Key
			if suffix == "" {
				suffix = fmt.Sprint(meta.Read + int64(i))
			}
			c, err := fn(it.Value)
			if err != nil {
				return fail(fmt.Errorf("item %q: %w", suffix, err))
			}
			child, err := b.newChild(c, b.childKey(name, suffix))
			if err != nil {
				return fail(fmt.Errorf("item %q: %w", suffix, err))
			}
			children = append(children, child)
		}
		meta.Cursor, meta.Read, meta.Batches = next, meta.Read+int64(len(page)), meta.Batches+1
		rec.Attempts = max(rec.Attempts, 1)
		rec.Meta = mustJSON(meta)
		if len(page) < cfg.batch {
			// A short page is the last one: seal the spawn in the same transaction.
			rec.State, rec.CompletedAt = storage.StepCompleted, r.eng.clock.Now()
		}
		if _, err := b.spawn([]storage.Step{rec}, children); err != nil {
			return err
		}
		if rec.State == storage.StepCompleted {
			return nil
		}
	}
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("chronoforge: encode %T: %v", v, err)) // only SDK-owned types reach here
	}
	return data
}

// Item is one item of a Source: its value and, for keyed sources, its stable key.
type Item[T any] struct {
	Key   string
	Value T
}

// Source is what SpawnEach enumerates, page by page, from an opaque cursor that is stored with
// every batch. A keyed source gives every item a stable key (keyset paging of a table), so
// rows added or removed during dispatch shift nothing; a positional source leaves keys empty
// and must enumerate identically on resume.
type Source[T any] interface {
	// Page returns up to limit items after cursor (nil at the start) and the cursor after
	// them. An empty page means the source is exhausted.
	Page(ctx context.Context, cursor []byte, limit int) (items []Item[T], next []byte, err error)
}

// SliceSource enumerates a slice by position.
func SliceSource[T any](items []T) Source[T] { return sliceSource[T](items) }

type sliceSource[T any] []T

func (s sliceSource[T]) Page(_ context.Context, cursor []byte, limit int) ([]Item[T], []byte, error) {
	off, err := offsetOf(cursor)
	if err != nil {
		return nil, nil, err
	}
	end := min(off+limit, len(s))
	if off >= end {
		return nil, cursor, nil
	}
	page := make([]Item[T], 0, end-off)
	for _, v := range s[off:end] {
		page = append(page, Item[T]{Value: v})
	}
	return page, offsetCursor(end), nil
}

// SeqSource enumerates an iterator by position. Within one run it reads the iterator once;
// a run that resumes from a stored cursor skips that many items first, so the iterator must
// yield the same items in the same order every time.
func SeqSource[T any](seq iter.Seq[T]) Source[T] { return &seqSource[T]{seq: seq} }

type seqSource[T any] struct {
	seq  iter.Seq[T]
	next func() (T, bool)
	stop func()
	pos  int
}

func (s *seqSource[T]) close() {
	if s.stop != nil {
		s.stop()
		s.next, s.stop = nil, nil
	}
}

func (s *seqSource[T]) Page(ctx context.Context, cursor []byte, limit int) ([]Item[T], []byte, error) {
	off, err := offsetOf(cursor)
	if err != nil {
		return nil, nil, err
	}
	if s.next == nil || s.pos != off {
		s.close()
		s.next, s.stop = iter.Pull(s.seq)
		s.pos = 0
		for s.pos < off {
			if _, ok := s.next(); !ok {
				return nil, cursor, nil
			}
			s.pos++
		}
	}
	var page []Item[T]
	for len(page) < limit {
		v, ok := s.next()
		if !ok {
			s.close()
			break
		}
		s.pos++
		page = append(page, Item[T]{Value: v})
	}
	return page, offsetCursor(s.pos), ctx.Err()
}

// KeysetSource enumerates a keyed collection, typically a table read with
// "WHERE key > $after ORDER BY key LIMIT $limit". fetch receives the key of the last item
// of the previous page ("" at the start); key returns an item's stable key, which becomes part
// of the child's key (so it must be a valid, '$'-free key fragment). Keys must increase in
// byte order (in SQL, order with a binary collation such as COLLATE "C"); a page that breaks
// the order fails the run rather than skip or repeat items.
func KeysetSource[T any](fetch func(ctx context.Context, after string, limit int) ([]T, error), key func(T) string) Source[T] {
	return keysetSource[T]{fetch: fetch, key: key}
}

type keysetSource[T any] struct {
	fetch func(ctx context.Context, after string, limit int) ([]T, error)
	key   func(T) string
}

func (s keysetSource[T]) Page(ctx context.Context, cursor []byte, limit int) ([]Item[T], []byte, error) {
	rows, err := s.fetch(ctx, string(cursor), limit)
	if err != nil {
		return nil, nil, err
	}
	if len(rows) > limit {
		return nil, nil, fmt.Errorf("%w: keyset fetch returned %d rows for a limit of %d", ErrInvalid, len(rows), limit)
	}
	page := make([]Item[T], len(rows))
	last := string(cursor)
	for i, v := range rows {
		k := s.key(v)
		if k == "" || k <= last {
			return nil, nil, fmt.Errorf("%w: keyset keys must be non-empty and increasing; %q follows %q", ErrInvalid, k, last)
		}
		page[i], last = Item[T]{Key: k, Value: v}, k
	}
	return page, []byte(last), nil
}

func offsetOf(cursor []byte) (int, error) {
	if len(cursor) == 0 {
		return 0, nil
	}
	var n int
	if err := json.Unmarshal(cursor, &n); err != nil || n < 0 {
		return 0, fmt.Errorf("%w: positional cursor %q", ErrDecode, cursor)
	}
	return n, nil
}

func offsetCursor(n int) []byte { return []byte(fmt.Sprint(n)) }

// typeName names T for error messages.
func typeName[T any]() string { return reflect.TypeFor[T]().String() }
