package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"strconv"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
)

// Record names of branches: "branch$<name>" seals the branch, "spawn$<branch>$<name>" tracks
// one Spawn or SpawnEach (its cursor), "merge$<branch>" records a completed join.
func branchRecord(name string) string        { return storage.BranchStepPrefix + name }
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

// BranchOption configures a branch (Branch).
type BranchOption interface{ applyBranch(*branchConfig) }

type branchOption func(*branchConfig)

func (f branchOption) applyBranch(c *branchConfig) { f(c) }

type branchConfig struct {
	autoMerge bool
	merge     mergeConfig
}

// AutoMerge joins the branch when the workflow function returns: the steps after the branch
// run while its children run, and the workflow completes only once they are done. Call Merge
// right after Branch instead to block there.
func AutoMerge() BranchOption {
	return branchOption(func(c *branchConfig) { c.autoMerge = true })
}

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
		o.applyBranch(&cfg)
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
	r.live() // the body runs: the branch was not sealed by an earlier run
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
		if _, err := b.spawn("", nil, nil); err != nil {
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

// spawn writes one batch of the spawn named name: the given step records and children, with
// the branch record and whatever the run has queued, in one fenced transaction. A batch the
// store refuses for its content (a child key another workflow holds, bad input) fails the
// workflow: running it again would meet the same refusal. Other errors abort the run.
func (b *BranchScope) spawn(name string, steps []storage.Step, children []storage.NewWorkflow) (int, error) {
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
	sctx, obs := r.startSpawn(b.name, name, steps, children) // telemetry: the batch's span; each child stores its context
	wctx, cancel := r.eng.detached(sctx)
	defer cancel()
	res, err := r.eng.store.SpawnBatch(wctx, r.lease, storage.SpawnRequest{
		Branch: b.record, Steps: all, Children: children, Now: r.eng.clock.Now(),
	})
	obs.End(sctx, res.Inserted, err)
	if err != nil {
		what := fmt.Sprintf("branch %q", b.name)
		if name != "" {
			what += fmt.Sprintf(" spawn %q", name)
		}
		kind := haltAbort
		if errors.Is(err, storage.ErrConflict) || errors.Is(err, storage.ErrInvalid) || errors.Is(err, storage.ErrTooLarge) {
			kind = haltFail
		}
		return 0, r.halt(kind, fmt.Errorf("workflow %q key %q: %s: %w", r.wf.Name, r.wf.Key, what, err))
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

// Child keys. The parent's key is followed by one level of components separated by '$':
//
//	Spawn      <parent key>$<branch>$<name>
//	SpawnEach  <parent key>$<branch>$<name>$$<item>
//
// Branch and spawn names are non-empty and free of '$' (validateUserName), item keys too
// (validateItemKey), and so is a root's key (validateUserKey). So a key splits on '$' into
// the root key and then, level by level, either two non-empty components (a Spawn) or two
// non-empty components, an empty one and the item (a SpawnEach): the empty component is
// the only thing that marks an item, and decoding from the left is unique at any depth.
// Two different spawns, or two items, never derive one key, whatever their names.

// spawnKey is the key of the child of Spawn(b, name, ...).
func (b *BranchScope) spawnKey(name string) string {
	return b.r.wf.Key + "$" + b.name + "$" + name
}

// eachPrefix is what the key of a SpawnEach child has before its item:
// "<parent key>$<branch>$<name>$$".
func (b *BranchScope) eachPrefix(name string) string {
	return b.spawnKey(name) + "$$"
}

// validateItemKey checks the key of a keyed source's item: a valid storage key without '$',
// which would make child keys ambiguous.
func validateItemKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: item key is empty", ErrInvalid)
	}
	if strings.ContainsRune(key, '$') {
		return fmt.Errorf("%w: item key %q contains '$', which is reserved", ErrInvalid, key)
	}
	if err := storage.ValidateKey(key); err != nil {
		return fmt.Errorf("item key %q: %w", key, err)
	}
	return nil
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
	return storage.NewWorkflow{Name: c.def.name, Key: key, Input: input, RunAt: now, Now: now, Flow: r.eng.flowOf(c.def)}, nil
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
// idempotent: on replay, or if this branch's child exists, nothing more is created. If that
// key is held by a workflow of the same name that is not this branch's child (the child of
// another parent, such as a parent of another name with the same key, or a root created in
// the store with that key), nothing is written and the workflow fails with an error
// matching ErrConflict that names the holder and the branch.
func Spawn[In, Out any](b *BranchScope, name string, wf *Workflow[In, Out], in In) error {
	rec, done, err := b.begin("spawn", name)
	if err != nil || done {
		return err
	}
	child, err := b.newChild(NewChild(wf, in), b.spawnKey(name))
	if err != nil {
		return b.r.halt(haltFail, fmt.Errorf("workflow %q: branch %q spawn %q: %w", b.r.wf.Name, b.name, name, err))
	}
	rec.State, rec.Attempts, rec.CompletedAt = storage.StepCompleted, 1, b.r.eng.clock.Now()
	_, err = b.spawn(name, []storage.Step{rec}, []storage.NewWorkflow{child})
	return err
}

// SpawnOption configures SpawnEach.
type SpawnOption interface{ applySpawn(*spawnConfig) }

type spawnOption func(*spawnConfig)

func (f spawnOption) applySpawn(c *spawnConfig) { f(c) }

type spawnConfig struct{ batch int }

// BatchSize sets how many children SpawnEach writes per transaction (default
// DefaultSpawnBatch, at most storage.MaxSpawnBatch).
func BatchSize(n int) SpawnOption {
	return spawnOption(func(c *spawnConfig) { c.batch = n })
}

// spawnMeta is the cursor of a SpawnEach, stored in its record after every batch.
type spawnMeta struct {
	Cursor  []byte `json:"cursor,omitempty"`
	Read    int64  `json:"read"`
	Batches int64  `json:"batches"`
	// Keys is how the source's items are keyed, fixed by its first page: keysItem or
	// keysIndex (empty in cursors stored before it was recorded).
	Keys string `json:"keys,omitempty"`
}

// How a SpawnEach keys its children: by the items' own keys, or by their positions.
const (
	keysItem  = "item"
	keysIndex = "index"
)

// SpawnEach creates one child per item of source, in batches. fn maps an item to the child
// workflow and input (NewChild), so children may be of mixed types. Each batch is one
// storage transaction that inserts the children (idempotently, by key), makes them runnable
// and stores the source's cursor, so a crash anywhere leaves exactly one child per item and
// the next run resumes at the next batch.
//
// Children are keyed "<parent key>$<branch>$<name>$$<item>": the item's key for keyed
// sources, its index (from 0) for positional ones. The empty component between "$$" marks
// the item, so no two spawns or items share a key (see Spawn for the keys of single
// children). A source gives keys to all its items or to none. An item key must be non-empty,
// free of '$' and control characters, valid UTF-8, distinct within its page, and short
// enough for the whole child key to fit storage.MaxKeyLen (512 bytes); a bad one fails the
// workflow at once with an error naming the item key and the spawn, and nothing of that
// batch is written. A source error marked with Permanent (as KeysetSource marks keys out of
// order) fails the workflow at once too; other source errors fail the run, and the workflow
// policy retries it from the stored cursor. A child key another workflow holds fails the
// workflow as for Spawn.
func SpawnEach[T any](b *BranchScope, name string, source Source[T], fn func(item T) (Child, error), opts ...SpawnOption) error {
	r := b.r
	rec, done, err := b.begin("spawn", name)
	if err != nil || done {
		return err
	}
	cfg := spawnConfig{batch: DefaultSpawnBatch}
	for _, o := range opts {
		o.applySpawn(&cfg)
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
			if IsPermanent(err) {
				return fail(fmt.Errorf("source: %w", err))
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
		keys, err := pageKeys(page, meta.Read, &meta.Keys)
		if err != nil {
			return fail(err)
		}
		prefix := b.eachPrefix(name)
		children := make([]storage.NewWorkflow, 0, len(page))
		for i, it := range page {
			key := prefix + keys[i]
			if len(key) > storage.MaxKeyLen {
				return fail(fmt.Errorf("%w: item key %.32q... makes child key %.32q... %d bytes long, more than %d", ErrInvalid, keys[i], key, len(key), storage.MaxKeyLen))
			}
			c, err := fn(it.Value)
			if err != nil {
				return fail(fmt.Errorf("item %q: %w", keys[i], err))
			}
			child, err := b.newChild(c, key)
			if err != nil {
				return fail(fmt.Errorf("item %q: %w", keys[i], err))
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
		if _, err := b.spawn(name, []storage.Step{rec}, children); err != nil {
			return err
		}
		if rec.State == storage.StepCompleted {
			return nil
		}
	}
}

// pageKeys returns the item part of each child key of a page: the items' keys, checked
// (validateItemKey, no repeat within the page), or their positions from read on. A page must
// be keyed all or nothing, the same way as the pages before it (*kind, set by the first).
func pageKeys[T any](page []Item[T], read int64, kind *string) ([]string, error) {
	keyed := page[0].Key != ""
	want := keysIndex
	if keyed {
		want = keysItem
	}
	if *kind == "" {
		*kind = want
	}
	if *kind != want {
		return nil, fmt.Errorf("%w: source gave items keyed by %s before and now by %s (item %q at position %d); a source keys all its items or none", ErrInvalid, *kind, want, page[0].Key, read)
	}
	keys := make([]string, len(page))
	seen := make(map[string]struct{}, len(page))
	for i, it := range page {
		if (it.Key != "") != keyed {
			return nil, fmt.Errorf("%w: source mixes keyed and unkeyed items in one page (item %q at position %d, item %q at position %d)", ErrInvalid, page[0].Key, read, it.Key, read+int64(i))
		}
		if !keyed {
			keys[i] = strconv.FormatInt(read+int64(i), 10)
			continue
		}
		if err := validateItemKey(it.Key); err != nil {
			return nil, err
		}
		if _, dup := seen[it.Key]; dup {
			return nil, fmt.Errorf("%w: item key %q given twice in one page", ErrInvalid, it.Key)
		}
		seen[it.Key] = struct{}{}
		keys[i] = it.Key
	}
	return keys, nil
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
	// Key identifies the item in its child's key ("<parent key>$<branch>$<name>$$<Key>").
	// It is empty for positional sources (the index is used), and for keyed sources
	// non-empty, without '$' or control characters, valid UTF-8, and never given to two
	// items of one source (see SpawnEach).
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
// of the child's key "<parent key>$<branch>$<name>$$<item key>", so it must be a valid item
// key (non-empty, no '$', no control characters; see SpawnEach). Keys must strictly increase
// in byte order, across pages too (in SQL, order with a binary collation such as
// COLLATE "C"): a page that returns a key out of order or repeated, or more rows than asked
// for, fails the workflow at once with an error naming both keys, rather than skip or repeat
// items. (Retrying would fetch the same page again.)
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
		return nil, nil, Permanent(fmt.Errorf("%w: keyset fetch returned %d rows for a limit of %d", ErrInvalid, len(rows), limit))
	}
	page := make([]Item[T], len(rows))
	last := string(cursor)
	for i, v := range rows {
		k := s.key(v)
		if k == "" {
			return nil, nil, Permanent(fmt.Errorf("%w: keyset key of row %d of the page after %q is empty", ErrInvalid, i, last))
		}
		if k <= last {
			what := "out of order"
			if k == last {
				what = "repeated"
			}
			return nil, nil, Permanent(fmt.Errorf("%w: keyset keys must strictly increase in byte order, but %q follows %q (%s, row %d of the page after cursor %q)", ErrInvalid, k, last, what, i, string(cursor)))
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
