// Command fanout spawns N child workflows from one parent in a branch, merges them back and
// reports how fast children were dispatched and completed end to end.
//
//	go run ./examples/fanout                      # 10,000 children on a temporary bbolt file
//	go run ./examples/fanout -n 100000 -slots 8
//
// The parent is not replayed while its children run: a worker probes the merge with a capped
// count and replays the parent once they are done.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage/postgres"
)

// Square is the child: one durable step.
var Square = sdk.New("fanout.square", func(c *sdk.Context, n int) (int, error) {
	return sdk.Step(c, "square", func(context.Context) (int, error) {
		squared.Add(1)
		return n * n, nil
	})
})

// squared counts Square's step executions in this process, for the progress lines.
var squared atomic.Int64

// dispatched records when the parent's branch was sealed (all children created), for the report.
var dispatched atomic.Int64

// Parent spawns one Square child per number in 1..n and sums their results after the merge.
var Parent = sdk.New("fanout.parent", func(c *sdk.Context, in Job) (Report, error) {
	err := sdk.Branch(c, "squares", func(b *sdk.BranchScope) error {
		numbers := func(yield func(int) bool) {
			for i := 1; i <= in.N; i++ {
				if !yield(i) {
					return
				}
			}
		}
		return sdk.SpawnEach(b, "n", sdk.SeqSource(numbers), func(i int) (sdk.Child, error) {
			return sdk.NewChild(Square, i), nil
		}, sdk.BatchSize(in.Batch))
	}, sdk.ProbeInterval(100*time.Millisecond, 5*time.Second))
	if err != nil {
		return Report{}, err
	}
	dispatched.CompareAndSwap(0, time.Now().UnixNano())
	if err := sdk.Merge(c, "squares"); err != nil {
		return Report{}, err
	}
	var r Report
	for res, err := range sdk.BranchResults[int](c, "squares", 1000) {
		if err != nil {
			return Report{}, err
		}
		r.Children++
		r.Sum += int64(res.Output)
	}
	return r, nil
})

// Job is the parent's input.
type Job struct {
	N     int `json:"n"`
	Batch int `json:"batch"`
}

