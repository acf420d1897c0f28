package bolt

import (
	"path/filepath"
	"testing"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// The store-level fuzz targets of storagetest, each over a bolt file of its own, so every
// stored byte goes through the bolt codec. FuzzCreate is in conformance_test.go and
// FuzzDecode, of the codec alone, in store_test.go.

// fuzzStore opens a fresh bolt file, closed when f ends.
func fuzzStore(f *testing.F) storage.Storage {
	s, err := Open(filepath.Join(f.TempDir(), "fuzz.db"), WithNoSync())
	if err != nil {
		f.Fatalf("open the fuzz store: %v", err)
	}
	f.Cleanup(func() { _ = s.Close() })
	return s
}

// FuzzList: see storagetest.FuzzList.
func FuzzList(f *testing.F) { storagetest.FuzzList(f, fuzzStore(f)) }

// FuzzSendMessage: see storagetest.FuzzSendMessage.
func FuzzSendMessage(f *testing.F) { storagetest.FuzzSendMessage(f, fuzzStore(f)) }

// FuzzPutFlow: see storagetest.FuzzPutFlow.
func FuzzPutFlow(f *testing.F) { storagetest.FuzzPutFlow(f, fuzzStore(f)) }

// FuzzClaim: see storagetest.FuzzClaim.
func FuzzClaim(f *testing.F) { storagetest.FuzzClaim(f, fuzzStore(f)) }
