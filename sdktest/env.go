package sdktest

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// DefaultStart is the instant an Env's clock shows when Options.Start is zero: midnight UTC,
// 1 January 2030. A fixed instant keeps every recorded time identical from run to run.
var DefaultStart = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

const (
	// DefaultHorizon is how far past its start Drain may move an Env's clock when
	// Options.Horizon is zero.
	DefaultHorizon = 10 * 365 * 24 * time.Hour
	// DefaultMaxRuns is how many workflow runs one Drain, Advance or RunDue may make when
	// Options.MaxRuns is zero.
	DefaultMaxRuns = 10000
)

// leaseTTL is the lease of each run. Runs are synchronous and always end with their final
// write, so it only has to outlast one run, by the store's clock (real time by default).
const leaseTTL = time.Hour

// owner is the lease owner the Env claims workflows as.
const owner = "sdktest"

// TB is the part of testing.TB an Env uses: *testing.T, *testing.B and *testing.F satisfy it.
// An Env reports what went wrong with Fatalf, and closes the store it made with Cleanup. When
// t also has a Context method (testing.TB does), the Env's storage calls use that context.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Options configures NewWith. The zero value is what New uses.
type Options struct {
	// Store is the storage the engine runs over. Nil means a fresh memory.Store, closed when
	// the test ends; a store given here is left open (its owner closes it).
	Store storage.Storage
	// Start is the instant the fake clock starts at; zero means DefaultStart.
	Start time.Time
	// Horizon bounds virtual time: Drain fails the test rather than move the clock past
	// Start+Horizon. Zero means DefaultHorizon.
	Horizon time.Duration
	// MaxRuns bounds the runs of one Drain, Advance or RunDue call, which fails the test once
	// it is reached (workflows that never settle). Zero means DefaultMaxRuns.
	MaxRuns int
	// Codec is the engine's payload codec (sdk.WithCodec), which Step.Decode uses too. Nil
	// means sdk.JSONCodec.
	Codec sdk.Codec
	// Engine holds further engine options (a logger, retry policies, ...). The Env sets the
	// clock, the step hook and the workflows itself and overrides any given here; register
	// workflows through New's defs, not sdk.WithWorkflows. The default logger discards.
	Engine []sdk.Option
}

// Env is an engine, its store and its fake clock, driven by the test: workflows run only in
// Drain, Advance and RunDue, one at a time, in the test's goroutine. It starts no goroutine.
type Env struct {
	t       TB
	store   storage.Storage
	clock   *sdk.FakeClock
	eng     *sdk.Engine
	codec   sdk.Codec
	start   time.Time
	horizon time.Time
	maxRuns int

	mu        sync.Mutex // guards the step table, read by the hook from runs
	overrides map[stepKey]any
	failures  map[stepKey]failure
}

// New returns an Env running defs over a fresh in-memory store, with the clock at
// DefaultStart. The store is closed when the test ends. It fails the test if the engine
// refuses the definitions (an invalid or duplicate name, a bad policy).
func New(t TB, defs ...sdk.Definition) *Env {
	t.Helper()
	return NewWith(t, Options{}, defs...)
}

// NewWith is New configured by opts: another store (any storage.Storage), start time,
// bounds, codec or engine options.
func NewWith(t TB, opts Options, defs ...sdk.Definition) *Env {
	t.Helper()
	e := &Env{
		t:         t,
		store:     opts.Store,
		codec:     opts.Codec,
		start:     opts.Start,
		maxRuns:   opts.MaxRuns,
		overrides: map[stepKey]any{},
		failures:  map[stepKey]failure{},
	}
	if e.store == nil {
		st := memory.New()
		t.Cleanup(func() { _ = st.Close() })
		e.store = st
	}
	if e.codec == nil {
		e.codec = sdk.JSONCodec{}
	}
	if e.start.IsZero() {
		e.start = DefaultStart
	}
	e.start = e.start.UTC().Truncate(time.Microsecond) // what every store keeps
	horizon := opts.Horizon
	if horizon <= 0 {
		horizon = DefaultHorizon
	}
	e.horizon = e.start.Add(horizon)
	if e.maxRuns <= 0 {
		e.maxRuns = DefaultMaxRuns
	}
	e.clock = sdk.NewFakeClock(e.start)
	engOpts := []sdk.Option{sdk.WithLogger(slog.New(slog.DiscardHandler))}
	engOpts = append(engOpts, opts.Engine...)
	engOpts = append(engOpts, sdk.WithClock(e.clock), sdk.WithCodec(e.codec), sdk.WithStepHook(e.hook), sdk.WithWorkflows(defs...))
	eng, err := sdk.NewEngine(e.store, engOpts...)
	if err != nil {
		t.Fatalf("sdktest: new engine: %v", err)
	}
	e.eng = eng
	return e
}

// Engine returns the Env's engine, to start workflows with (wf.Start(ctx, env.Engine(), ...)).
func (e *Env) Engine() *sdk.Engine { return e.eng }

// Store returns the storage the engine runs over.
func (e *Env) Store() storage.Storage { return e.store }

// Clock returns the Env's fake clock. Moving it by hand runs nothing; prefer Advance, which
// moves it and runs what became due.
func (e *Env) Clock() *sdk.FakeClock { return e.clock }

// Now returns the fake clock's time: Options.Start (DefaultStart) until the Env first moves
// it.
func (e *Env) Now() time.Time { return e.clock.Now() }

// ctx is the context of the Env's calls: the test's when it has one (cancelled as the test
// ends), else the background.
func (e *Env) ctx() context.Context {
	if c, ok := e.t.(interface{ Context() context.Context }); ok {
		return c.Context()
	}
	return context.Background()
}
