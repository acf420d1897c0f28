package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// BenchmarkCreate measures CreateWorkflow of new workflows, one write transaction each.
func BenchmarkCreate(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	input := []byte(`{"order":42,"amount":1999,"currency":"EUR"}`)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "order.charge", Key: fmt.Sprint("order-", i), Input: input, Now: base}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkClaim measures claiming due workflows in batches of 64, the dispatcher's shape:
// each op is one Claim transaction. When the queue runs dry the clock moves past the leases,
// so the same rows come back as expired leases and are taken over.
func BenchmarkClaim(b *testing.B) {
	const batch, rows, ttl = 64, 64 * 100, time.Minute
	s := newStore(b)
	ctx := context.Background()
	for i := range rows {
		if _, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "order.charge", Key: fmt.Sprint("order-", i), RunAt: base.Add(time.Duration(i)), Now: base}); err != nil {
			b.Fatal(err)
		}
	}
	now, claimed := base.Add(time.Second), 0
	b.ReportAllocs()
	for b.Loop() {
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "bench", Limit: batch, TTL: ttl, Now: now})
		if err != nil {
			b.Fatal(err)
		}
		claimed += len(got)
		if len(got) < batch {
			now = now.Add(ttl + time.Second)
		}
	}
	b.ReportMetric(float64(claimed)/b.Elapsed().Seconds(), "claims/s")
}

// BenchmarkSpawnBatch measures SpawnBatch of 1,000 new children per op (one transaction,
// with the cursor step), the dispatch shape of a large branch.
func BenchmarkSpawnBatch(b *testing.B) {
	const batch = 1000
	s := newStore(b)
	ctx := context.Background()
	if _, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "parent", Key: "p", Now: base}); err != nil {
		b.Fatal(err)
	}
	l := leaseOf(claimOne(b, s, base, 24*time.Hour))
	input := []byte(`{"item":42}`)
	kids := make([]storage.NewWorkflow, batch)
	b.ReportAllocs()
	spawned := 0
	for b.Loop() {
		for i := range kids {
			kids[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprint("p$b$items_", spawned+i), Input: input}
		}
		res, err := s.SpawnBatch(ctx, l, storage.SpawnRequest{
			Branch:   "branch$b",
			Steps:    []storage.Step{{Name: "branch$b", State: storage.StepPending}, {Name: "spawn$b$items", State: storage.StepPending, Meta: []byte(fmt.Sprint(spawned + batch))}},
			Children: kids,
			Now:      base,
		})
		if err != nil || res.Inserted != batch {
			b.Fatal(res, err)
		}
		spawned += batch
	}
	b.ReportMetric(float64(spawned)/b.Elapsed().Seconds(), "children/s")
}

// BenchmarkCountChildren measures a merge probe (count of incomplete children, capped at
// 5,000) on branches of growing size: the cost stays flat once N passes the cap.
func BenchmarkCountChildren(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint("children=", n), func(b *testing.B) {
			s := newStore(b)
			ctx := context.Background()
			if _, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "parent", Key: "p", Now: base}); err != nil {
				b.Fatal(err)
			}
			l := leaseOf(claimOne(b, s, base, 24*time.Hour))
			var branch int64
			for from := 0; from < n; from += storage.MaxSpawnBatch {
				res, err := s.SpawnBatch(ctx, l, storage.SpawnRequest{
					Branch:   "branch$b",
					Steps:    []storage.Step{{Name: "branch$b", State: storage.StepPending}},
					Children: children("child", "c", from, min(storage.MaxSpawnBatch, n-from)),
					Now:      base,
				})
				if err != nil {
					b.Fatal(err)
				}
				branch = res.BranchStepID
			}
			q := storage.ChildQuery{
				StepIDs: []int64{branch},
				States:  []storage.State{storage.StateIdle, storage.StateRunning, storage.StateFailed, storage.StateStalled, storage.StateCancelled},
				Cap:     storage.MaxCountCap,
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.CountChildren(ctx, q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFanOut runs the shared fan-out benchmarks on a bbolt file with the default
// (durable) settings.
func BenchmarkFanOut(b *testing.B) {
	storagetest.Benchmark(b, func(b *testing.B) storage.Storage {
		s, err := Open(filepath.Join(b.TempDir(), "fanout.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// BenchmarkClaimFlow measures BenchmarkClaim's shape (batches of 64 from 6,400 due rows, the
// clock moved past the leases when the queue runs dry) with flow control off and on:
//
//	off   the rows have no flow key: the runnable index, as before flow control
//	on    the rows have a flow key whose stored flow has a priority, a concurrency limit
//	      and a rate that do not bind (10,000 running, 10,000 per second): the cost of
//	      counting live leases and keeping the rate log
//	held  off, beside a flow at its concurrency limit of 1 with 100,000 due rows held back
//
// The store's clock follows the requests' clock, so leases expire as the clock moves.
func BenchmarkClaimFlow(b *testing.B) {
	const batch, rows, ttl = 64, 64 * 100, time.Minute
	for _, mode := range []string{"off", "on", "held"} {
		b.Run(mode, func(b *testing.B) {
			s := newStore(b)
			ctx := context.Background()
			flow := ""
			switch mode {
			case "on":
				flow = "bench"
				putFlow(b, s, storage.Flow{Key: flow, Priority: 1, Concurrency: 10_000, Rate: 10_000, Per: time.Second})
			case "held":
				putFlow(b, s, storage.Flow{Key: "narrow", Concurrency: 1})
				createFlowRows(b, s, "held", "narrow", "h", 100_000, base)
			}
			createFlowRows(b, s, "order.charge", flow, "order-", rows, base.Add(time.Nanosecond))
			now, claimed := base.Add(time.Second), 0
			s.clock = func() time.Time { return now }
			before := s.stats.flowKeys.Load()
			b.ReportAllocs()
			for b.Loop() {
				got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "bench", Limit: batch, TTL: ttl, Now: now})
				if err != nil {
					b.Fatal(err)
				}
				claimed += len(got)
				if len(got) < batch {
					now = now.Add(ttl + time.Second)
				}
			}
			b.ReportMetric(float64(claimed)/b.Elapsed().Seconds(), "claims/s")
			b.ReportMetric(float64(s.stats.flowKeys.Load()-before)/float64(b.N), "flowkeys/op")
		})
	}
}
