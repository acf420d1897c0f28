package sdk

import (
	"context"
	"fmt"
	"reflect"

	"github.com/chronoforge/chronoforge/storage"
)

// Workflow is a typed workflow definition: a stable name and a function from In to Out.
// Build it with New and register it with the engine (WithWorkflows) before starting it.
type Workflow[In, Out any] struct {
	def *definition
}

// definition is the type-erased form of a workflow that the engine runs.
type definition struct {
	name  string
	retry RetryPolicy
	err   error
	// run decodes the input, calls the function and encodes the output.
	run func(c *Context, input []byte) ([]byte, error)
}

// Definition is anything WithWorkflows accepts: a *Workflow of any type.
type Definition interface {
	// Name returns the workflow's registered name.
	Name() string
	definition() *definition
}

// WorkflowOption configures a workflow definition.
type WorkflowOption interface{ applyWorkflow(*definition) }

// New defines a workflow under an explicit, stable name. An invalid name or option is
// reported when the workflow is registered (NewEngine), never by a panic.
func New[In, Out any](name string, fn func(ctx *Context, in In) (Out, error), opts ...WorkflowOption) *Workflow[In, Out] {
	d := &definition{name: name}
	if err := validateWorkflowName(name); err != nil {
		d.err = err
	} else if fn == nil {
		d.err = fmt.Errorf("%w: workflow %q has a nil function", ErrInvalid, name)
	}
	for _, o := range opts {
		o.applyWorkflow(d)
	}
	if d.err == nil && d.retry != nil {
		if err := d.retry.validate(); err != nil {
			d.err = fmt.Errorf("workflow %q: %w", name, err)
		}
	}
	d.run = func(c *Context, input []byte) ([]byte, error) {
		var in In
		if err := c.run.eng.codec.Unmarshal(input, &in); err != nil {
			return nil, c.run.halt(haltFail, decodeError(c.run, "$input", reflect.TypeFor[In](), err))
		}
		out, err := fn(c, in)
		if err != nil {
			return nil, err
		}
		data, err := c.run.eng.codec.Marshal(out)
		if err != nil {
			return nil, Permanent(fmt.Errorf("workflow %q: encode output %s: %w", name, reflect.TypeFor[Out](), err))
		}
		return data, nil
	}
	return &Workflow[In, Out]{def: d}
}

func validateWorkflowName(name string) error {
	return storage.ValidateName(name)
}

// Name returns the workflow's registered name.
func (w *Workflow[In, Out]) Name() string { return w.def.name }

func (w *Workflow[In, Out]) definition() *definition { return w.def }

// Start creates the workflow with the given key and input, runnable at once, and returns a
// handle to it. Start is idempotent on (name, key): if the workflow exists, it returns a
// handle to that one and its stored input wins. Bad keys and unencodable or oversized
// inputs return an error and write nothing.
func (w *Workflow[In, Out]) Start(ctx context.Context, e *Engine, key string, in In) (*Handle[Out], error) {
	if err := e.checkRegistered(w.def); err != nil {
		return nil, err
	}
	if err := validateUserKey(key); err != nil {
		return nil, fmt.Errorf("start workflow %q: %w", w.def.name, err)
	}
	input, err := e.codec.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("start workflow %q key %q: encode input %s: %w", w.def.name, key, reflect.TypeFor[In](), err)
	}
	wf, err := e.create(ctx, w.def.name, key, input)
	if err != nil {
		return nil, err
	}
	return &Handle[Out]{eng: e, id: wf.ID, name: wf.Name, key: wf.Key}, nil
}

// Lookup returns a handle to the existing workflow with this key, or an error wrapping
// ErrNotFound.
func (w *Workflow[In, Out]) Lookup(ctx context.Context, e *Engine, key string) (*Handle[Out], error) {
	wf, err := e.store.FindWorkflow(ctx, w.def.name, key)
	if err != nil {
		return nil, fmt.Errorf("lookup workflow %q key %q: %w", w.def.name, key, err)
	}
	return &Handle[Out]{eng: e, id: wf.ID, name: wf.Name, key: wf.Key}, nil
}