// Report is the parent's output.
type Report struct {
	Children int   `json:"children"`
	Sum      int64 `json:"sum"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("fanout", flag.ExitOnError)
	n := flags.Int("n", 10000, "number of children")
	batch := flags.Int("batch", 1000, "children per spawn transaction")
	slots := flags.Int("slots", 8, "workflows run at once by the worker")
	window := flags.Duration("claim-window", dispatch.DefaultClaimWindow, "how long the worker gathers free slots before a claim")
	backend := flags.String("backend", "bolt", "storage backend: "+backendNames())
	dsn := flags.String("dsn", "", "database: a bbolt file (default: temporary), or a Postgres/MySQL DSN")
	cpuProfile := flags.String("cpuprofile", "", "write a CPU profile of the run to this file")
	group := flags.Bool("group-commit", true, "write the final writes of runs that end together in one call (false: sdk.WithoutGroupCommit)")
	prefetch := flags.Int("prefetch", -1, "workflows claimed ahead of free slots (dispatch.Prefetch; -1: the library default, none)")
	progress := flags.Duration("progress", 0, "print children run, their rate, the Go heap and the RSS at this interval (0: only at the end)")
	flags.IntVar(&pgVacuumEvery, "pg-vacuum-every", postgres.DefaultVacuumEvery, "postgres: rows claimed between the store's vacuums where autovacuum is off (postgres.WithVacuumEvery; 0: none)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *n < 1 {
		return errors.New("-n must be at least 1")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	db, err := openBackend(ctx, *backend, *dsn)
	if err != nil {
		return err
	}
	defer db.close()
	store := db.store

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	engOpts := []sdk.Option{sdk.WithWorkflows(Parent, Square), sdk.WithLogger(logger)}
	if !*group {
		engOpts = append(engOpts, sdk.WithoutGroupCommit())
	}
	eng, err := sdk.NewEngine(store, engOpts...)
	if err != nil {
		return err
	}
	wopts := []dispatch.Option{dispatch.Concurrency(*slots), dispatch.PollInterval(10*time.Millisecond, 200*time.Millisecond), dispatch.ClaimWindow(*window)}
	if *prefetch >= 0 {
		wopts = append(wopts, dispatch.Prefetch(*prefetch))
	}
	worker, err := dispatch.New(eng, wopts...)
	if err != nil {
		return err
	}
	workerCtx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- worker.Run(workerCtx) }()
	defer func() { stopWorker(); <-workerDone }()

	dispatched.Store(0)
	squared.Store(0)
	fmt.Printf("fanout: %d children, batch %d, %d slots, backend %s\n", *n, *batch, *slots, *backend)
	start := time.Now()
	if *progress > 0 {
		done := make(chan struct{})
		defer close(done)
		go report(*progress, start, done)
	}
	h, err := Parent.Start(ctx, eng, fmt.Sprintf("run-%d", start.UnixNano()), Job{N: *n, Batch: *batch})
	if err != nil {
		return err
	}
	rep, err := h.Result(ctx)
	if err != nil {
		return err
	}
	total := time.Since(start)
	if rep.Children != *n {
		return fmt.Errorf("merged %d children, want %d", rep.Children, *n)
	}
	if want := int64(*n) * int64(*n+1) * int64(2**n+1) / 6; rep.Sum != want {
		return fmt.Errorf("sum of squares %d, want %d", rep.Sum, want)
	}
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	seal := time.Duration(dispatched.Load() - start.UnixNano())
	fmt.Printf("dispatch:   %d children created in %v (%.0f children/s)\n", *n, seal.Round(time.Millisecond), float64(*n)/seal.Seconds())
	fmt.Printf("end to end: %d children completed and merged in %v (%.0f children/s)\n", rep.Children, total.Round(time.Millisecond), float64(rep.Children)/total.Seconds())
	rss, peak, anon := rssMiB()
	fmt.Printf("sum of squares: %d; heap in use %d MiB; RSS %d MiB (%d MiB anonymous; peak %d MiB); worker claimed %d\n", rep.Sum, mem.HeapInuse>>20, rss, anon, peak, worker.Stats().Claimed)
	if size, err := db.size(ctx); err != nil {
		fmt.Printf("database size: %v\n", err)
	} else {
		fmt.Printf("database size: %.1f MiB, %.0f bytes per child\n", float64(size)/(1<<20), float64(size)/float64(*n))
	}
	return nil
}

// report prints a progress line every interval until done is closed: children run so far,
// their rate over the last interval, the Go heap in use and the process's resident set.
func report(interval time.Duration, start time.Time, done <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last, lastAt := int64(0), start
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			n := squared.Load()
			var mem runtime.MemStats
			runtime.ReadMemStats(&mem)
			rss, _, anon := rssMiB()
			fmt.Printf("progress %8v: %9d children run, %6.0f/s over the last %v; heap in use %d MiB, RSS %d MiB (%d MiB anonymous)\n",
				now.Sub(start).Round(time.Second), n, float64(n-last)/now.Sub(lastAt).Seconds(), interval, mem.HeapInuse>>20, rss, anon)
			last, lastAt = n, now
		}
	}
}

// rssMiB returns the process's resident set, its peak and its anonymous part (the rest is
// mapped files, such as the bbolt file) in MiB, from /proc/self/status (zero where there is
// none).
func rssMiB() (rss, peak, anon int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			rss = kb >> 10
		}
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
			peak = kb >> 10
		}
		if _, err := fmt.Sscanf(line, "RssAnon: %d kB", &kb); err == nil {
			anon = kb >> 10
		}
	}
	return rss, peak, anon
}
