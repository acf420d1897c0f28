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

// errInjected is the failure the chaos store injects.
var errInjected = errors.New("storagetest: injected failure")

// chaosStore fails a share of the writes a run makes: half of the failures happen before the
// write reaches the store, half after it committed (a lost reply). Workers must recover from
// both without losing or duplicating anything.
type chaosStore struct {
	storage.Storage
	mu   sync.Mutex
	rng  *rand.Rand
	rate float64
}

func (c *chaosStore) roll() (fail, after bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.Float64() < c.rate, c.rng.IntN(2) == 0
}

func chaos[T any](c *chaosStore, call func() (T, error)) (T, error) {
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
	return zero, errInjected
}

func (c *chaosStore) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	return chaos(c, func() ([]storage.Workflow, error) { return c.Storage.Claim(ctx, r) })
}

func (c *chaosStore) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	type loaded struct {
		w storage.Workflow
		s []storage.Step
	}
	v, err := chaos(c, func() (loaded, error) { w, s, err := c.Storage.Load(ctx, id); return loaded{w, s}, err })
	return v.w, v.s, err
}

func (c *chaosStore) SaveSteps(ctx context.Context, l storage.Lease, cm storage.Commit) error {
	_, err := chaos(c, func() (struct{}, error) { return struct{}{}, c.Storage.SaveSteps(ctx, l, cm) })
	return err
}

func (c *chaosStore) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	_, err := chaos(c, func() (struct{}, error) { return struct{}{}, c.Storage.FinishRun(ctx, l, f) })
	return err
}

// FinishRuns makes the chaos store a group finisher, so the engine groups final writes over
// it (the inner store's FinishRuns, or its FinishRun per run), and fails whole groups.
func (c *chaosStore) FinishRuns(ctx context.Context, ends []storage.RunEnd) ([]error, error) {
	return chaos(c, func() ([]error, error) { return storage.FinishAll(ctx, c.Storage, ends) })
}

func (c *chaosStore) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	return chaos(c, func() (storage.SpawnResult, error) { return c.Storage.SpawnBatch(ctx, l, r) })
}

func (c *chaosStore) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
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
	store := &chaosStore{Storage: inner, rng: rand.New(rand.NewPCG(1, 2)), rate: 0.1}
	retry := sdk.Policy{Name: "chaos", MaxAttempts: 1000, Base: time.Millisecond, Cap: 5 * time.Millisecond}
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(three, fan), sdk.WithStepRetry(retry), sdk.WithWorkflowRetry(retry))
	require.NoError(t, err)
	startWorkers(t, eng, 2, dispatch.Concurrency(4), dispatch.LeaseTTL(200*time.Millisecond),
		dispatch.HeartbeatEvery(50*time.Millisecond), dispatch.PollInterval(time.Millisecond, 10*time.Millisecond))
	ctx := resultCtx(t)

	start := func(fn func() error) {
		for {
			err := fn()
			if err == nil || !errors.Is(err, errInjected) {
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
