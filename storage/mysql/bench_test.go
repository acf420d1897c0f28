package mysql

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// BenchmarkFanOut runs the shared fan-out benchmarks on a fresh database over the package's
// shared pool.
func BenchmarkFanOut(b *testing.B) {
	storagetest.Benchmark(b, func(b *testing.B) storage.Storage {
		return newStore(b, sharedDB(b))
	})
}

// BenchmarkClaimFlow measures one Claim of 10 workflows of one name (the runs finished
// between claims, outside the timer): "off" without a flow, "priority" with a flow key whose
// flow sets only a priority (the fast path, its pair merged in), "concurrency" under a
// concurrency limit that leaves room (the transaction of claimLimited), "rate" under a rate
// that leaves room (the transaction and its window's update).
func BenchmarkClaimFlow(b *testing.B) {
	for _, tc := range []struct {
		name string
		flow *storage.Flow
	}{
		{"off", nil},
		{"priority", &storage.Flow{Key: "bench.flow", Priority: 1}},
		{"concurrency", &storage.Flow{Key: "bench.flow", Concurrency: 100}},
		{"rate", &storage.Flow{Key: "bench.flow", Rate: storage.MaxRate, Per: time.Second}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const batch = 10
			s := newStore(b, sharedDB(b))
			ctx := context.Background()
			key := ""
			if tc.flow != nil {
				key = tc.flow.Key
				putFlow(b, s, *tc.flow)
			}
			total := (b.N + 1) * batch
			for from := 0; from < total; from += storage.MaxCreateBatch {
				ws := make([]storage.NewWorkflow, min(storage.MaxCreateBatch, total-from))
				for i := range ws {
					ws[i] = storage.NewWorkflow{Name: "bench.claim", Key: fmt.Sprint(from + i), Flow: key, Now: at(0)}
				}
				_, _, err := s.CreateWorkflows(ctx, ws)
				require.NoError(b, err)
			}
			b.ResetTimer()
			for range b.N {
				got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "bench", Limit: batch, Names: []string{"bench.claim"}, TTL: time.Hour, Now: at(time.Second)})
				b.StopTimer()
				require.NoError(b, err)
				require.Len(b, got, batch)
				for _, w := range got {
					require.NoError(b, s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateCompleted}))
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "claims/s")
		})
	}
}
