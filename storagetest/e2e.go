package storagetest

import (
	"testing"

	"github.com/chronoforge/chronoforge/storage"
)

// runEndToEnd runs workflows through sdk and dispatch on the backend (owned by the sdk work).
func runEndToEnd(t *testing.T, factory Factory) {
	_ = factory
	_ = storage.ErrNotFound
}
