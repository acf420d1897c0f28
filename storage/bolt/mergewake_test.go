package bolt

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

var waitedOn = []storage.State{storage.StateIdle, storage.StateRunning, storage.StateFailed, storage.StateStalled, storage.StateCancelled}

// parked creates a parent keyed key, spawns one branch of n children (named child) under
// it and parks it on a merge wait due in an hour; it returns the parent and the branch step.
func parked(t *testing.T, s *Store, key, child string, n int) (storage.Workflow, int64) {
	t.Helper()
	w := create(t, s, "parent", key, base)
	got, err := s.Claim(context.Background(), storage.ClaimRequest{Owner: "w1", Limit: 1, Names: []string{"parent"}, TTL: time.Minute, Now: base})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, w.ID, got[0].ID)
	res := spawn(t, s, got[0].Lease(), storage.SpawnRequest{
		Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}},
		Children: children(child, key+"$b$c_", 0, n), Now: at(time.Second),
	})
	require.NoError(t, s.FinishRun(context.Background(), got[0].Lease(), storage.Finish{
		Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateIdle, RunAt: at(time.Hour),
		Wait: storage.Wait{Kind: storage.WaitMerge, Step: "merge$b"},
	}))
	return w, res.BranchStepID
}

// branchIndex returns the branches index as step ID -> workflow ID.
func branchIndex(t *testing.T, s *Store) map[int64]int64 {
	t.Helper()
	out := map[int64]int64{}
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketBranches).ForEach(func(k, v []byte) error {
			out[int64(beUint(k))] = int64(beUint(v))
			return nil
		})
	}))
	return out
}

// lastTx is the ID of the last committed write transaction.
func lastTx(t *testing.T, s *Store) int {
	t.Helper()
	var id int
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }))
	return id
}

// TestWakeMergeWaitersWritesOnlyWhenWaking: a wake that finds nothing to change (children
// still running, or the parent already due by the wake time) commits no write transaction,
// so a worker flushing every tick costs reads only; a wake that changes RunAt writes once.
func TestWakeMergeWaitersWritesOnlyWhenWaking(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	busy, busyStep := parked(t, s, "busy", "busy.child", 3)
	idle, idleStep := parked(t, s, "drained", "drained.child", 0)
	require.Equal(t, map[int64]int64{busyStep: busy.ID, idleStep: idle.ID}, branchIndex(t, s), "SpawnBatch indexes each branch step once")

	before := lastTx(t, s)
	n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{busyStep, 1 << 40}, States: waitedOn, At: at(3 * time.Second)})
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, before, lastTx(t, s), "nothing to wake: no write transaction")

	n, err = s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{busyStep, idleStep}, States: waitedOn, At: at(3 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, before+1, lastTx(t, s), "one write transaction wakes")
	w, err := s.GetWorkflow(ctx, idle.ID)
	require.NoError(t, err)
	require.Equal(t, at(3*time.Second), w.RunAt)

	n, err = s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{idleStep}, States: waitedOn, At: at(4 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, 1, n, "still reported woken")
	require.Equal(t, before+1, lastTx(t, s), "already due by the wake time: no write")
	checkIndexes(t, s)
}

// TestCleanupRemovesBranchIndex: deleting a finished parent removes its branch steps from the
// branches index; its children keep theirs out of it.
func TestCleanupRemovesBranchIndex(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	p, step := parked(t, s, "p", "child", 2)
	other, otherStep := parked(t, s, "q", "other", 1)
	require.NoError(t, s.Cancel(ctx, p.ID, at(3*time.Second)))
	del, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 1, del.Deleted)
	require.Equal(t, map[int64]int64{otherStep: other.ID}, branchIndex(t, s), "the deleted parent's branch %d is unindexed", step)
	woken, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{step}, States: waitedOn, At: at(4 * time.Second)})
	require.NoError(t, err)
	require.Zero(t, woken, "the branch of a deleted parent wakes nothing")
	checkIndexes(t, s)
}

// TestOpenUpgradesSchema2IndexesBranches: a file of schema version 2 has no branches index;
// opening it indexes every branch step that has children, so their parents can be woken.
func TestOpenUpgradesSchema2IndexesBranches(t *testing.T) {
	t.Parallel()
	s, path := openTemp(t)
	ctx := context.Background()
	p, step := parked(t, s, "p", "child", 2)
	q, qStep := parked(t, s, "q", "other", 0) // no children: nothing to wait for, not indexed
	want := map[int64]int64{step: p.ID}
	require.Equal(t, map[int64]int64{step: p.ID, qStep: q.ID}, branchIndex(t, s))
	require.NoError(t, s.Close())

	// Make it a version 2 file: no branches bucket.
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketBranches); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaVersion, idKey(2))
	}))
	require.NoError(t, db.Close())

	s, err = Open(path, WithNoSync())
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		require.Equal(t, idKey(schemaVersion), tx.Bucket(bucketMeta).Get(metaVersion))
		return nil
	}))
	require.Equal(t, want, branchIndex(t, s), "the upgrade indexed the branch with children")

	kids, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 10, Names: []string{"child"}, TTL: time.Minute, Now: at(3 * time.Second)})
	require.NoError(t, err)
	require.Len(t, kids, 2)
	for _, k := range kids {
		require.NoError(t, s.FinishRun(ctx, k.Lease(), storage.Finish{Commit: storage.Commit{Now: at(4 * time.Second)}, State: storage.StateCompleted}))
	}
	n, err := s.WakeMergeWaiters(ctx, storage.MergeWakeRequest{StepIDs: []int64{step}, States: waitedOn, At: at(5 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, 1, n, "the parent of an upgraded file is woken")
	checkIndexes(t, s)
}
