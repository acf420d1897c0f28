package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// BenchmarkFanOut runs the shared fan-out benchmarks on a fresh schema over a pool of 16
// connections.
func BenchmarkFanOut(b *testing.B) {
	storagetest.Benchmark(b, func(b *testing.B) storage.Storage {
		return newStore(b, ownPool(b, 16, nil))
	})
}

// BenchmarkClaimFlow measures one claim of one due workflow of a name, the workflow finished
// outside the timer so each claim finds the same state: "off" with workflows without a flow
// (the plain path, the claim as before flow control), "priority" with a flow of priority only
// (the fast path, reading the governed index) and "limited" with a flow of concurrency 1 over
// a due backlog of every remaining workflow (the limited path: the flow's lock, its runs
// counted, its first due row taken). It reports the statements each claim sent.
func BenchmarkClaimFlow(b *testing.B) {
	for _, tc := range []struct {
		name string
		flow *storage.Flow
	}{
		{"off", nil},
		{"priority", &storage.Flow{Key: "bench.flow", Priority: 5}},
		{"limited", &storage.Flow{Key: "bench.flow", Concurrency: 1}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			pool := ownPool(b, 4, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter{} })
			s := newStore(b, pool)
			ctx := context.Background()
			now := time.Now()
			key := ""
			if tc.flow != nil {
				key = tc.flow.Key
				if _, _, err := s.PutFlow(ctx, *tc.flow, false, now); err != nil {
					b.Fatal(err)
				}
			}
			// Enough for every iteration and the warm-up claims, created in batches.
			n := b.N + 2
			for off := 0; off < n; off += storage.MaxCreateBatch {
				ws := make([]storage.NewWorkflow, 0, storage.MaxCreateBatch)
				for i := off; i < min(n, off+storage.MaxCreateBatch); i++ {
					ws = append(ws, storage.NewWorkflow{Name: "bench.claim", Key: fmt.Sprint(i), Now: now, Flow: key})
				}
				if _, _, err := s.CreateWorkflows(ctx, ws); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.pool.Exec(ctx, `ANALYZE `+s.workflows); err != nil {
				b.Fatal(err)
			}
			log := &statementLog{}
			claimCtx := context.WithValue(ctx, logKey{}, log)
			req := storage.ClaimRequest{Owner: "bench", Limit: 1, Names: []string{"bench.claim"}, TTL: time.Hour, Now: now}
			claim := func() {
				got, err := s.Claim(claimCtx, req)
				if err != nil || len(got) != 1 {
					b.Fatalf("claim: %v (%d claimed)", err, len(got))
				}
				b.StopTimer()
				for _, w := range got {
					if err := s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			// Warm-up claims settle which path the store takes for these names.
			claim()
			claim()
			log.take()
			b.ResetTimer()
			for range b.N {
				claim()
			}
			b.StopTimer()
			b.ReportMetric(float64(len(log.take()))/float64(b.N), "stmts/claim")
		})
	}
}
