package memory

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// BenchmarkCreate measures CreateWorkflow of new workflows.
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

// BenchmarkClaim measures claiming due workflows in batches of 64 from a store of rows
// workflows; when the queue runs dry the clock moves past the leases (a fake store clock),
// so the same rows come back as expired leases and are taken over.
func BenchmarkClaim(b *testing.B) {
	for _, rows := range []int{6_400, 100_000} {
		b.Run(fmt.Sprint("rows=", rows), func(b *testing.B) {
			const batch, ttl = 64, time.Minute
			clock := &fakeClock{now: base}
			s := newStore(b, WithClock(clock.Now))
			ctx := context.Background()
			for i := range rows {
				if _, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "order.charge", Key: fmt.Sprint("order-", i), RunAt: base.Add(time.Duration(i) * time.Microsecond), Now: base}); err != nil {
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
					clock.Add(ttl + time.Second)
				}
			}
			b.ReportMetric(float64(claimed)/b.Elapsed().Seconds(), "claims/s")
		})
	}
}

// BenchmarkCountChildren measures a merge probe (incomplete children, capped at 5,000) on
// branches of growing size: the cost stays flat.
func BenchmarkCountChildren(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		b.Run(fmt.Sprint("children=", n), func(b *testing.B) {
			s := newStore(b)
			ctx := context.Background()
			create(b, s, "parent", "p", base)
			l := claimOne(b, s, base, 24*time.Hour)
			var branch int64
			for from := 0; from < n; from += storage.MaxSpawnBatch {
				kids := make([]storage.NewWorkflow, 0, storage.MaxSpawnBatch)
				for i := from; i < min(from+storage.MaxSpawnBatch, n); i++ {
					kids = append(kids, storage.NewWorkflow{Name: "child", Key: fmt.Sprint("c", i)})
				}
				res, err := s.SpawnBatch(ctx, l.Lease(), storage.SpawnRequest{
					Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Children: kids, Now: base,
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
