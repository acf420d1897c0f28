package mysql

import (
	"testing"

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
