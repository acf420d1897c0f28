package storage

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLimits: the one place that resolves the list and cleanup limits every backend applies.
func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		asked                  int
		list, errors, deletion int
	}{
		{0, DefaultListLimit, DefaultErrorsLimit, DefaultCleanupLimit},
		{-7, DefaultListLimit, DefaultErrorsLimit, DefaultCleanupLimit},
		{1, 1, 1, 1},
		{MaxListLimit + 1, MaxListLimit, MaxListLimit + 1, MaxListLimit + 1},
		{math.MaxInt, MaxListLimit, MaxErrorsLimit, MaxCleanupLimit},
	} {
		require.Equal(t, tc.list, ListLimit(ListFilter{Limit: tc.asked}), "ListLimit(%d)", tc.asked)
		require.Equal(t, tc.errors, ErrorsLimit(tc.asked), "ErrorsLimit(%d)", tc.asked)
		require.Equal(t, tc.deletion, CleanupLimit(CleanupRequest{Limit: tc.asked}), "CleanupLimit(%d)", tc.asked)
	}
	require.Equal(t, 100, DefaultListLimit, "the contract's numbers (records.go, storage.go)")
	require.Equal(t, 1000, MaxListLimit)
	require.Equal(t, 100, DefaultErrorsLimit)
	require.Equal(t, 1000, DefaultCleanupLimit)
}
