package storagetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// ErrInjected is the failure a FailingStore injects.
var ErrInjected = errors.New("storagetest: injected failure")

// FailingStore fails a share of the calls a run makes (Claim, Load, SaveSteps, FinishRun,
// FinishRuns, SpawnBatch, CountChildren): half of the failures happen before the call reaches
// the store, half after it committed (a lost reply). Workers must recover from both without
// losing or duplicating anything. Other methods pass through; optional interfaces of the
// inner store (a Notifier, say) are hidden.
type FailingStore struct {
	storage.Storage
	mu       sync.Mutex
	rng      *rand.Rand
	rate     float64
	injected int
}

// NewFailingStore wraps s, failing each call with probability rate (0..1), drawn from a
// generator seeded with seed.
func NewFailingStore(s storage.Storage, rate float64, seed uint64) *FailingStore {
	return &FailingStore{Storage: s, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), rate: rate}
}

// Injected returns how many failures the store has injected so far.
func (c *FailingStore) Injected() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.injected
}

func (c *FailingStore) roll() (fail, after bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fail = c.rng.Float64() < c.rate
	if fail {
		c.injected++
	}
	return fail, c.rng.IntN(2) == 0
}

func chaos[T any](c *FailingStore, call func() (T, error)) (T, error) {
	fail, after := c.roll()
	if !fail {
		return call()
	}
	if after {
		v, err := call()
		if err != nil {
			return v, err
		}
	}
	var zero T
	return zero, ErrInjected
}

func (c *FailingStore) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	return chaos(c, func() ([]storage.Workflow, error) { return c.Storage.Claim(ctx, r) })
}

func (c *FailingStore) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	type loaded struct {
		w storage.Workflow
		s []storage.Step
	}
	v, err := chaos(c, func() (loaded, error) { w, s, err := c.Storage.Load(ctx, id); return loaded{w, s}, err })
	return v.w, v.s, err
}

func (c *FailingStore) SaveSteps(ctx context.Context, l storage.Lease, cm storage.Commit) error {
	_, err := chaos(c, func() (struct{}, error) { return struct{}{}, c.Storage.SaveSteps(ctx, l, cm) })
	return err
}

func (c *FailingStore) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	_, err := chaos(c, func() (struct{}, error) { return struct{}{}, c.Storage.FinishRun(ctx, l, f) })
	return err
}

// FinishRuns makes the failing store a group finisher, so the engine groups final writes over
// it (the inner store's FinishRuns, or its FinishRun per run), and fails whole groups.
func (c *FailingStore) FinishRuns(ctx context.Context, ends []storage.RunEnd) ([]error, error) {
	return chaos(c, func() ([]error, error) { return storage.FinishAll(ctx, c.Storage, ends) })
}

func (c *FailingStore) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	return chaos(c, func() (storage.SpawnResult, error) { return c.Storage.SpawnBatch(ctx, l, r) })
}

func (c *FailingStore) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	return chaos(c, func() (int, error) { return c.Storage.CountChildren(ctx, q) })
}

// testE2EChaos runs fan-outs and multi-step workflows while a tenth of the store's calls fail,
// before or after committing. Every workflow must still complete with the right result, every
// branch must end with exactly one child per item, and no step result may be lost.
func testE2EChaos(t *testing.T, factory Factory) {
	const parents, children, plain = 4, 40, 30
	var mu sync.Mutex
	executed := map[string]int{}
	mark := func(k string) {
		mu.Lock()
		executed[k]++
		mu.Unlock()
	}
	three := sdk.New("e2e.chaos.three", func(c *sdk.Context, in int) (int, error) {
		sum := 0
		for i := range 3 {
			v, err := sdk.Step(c, fmt.Sprint("s", i), func(context.Context) (int, error) { mark(fmt.Sprint(c.Key(), "/s", i)); return in + i, nil })
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	})
	fan := sdk.New("e2e.chaos.fan", func(c *sdk.Context, n int) (int, error) {
		items := make([]int, n)
		for i := range items {
			items[i] = i
		}
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "i", sdk.SliceSource(items), func(i int) (sdk.Child, error) { return sdk.NewChild(three, i), nil }, sdk.BatchSize(7))
		}, sdk.ProbeInterval(2*time.Millisecond, 20*time.Millisecond)); err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return 0, err
		}
		total := 0
		for res, err := range sdk.BranchResults[int](c, "b", 16) {
			if err != nil {
				return 0, err
			}
			total += res.Output
		}
		return total, nil
	})
	inner := factory(t)
	store := NewFailingStore(inner, 0.1, 1)
	retry := sdk.Policy{Name: "chaos", MaxAttempts: 1000, Base: time.Millisecond, Cap: 5 * time.Millisecond}
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(three, fan), sdk.WithStepRetry(retry), sdk.WithWorkflowRetry(retry))
	require.NoError(t, err)
	startWorkers(t, eng, 2, dispatch.Concurrency(4), dispatch.LeaseTTL(200*time.Millisecond),
		dispatch.HeartbeatEvery(50*time.Millisecond), dispatch.PollInterval(time.Millisecond, 10*time.Millisecond))
	ctx := resultCtx(t)

	start := func(fn func() error) {
		for {
			err := fn()
			if err == nil || !errors.Is(err, ErrInjected) {
				require.NoError(t, err)
				return
			}
		}
	}
	var fans []*sdk.Handle[int]
	for i := range parents {
		start(func() error {
			h, err := fan.Start(ctx, eng, fmt.Sprint("f", i), children)
			if err == nil {
				fans = append(fans, h)
			}
			return err
		})
	}
	var threes []*sdk.Handle[int]
	for i := range plain {
		start(func() error {
			h, err := three.Start(ctx, eng, fmt.Sprint("t", i), i)
			if err == nil {
				threes = append(threes, h)
			}
			return err
		})
	}
	wantFan := 0
	for i := range children {
		wantFan += 3*i + 3
	}
	for _, h := range fans {
		got, err := h.Result(ctx)
		require.NoError(t, err, h.Key())
		require.Equal(t, wantFan, got, "%s: every child's result merged exactly once", h.Key())
		kids, err := inner.ListWorkflows(ctx, storage.ListFilter{Name: "e2e.chaos.three", Limit: 1000})
		require.NoError(t, err)
		n := 0
		for _, k := range kids {
			if len(k.Key) > len(h.Key()) && k.Key[:len(h.Key())+1] == h.Key()+"$" {
				n++
			}
		}
		require.Equal(t, children, n, "%s: exactly one child per item", h.Key())
	}
	for i, h := range threes {
		got, err := h.Result(ctx)
		require.NoError(t, err, h.Key())
		require.Equal(t, 3*i+3, got)
		mu.Lock()
		for s := range 3 {
			require.GreaterOrEqual(t, executed[fmt.Sprint(h.Key(), "/s", s)], 1, "%s step %d ran", h.Key(), s)
		}
		mu.Unlock()
	}
}
