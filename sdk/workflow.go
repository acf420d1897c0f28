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
	// steps are the step options given at definition (WithStepDefaults under "", WithStep
	// under the step's name), applied before those of the call.
	steps map[string][]StepOption
	// flowKey is the key of the flow that governs the workflow (WithLimits: its name;
	// InFlowGroup: the group), empty for none; limits are WithLimits' defaults.
	flowKey string
	limits  *Limits
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
	for step, opts := range d.steps {
		if d.err != nil {
			break
		}
		var cfg stepConfig
		for _, o := range opts {
			o.applyStep(&cfg)
		}
		if err := cfg.validate(); err != nil {
			what := "WithStepDefaults"
			if step != "" {
				what = fmt.Sprintf("WithStep(%q)", step)
			}
			d.err = fmt.Errorf("workflow %q: %s: %w", name, what, err)
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

// WithStepDefaults sets options of every step of the workflow (under those given for one
// step by WithStep and at the Step call), checked when the workflow is registered.
func WithStepDefaults(opts ...StepOption) WorkflowOption {
	return workflowOption(func(d *definition) { d.addSteps("", opts) })
}

// WithStep sets options of the workflow's step named name (under those given at the Step
// call), checked when the workflow is registered: a bad policy or timeout fails NewEngine,
// not the workflow's first run.
func WithStep(name string, opts ...StepOption) WorkflowOption {
	return workflowOption(func(d *definition) {
		if err := validateUserName("step", name); err != nil && d.err == nil {
			d.err = fmt.Errorf("workflow %q: WithStep: %w", d.name, err)
		}
		d.addSteps(name, opts)
	})
}

type workflowOption func(*definition)

func (f workflowOption) applyWorkflow(d *definition) { f(d) }

func (d *definition) addSteps(name string, opts []StepOption) {
	if d.steps == nil {
		d.steps = map[string][]StepOption{}
	}
	d.steps[name] = append(d.steps[name], opts...)
}

func validateWorkflowName(name string) error {
	return storage.ValidateName(name)
}

// Name returns the workflow's registered name.
func (w *Workflow[In, Out]) Name() string { return w.def.name }

func (w *Workflow[In, Out]) definition() *definition { return w.def }

// LookupID returns a handle to the existing workflow with this id, or an error matching
// ErrNotFound (also when the id names a workflow of another name).
func (w *Workflow[In, Out]) LookupID(ctx context.Context, e *Engine, id int64) (*Handle[Out], error) {
	wf, err := e.store.GetWorkflow(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("lookup workflow %q id %d: %w", w.def.name, id, err)
	}
	if wf.Name != w.def.name {
		return nil, fmt.Errorf("lookup workflow %q id %d: %w: it is a %q workflow", w.def.name, id, ErrNotFound, wf.Name)
	}
	return newHandle[Out](e, wf), nil
}

// Lookup returns a handle to the existing workflow with this name and key, or an error
// wrapping ErrNotFound.
func (w *Workflow[In, Out]) Lookup(ctx context.Context, e *Engine, key string) (*Handle[Out], error) {
	wf, err := e.store.FindWorkflow(ctx, w.def.name, key)
	if err != nil {
		return nil, fmt.Errorf("lookup workflow %q key %q: %w", w.def.name, key, err)
	}
	return newHandle[Out](e, wf), nil
}
