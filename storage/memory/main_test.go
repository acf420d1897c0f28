package memory

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine running: the store starts none,
// and the end-to-end conformance cases must stop every worker they start.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
