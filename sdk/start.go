package sdk

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// StartOption configures Start and the items of StartMany: StartAt, StartAfter, Tags.
type StartOption interface{ applyStart(*startConfig) }

type startConfig struct {
	at    time.Time
	delay time.Duration
	tags  map[string]string
}

type startOption func(*startConfig)

func (f startOption) applyStart(c *startConfig) { f(c) }

// StartAfter makes a new workflow first runnable d after it is started (by the engine's
// clock). With StartAt as well, the later of the two wins.
func StartAfter(d time.Duration) StartOption {
	return startOption(func(c *startConfig) { c.delay = d })
}

// Tags stores small string metadata with a new workflow (at most 16 tags, keys up to 64
// bytes, values up to 256): Describe returns them and listings filter by them. Given more
// than once, the tags are merged. Tags are fixed when the workflow is created.
func Tags(tags map[string]string) StartOption {
	return startOption(func(c *startConfig) {
		if c.tags == nil {
			c.tags = map[string]string{}
		}
		maps.Copy(c.tags, tags)
	})
}

// newWorkflow builds the storage input of a start of def with key and in at now.
func newWorkflow[In any](e *Engine, name, key string, in In, now time.Time, opts []StartOption) (storage.NewWorkflow, error) {
	var cfg startConfig
	for _, o := range opts {
		o.applyStart(&cfg)
	}
	if err := validateUserKey(key); err != nil {
		return storage.NewWorkflow{}, fmt.Errorf("start workflow %q: %w", name, err)
	}
	if cfg.delay < 0 {
		return storage.NewWorkflow{}, fmt.Errorf("%w: start workflow %q key %q: StartAfter(%v) is negative", ErrInvalid, name, key, cfg.delay)
	}
	if err := storage.ValidateTags(cfg.tags); err != nil {
		return storage.NewWorkflow{}, fmt.Errorf("start workflow %q key %q: %w", name, key, err)
	}
	input, err := e.codec.Marshal(in)
	if err != nil {
		return storage.NewWorkflow{}, fmt.Errorf("%w: start workflow %q key %q: encode input %s: %w", ErrInvalid, name, key, reflect.TypeFor[In](), err)
	}
	runAt := now.Add(cfg.delay)
	if cfg.at.After(runAt) {
		runAt = cfg.at
	}
	return storage.NewWorkflow{Name: name, Key: key, Input: input, RunAt: runAt, Now: now, Tags: cfg.tags, Flow: e.flowOf(e.defs[name])}, nil
}

// Start creates the workflow with the given key and input, runnable at once (or as
// StartAt and StartAfter say), and returns a handle to it. Start is idempotent on (name,
// key): if the workflow exists, it returns a handle to that one and its stored input and
// options win. Bad keys, options and unencodable or oversized inputs return an error
// matching ErrInvalid or ErrTooLarge and write nothing.
func (w *Workflow[In, Out]) Start(ctx context.Context, e *Engine, key string, in In, opts ...StartOption) (*Handle[Out], error) {
	if err := e.checkRegistered(w.def); err != nil {
		return nil, err
	}
	nw, err := newWorkflow(e, w.def.name, key, in, e.clock.Now(), opts)
	if err != nil {
		return nil, err
	}
	ctx, span := e.tel.StartProducer(ctx, telemetry.OpStart, telemetry.Workflow{Name: nw.Name, Key: key})
	nw.TraceContext = e.tel.Inject(ctx, storage.MaxMeta)
	wf, created, err := e.store.CreateWorkflow(ctx, nw)
	telemetry.EndStart(span, telemetry.Workflow{ID: wf.ID}, created, err, "")
	if err != nil {
		return nil, fmt.Errorf("start workflow %q key %q: %w", nw.Name, key, err)
	}
	if created {
		e.notify()
	}
	return newHandle[Out](e, wf), nil
}

// Start is one workflow of a StartMany: its key, its input and its options.
type Start[In any] struct {
	Key   string
	Input In
	Opts  []StartOption
}

// DefaultStartBatch is how many workflows StartMany creates per storage call.
const DefaultStartBatch = 1000

// StartMany creates many workflows of this definition, DefaultStartBatch per storage call
// (one statement or transaction each), and returns their handles in the order of starts.
// Like Start it is idempotent on keys: a workflow that exists is left as it is and its handle
// returned. Every start is checked before anything is written: a bad key, option or input,
// or a key given twice, returns an error naming it and writes nothing. An error from storage
// leaves the batches before it written (run StartMany again: it is idempotent).
func (w *Workflow[In, Out]) StartMany(ctx context.Context, e *Engine, starts []Start[In]) ([]*Handle[Out], error) {
	if err := e.checkRegistered(w.def); err != nil {
		return nil, err
	}
	now := e.clock.Now()
	all := make([]storage.NewWorkflow, len(starts))
	seen := make(map[string]int, len(starts))
	for i, s := range starts {
		nw, err := newWorkflow(e, w.def.name, s.Key, s.Input, now, s.Opts)
		if err != nil {
			return nil, fmt.Errorf("start %d: %w", i, err)
		}
		if j, dup := seen[s.Key]; dup {
			return nil, fmt.Errorf("%w: start workflow %q: starts %d and %d both have key %q", ErrInvalid, w.def.name, j, i, s.Key)
		}
		seen[s.Key] = i
		all[i] = nw
	}
	handles := make([]*Handle[Out], 0, len(starts))
	for from := 0; from < len(all); from += DefaultStartBatch {
		batch := all[from:min(from+DefaultStartBatch, len(all))]
		bctx, span := e.tel.StartProducer(ctx, telemetry.OpStart, telemetry.Workflow{Name: w.def.name})
		tc := e.tel.Inject(bctx, storage.MaxMeta)
		for i := range batch {
			batch[i].TraceContext = tc
		}
		wfs, created, err := e.store.CreateWorkflows(bctx, batch)
		n := 0
		for _, c := range created {
			if c {
				n++
			}
		}
		telemetry.EndStart(span, telemetry.Workflow{}, n > 0, err, "")
		if err != nil {
			return nil, fmt.Errorf("start workflows %q %d..%d: %w", w.def.name, from, from+len(batch)-1, err)
		}
		for _, wf := range wfs {
			handles = append(handles, newHandle[Out](e, wf))
		}
		if n > 0 {
			e.notify()
		}
	}
	return handles, nil
}
