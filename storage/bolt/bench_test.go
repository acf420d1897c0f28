package bolt

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/storage"
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
