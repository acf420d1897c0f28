package storagetest

import (
	"testing"

	"github.com/chronoforge/chronoforge/storage"
)

// Factory returns a fresh, empty store for one test. It registers the store's cleanup
// (closing it, removing its file or schema) with t.Cleanup and fails t if it cannot open one.
type Factory func(t *testing.T) storage.Storage

// Run proves that the stores made by factory keep the storage.Storage contract. It runs every
// storage-level case as a parallel subtest of "storage", each on a store of its own, then the
// cases of optional interfaces (see Capability), and then runs workflows end to end through
// the sdk and dispatch packages on the backend. It fails t at once if opts are malformed.
func Run(t *testing.T, factory Factory, opts ...Option) {
	t.Helper()
	o, err := newOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("storage", func(t *testing.T) {
		for _, c := range storageCases() {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t, factory)
			})
		}
		runCapabilityCases(t, factory, o)
	})
	runEndToEnd(t, factory, o)
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
		{"CreateBatch", testCreateBatch},
		{"CreateBatchIdempotent", testCreateBatchIdempotent},
		{"CreateBatchAllOrNothing", testCreateBatchAllOrNothing},
		{"CreateBatchMax", testCreateBatchMax},
		{"CreateBatchParent", testCreateBatchParent},
		{"CreateBatchConcurrent", testCreateBatchConcurrent},
		{"LimitsAccepted", testLimitsAccepted},

		{"LoadWithSteps", testLoadWithSteps},
		{"StepReplaceKeepsID", testStepReplaceKeepsID},
		{"SaveStepsValues", testSaveStepsValues},
		{"SaveStepsErrors", testSaveStepsErrors},
		{"ListErrorsLimit", testListErrorsLimit},
		{"ListErrorsUnknown", testListErrorsUnknown},
		{"CloseRefusesLaterCalls", testCloseRefusesLaterCalls},
		{"CloseRefusesMessages", testCloseRefusesMessages},

		{"TimesRun", testTimesRun},
		{"TimesControl", testTimesControl},
		{"TimesSteps", testTimesSteps},
		{"TimesErrors", testTimesErrors},
		{"TimesUTC", testTimesUTC},

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
		{"CancelChildrenUnfinished", testCancelChildrenUnfinished},
		{"CancelChildrenLimit", testCancelChildrenLimit},
		{"CancelChildrenBranchSteps", testCancelChildrenBranchSteps},
		{"CancelChildrenFencesRuns", testCancelChildrenFencesRuns},
		{"CancelChildrenConcurrentRuns", testCancelChildrenConcurrentRuns},

		{"ListPaging", testListPaging},
		{"ListFilters", testListFilters},
		{"ListLimitCap", testListLimitCap},
		{"ListLimitDefaults", testListLimitDefaults},
		{"ListTags", testListTags},
		{"ListKeyPrefix", testListKeyPrefix},
		{"ListDescending", testListDescending},
		{"TagsRoundTrip", testTagsRoundTrip},

		{"MessageSendStored", testMessageSendStored},
		{"MessageSendUnknown", testMessageSendUnknown},
		{"MessageSendFinal", testMessageSendFinal},
		{"MessageIdempotentKey", testMessageIdempotentKey},
		{"MessageWakesWaiter", testMessageWakesWaiter},
		{"MessageWakesOnlyWaiters", testMessageWakesOnlyWaiters},
		{"MessageWakeDuringRun", testMessageWakeDuringRun},
		{"MessageConsume", testMessageConsume},
		{"MessageConsumeFenced", testMessageConsumeFenced},
		{"MessageOrderConcurrent", testMessageOrderConcurrent},
		{"MessageCleanup", testMessageCleanup},

		{"CleanupFinished", testCleanupFinished},
		{"CleanupLimit", testCleanupLimit},
		{"CleanupDefaultLimit", testCleanupDefaultLimit},
		{"CleanupRemovesRecords", testCleanupRemovesRecords},
		{"CleanupStates", testCleanupStates},
		{"CleanupNeverLive", testCleanupNeverLive},
		{"CleanupManySteps", testCleanupManySteps},
		{"CleanupOrphanRuns", testCleanupOrphanRuns},

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
		{"InvalidListPaging", testInvalidListPaging},
		{"InvalidTags", testInvalidTags},
		{"InvalidMessage", testInvalidMessage},
		{"InvalidMergeWake", testInvalidMergeWake},
		{"InvalidCancelChildren", testInvalidCancelChildren},
	}
}
