package memory

import (
	"testing"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// The store-level fuzz targets of storagetest, over one in-memory store each. FuzzCreate is
// in conformance_test.go.

// fuzzStore returns a store closed when f ends.
func fuzzStore(f *testing.F) storage.Storage {
	s := New()
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
