package bolt

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// TestConformance runs the shared storage suite against fresh bolt files.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		s, err := Open(filepath.Join(t.TempDir(), "conformance.db"), WithNoSync())
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

// FuzzCreate: see storagetest.FuzzCreate; the stored bytes go through the bolt codec.
func FuzzCreate(f *testing.F) {
	s, err := Open(filepath.Join(f.TempDir(), "fuzz.db"), WithNoSync())
	require.NoError(f, err)
	f.Cleanup(func() { _ = s.Close() })
	storagetest.FuzzCreate(f, s)
}
