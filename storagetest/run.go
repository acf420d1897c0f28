// Package storagetest is the conformance suite for storage.Storage backends.
//
// A backend author proves a backend with one call from an ordinary test:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Storage {
//			s, err := mybackend.Open(filepath.Join(t.TempDir(), "test.db"))
//			require.NoError(t, err)
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The factory must return a fresh, empty store each time it is called (a new file, schema or
// database) and register its own cleanup with t.Cleanup. The storage cases run in parallel,
// each against its own store, so a backend is also exercised under concurrent use; run the
// suite with -race.
//
// Every case passes explicit times (a fixed base time plus offsets) in its requests, as the
// contract asks, so when workflows are due does not depend on the machine's clock. Leases
// expire by the store's own clock, which no request moves: the cases that need a lease to
// expire give it a short real TTL and wait, polling the store with a deadline, until the
// store's clock has passed it. A failing case names the promise of the storage.Storage
// contract that the backend broke.
package storagetest

import (
	"testing"

	"github.com/chronoforge/chronoforge/storage"
)

// Factory returns a fresh, empty store for one test. It registers the store's cleanup
// (closing it, removing its file or schema) with t.Cleanup and fails t if it cannot open one.
type Factory func(t *testing.T) storage.Storage

// Run proves that the stores made by factory keep the storage.Storage contract. It runs every
// storage-level case as a parallel subtest of "storage", each on a store of its own, and then
// runs workflows end to end through the sdk and dispatch packages on the backend.
func Run(t *testing.T, factory Factory) {
	t.Helper()
	t.Run("storage", func(t *testing.T) {
		for _, c := range storageCases() {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t, factory)
			})
		}
	})
	runEndToEnd(t, factory)
}

// storageCase is one promise of the contract, checked on stores made by the factory.
type storageCase struct {
	name string
	run  func(t *testing.T, factory Factory)
}

// storageCases lists the storage-level cases in the order they are reported.
func storageCases() []storageCase {
	return []storageCase{
		{"CreateIdempotent", testCreateIdempotent},
		{"CreateConcurrent", testCreateConcurrent},
		{"CreateDistinctKeys", testCreateDistinctKeys},
		{"GetAndFind", testGetAndFind},
		{"LimitsAccepted", testLimitsAccepted},

		{"LoadWithSteps", testLoadWithSteps},
		{"StepReplaceKeepsID", testStepReplaceKeepsID},
		{"SaveStepsValues", testSaveStepsValues},
		{"SaveStepsErrors", testSaveStepsErrors},
		{"ListErrorsLimit", testListErrorsLimit},

		{"ClaimDueInRunAtOrder", testClaimDueInRunAtOrder},
		{"ClaimLimit", testClaimLimit},
		{"ClaimNames", testClaimNames},
		{"ClaimSetsLease", testClaimSetsLease},
		{"ClaimHeldNotReclaimed", testClaimHeldNotReclaimed},
		{"ClaimSkewedClockAhead", testClaimSkewedClockAhead},
		{"ClaimExclusiveConcurrent", testClaimExclusiveConcurrent},

		{"LeaseTakeover", testLeaseTakeover},
		{"HeartbeatExtends", testHeartbeatExtends},
		{"HeartbeatAfterExpiry", testHeartbeatAfterExpiry},
		{"HeartbeatSkewedClock", testHeartbeatSkewedClock},
		{"Release", testRelease},

		{"FenceWrongToken", testFenceWrongToken},
		{"FenceExpired", testFenceExpired},
		{"FenceSkewedClock", testFenceSkewedClock},
		{"FenceMessages", testFenceMessages},
		{"FenceCancelled", testFenceCancelled},
		{"FenceFinished", testFenceFinished},

		{"FinishCompleted", testFinishCompleted},
		{"FinishFailed", testFinishFailed},
		{"FinishIdleLater", testFinishIdleLater},
		{"FinishIdleNoRunAt", testFinishIdleNoRunAt},
		{"FinishStalled", testFinishStalled},
		{"FinishInvalidState", testFinishInvalidState},

		{"WakeMovesEarlier", testWakeMovesEarlier},
		{"WakeCoalesces", testWakeCoalesces},
		{"WakeDuringRun", testWakeDuringRun},
		{"WakeDuringRunNotReclaimed", testWakeDuringRunNotReclaimed},
		{"WakeNotCarriedOver", testWakeNotCarriedOver},
		{"WakeFinalOrStalled", testWakeFinalOrStalled},
		{"WakeNotFound", testWakeNotFound},

		{"RetryStalled", testRetryStalled},
		{"RetryFailed", testRetryFailed},
		{"RetryWrongState", testRetryWrongState},
		{"RetryConcurrent", testRetryConcurrent},

		{"CancelIdle", testCancelIdle},
		{"CancelStalled", testCancelStalled},
		{"CancelFinal", testCancelFinal},
		{"CancelDuringRun", testCancelDuringRun},

		{"ListPaging", testListPaging},
		{"ListFilters", testListFilters},
		{"ListLimitCap", testListLimitCap},
		{"ListLimitDefaults", testListLimitDefaults},

		{"CleanupFinished", testCleanupFinished},
		{"CleanupLimit", testCleanupLimit},
		{"CleanupDefaultLimit", testCleanupDefaultLimit},
		{"CleanupRemovesRecords", testCleanupRemovesRecords},

		{"SpawnIdempotent", testSpawnIdempotent},
		{"SpawnCursorResume", testSpawnCursorResume},
		{"SpawnFenced", testSpawnFenced},
		{"SpawnConflictOtherBranch", testSpawnConflictOtherBranch},
		{"SpawnConflictRoot", testSpawnConflictRoot},
		{"SpawnConflictConcurrent", testSpawnConflictConcurrent},
		{"CountChildrenCapped", testCountChildrenCapped},
		{"ChildrenPaging", testChildrenPaging},
		{"WaitDataRoundTrip", testWaitDataRoundTrip},

		{"MergeWakeDrained", testMergeWakeDrained},
		{"MergeWakeLastChild", testMergeWakeLastChild},
		{"MergeWakeOnlyMergeWaiters", testMergeWakeOnlyMergeWaiters},
		{"MergeWakeManySteps", testMergeWakeManySteps},
		{"MergeWakeConcurrentFinishes", testMergeWakeConcurrentFinishes},

		{"InvalidCreate", testInvalidCreate},
		{"InvalidClaim", testInvalidClaim},
		{"InvalidCommit", testInvalidCommit},
		{"InvalidFinish", testInvalidFinish},
		{"InvalidRetry", testInvalidRetry},
		{"InvalidList", testInvalidList},
		{"InvalidMergeWake", testInvalidMergeWake},
	}
}
