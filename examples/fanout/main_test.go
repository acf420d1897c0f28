package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFanOutOnBolt runs the example end to end on a small N: run checks that every child was
// merged and that the parent's sum is complete.
func TestFanOutOnBolt(t *testing.T) {
	require.NoError(t, run([]string{"-n", "300", "-batch", "64", "-dsn", filepath.Join(t.TempDir(), "fanout.db")}))
}
