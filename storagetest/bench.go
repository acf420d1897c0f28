package storagetest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// BenchFactory returns a fresh, empty store for one benchmark and registers its cleanup.
type BenchFactory func(b *testing.B) storage.Storage

// Benchmark measures a backend the way fan-out uses it, so every backend reports the same
// figures: "SpawnDispatch" inserts 10,000 children per op in batches of 1,000 (children/s),
// and "FanOut/N" runs a parent that spawns N one-step children, merges them and sums their
// results, through one worker with 8 slots (children/s end to end, plus heap and resident
// memory after the run). "MergeDelay/N" measures how soon a parent resumes after its N
// children: see benchMergeDelay. Run it with -benchtime 1x for the large fan-outs.
func Benchmark(b *testing.B, factory BenchFactory) {
	b.Run("SpawnDispatch", func(b *testing.B) { benchSpawn(b, factory) })
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("FanOut/%d", n), func(b *testing.B) { benchFanOut(b, factory, n) })
	}
	for _, n := range []int{1, 10_000, 100_000} {
		b.Run(fmt.Sprintf("MergeDelay/%d", n), func(b *testing.B) { benchMergeDelay(b, factory, n) })
	}
}

func benchSpawn(b *testing.B, factory BenchFactory) {
	const perOp, batch = 10_000, 1_000
	store := factory(b)
	ctx := context.Background()
	now := time.Now()
	total := 0
	for b.Loop() {
		wf, _, err := store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "bench.parent", Key: fmt.Sprint("p", total), Now: now})
		if err != nil {
			b.Fatal(err)
		}
		claimed, err := store.Claim(ctx, storage.ClaimRequest{Owner: "bench", Limit: 1, Names: []string{"bench.parent"}, TTL: time.Hour, Now: now})
		if err != nil || len(claimed) != 1 || claimed[0].ID != wf.ID {
			b.Fatalf("claim parent: %v (%d claimed)", err, len(claimed))
		}
		for off := 0; off < perOp; off += batch {
			children := make([]storage.NewWorkflow, batch)
			for i := range children {
				children[i] = storage.NewWorkflow{Name: "bench.child", Key: fmt.Sprintf("p%d$b$c_%d", total, off+i), Input: []byte(strconv.Itoa(off + i))}
			}
			_, err := store.SpawnBatch(ctx, claimed[0].Lease(), storage.SpawnRequest{
				Branch:   "branch$b",
				Steps:    []storage.Step{{Name: "branch$b", State: storage.StepPending}, {Name: "spawn$b$c", State: storage.StepPending, Meta: []byte(strconv.Itoa(off + batch))}},
				Children: children,
				Now:      now,
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		total += perOp
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "children/s")
}

var benchChild = sdk.New("bench.square", func(c *sdk.Context, n int) (int, error) {
	return sdk.Step(c, "square", func(context.Context) (int, error) { return n * n % 1000, nil })
})

var benchParent = sdk.New("bench.fanout", func(c *sdk.Context, n int) (int, error) {
	err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
		seq := func(yield func(int) bool) {
			for i := range n {
				if !yield(i) {
					return
				}
			}
		}
		return sdk.SpawnEach(b, "c", sdk.SeqSource(seq), func(i int) (sdk.Child, error) { return sdk.NewChild(benchChild, i), nil })
	}, sdk.ProbeInterval(50*time.Millisecond, 2*time.Second))
	if err != nil {
		return 0, err
	}
	if err := sdk.Merge(c, "b"); err != nil {
		return 0, err
	}
	count := 0
	for _, err := range sdk.BranchResults[int](c, "b", 1000) {
		if err != nil {
			return 0, err
		}
		count++
	}
	return count, nil
})

func benchFanOut(b *testing.B, factory BenchFactory, n int) {
	store := factory(b)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(benchParent, benchChild))
	if err != nil {
		b.Fatal(err)
	}
	w, err := dispatch.New(eng, dispatch.Concurrency(8), dispatch.PollInterval(5*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	total := 0
	for b.Loop() {
		h, err := benchParent.Start(ctx, eng, fmt.Sprint("run", total), n)
		if err != nil {
			b.Fatal(err)
		}
		got, err := h.Result(ctx)
		if err != nil || got != n {
			b.Fatalf("fan-out of %d merged %d: %v", n, got, err)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "children/s")
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	b.ReportMetric(float64(mem.HeapInuse)/(1<<20), "heap-MiB")
	if rss := residentMiB(); rss > 0 {
		b.ReportMetric(rss, "rss-MiB")
	}
}

// residentMiB reads the process's resident set size from /proc (Linux); 0 elsewhere.
func residentMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}
