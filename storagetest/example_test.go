package storagetest_test

import (
	"path/filepath"
	"testing"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
	"github.com/chronoforge/chronoforge/storagetest"
)

// A backend author proves a backend with one call, as here. Running the suite on the embedded
// backend from its own package checks a change to the suite where it is made.
func TestSuiteOnBolt(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		s, err := bolt.Open(filepath.Join(t.TempDir(), "suite.db"), bolt.WithNoSync())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
