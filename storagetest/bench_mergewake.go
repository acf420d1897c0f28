package storagetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// benchMergeParent spawns n one-step children and merges them with the default probe
// interval; it does nothing after the merge, so its completion marks its resumption.
var benchMergeParent = sdk.New("bench.merge", func(c *sdk.Context, n int) (int, error) {
	err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
		seq := func(yield func(int) bool) {
			for i := range n {
				if !yield(i) {
					return
				}
			}
		}
		return sdk.SpawnEach(b, "c", sdk.SeqSource(seq), func(i int) (sdk.Child, error) { return sdk.NewChild(benchChild, i), nil })
	})
	if err != nil {
		return 0, err
	}
	return n, sdk.Merge(c, "b")
})

// benchMergeDelay runs a parent of n children per op through one worker with default options
// on real time, and reports the delay from the last child's FinishedAt to the parent's
// (both written from the engine's clock): the mean over the ops ("delay-ms") and the largest
// ("max-delay-ms"). Without wake-ups it would be the merge probe's backoff, up to 30 s.
func benchMergeDelay(b *testing.B, factory BenchFactory, n int) {
	store := factory(b)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(benchMergeParent, benchChild))
	if err != nil {
		b.Fatal(err)
	}
	w, err := dispatch.New(eng)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	var total, worst time.Duration
	ops := 0
	for b.Loop() {
		h, err := benchMergeParent.Start(ctx, eng, fmt.Sprint("run", ops), n)
		if err != nil {
			b.Fatal(err)
		}
		if got, err := h.Result(ctx); err != nil || got != n {
			b.Fatalf("merge of %d children: %d, %v", n, got, err)
		}
		b.StopTimer()
		d, err := mergeDelay(ctx, store, h.ID())
		if err != nil {
			b.Fatal(err)
		}
		total += d
		worst = max(worst, d)
		ops++
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(ops), "delay-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-delay-ms")
	b.ReportMetric(float64(w.Stats().MergeWakes)/float64(ops), "wakes/op")
}

// mergeDelay is the time from the last child of the parent's branch "b" finishing to the
// parent finishing.
func mergeDelay(ctx context.Context, store storage.Storage, parentID int64) (time.Duration, error) {
	parent, steps, err := store.Load(ctx, parentID)
	if err != nil {
		return 0, err
	}
	var branch int64
	for _, s := range steps {
		if s.Name == "branch$b" {
			branch = s.ID
		}
	}
	var last time.Time
	for after := int64(0); ; {
		page, err := store.ListWorkflows(ctx, storage.ListFilter{ParentStepID: branch, AfterID: after, Limit: 1000})
		if err != nil {
			return 0, err
		}
		for _, c := range page {
			if c.FinishedAt.After(last) {
				last = c.FinishedAt
			}
			after = c.ID
		}
		if len(page) < 1000 {
			break
		}
	}
	if branch == 0 || last.IsZero() {
		return 0, fmt.Errorf("parent %d: no finished children of branch b", parentID)
	}
	return parent.FinishedAt.Sub(last), nil
}
