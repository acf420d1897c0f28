package dispatch

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// BenchmarkEndToEnd measures workflows per second through one worker with 8 slots on the
// embedded backend: each op starts 1,000 one-step workflows and waits for all their results.
func BenchmarkEndToEnd(b *testing.B) {
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("fsync=%v", sync), func(b *testing.B) { benchEndToEnd(b, sync) })
	}
}

func benchEndToEnd(b *testing.B, fsync bool) {
	const perOp = 1000
	var opts []bolt.Option
	if !fsync {
		opts = append(opts, bolt.WithNoSync())
	}
	store, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	wf := sdk.New("bench.one", func(c *sdk.Context, in int) (int, error) {
		return sdk.Step(c, "double", func(context.Context) (int, error) { return 2 * in, nil })
	})
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(wf))
	if err != nil {
		b.Fatal(err)
	}
	w, err := New(eng, Concurrency(8))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	total := 0
	for b.Loop() {
		handles := make([]*sdk.Handle[int], perOp)
		for i := range handles {
			if handles[i], err = wf.Start(ctx, eng, fmt.Sprint("k", total+i), i); err != nil {
				b.Fatal(err)
			}
		}
		for _, h := range handles {
			if _, err := h.Result(ctx); err != nil {
				b.Fatal(err)
			}
		}
		total += perOp
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "workflows/s")
}
