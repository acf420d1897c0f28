package postgres

import (
	"testing"

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
