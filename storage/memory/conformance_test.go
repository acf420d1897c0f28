package memory

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// TestConformance runs the shared storage suite, end-to-end cases included, on fresh stores.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		s := New()
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

// BenchmarkFanOut runs the shared fan-out benchmarks.
func BenchmarkFanOut(b *testing.B) {
	storagetest.Benchmark(b, func(b *testing.B) storage.Storage {
		s := New()
		b.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// FuzzCreate: see storagetest.FuzzCreate.
func FuzzCreate(f *testing.F) {
	s := New()
	f.Cleanup(func() { _ = s.Close() })
	storagetest.FuzzCreate(f, s)
}
