package mysql

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// TestSpawnConflictCommittedMeanwhile: a child key that another transaction inserts before
// the spawn reaches it and commits while the spawn waits for it is a conflict, never a silent
// skip. The batch records its branch step, so the spawn's read of the new step's ID fixes its
// snapshot (REPEATABLE READ) before the holder commits; INSERT IGNORE then waits for the
// holder and skips the row, and the read of the skipped keys' holders, a locking read, sees
// the committed row where a read of the snapshot would not. The whole batch is refused.
func TestSpawnConflictCommittedMeanwhile(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := t.Context()
	parent := create(t, s, "parent", "p", at(0))
	claimed := claimAll(t, s, at(0), 1, "parent")
	require.Len(t, claimed, 1)
	l := claimed[0].Lease()
	batch := storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Now: at(time.Second)}
	for i := range 10 {
		batch.Children = append(batch.Children, storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$c$$%d", i)})
	}

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, "INSERT INTO "+s.workflows+" (name, `key`, state, created_at, updated_at) VALUES ('child', 'p$b$c$$5', 'idle', NOW(6), NOW(6))")
	require.NoError(t, err)
	holder, err := res.LastInsertId()
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := s.SpawnBatch(ctx, l, batch)
		done <- err
	}()
	// The spawn's INSERT IGNORE waits for the holder's transaction on the unique index.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INSTR(INFO, ?) > 0",
			"INSERT IGNORE INTO "+s.workflows).Scan(&n))
		if n > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the spawn never reached the key the uncommitted holder took")
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, tx.Commit())

	err = <-done
	require.ErrorIs(t, err, storage.ErrConflict)
	var ce *storage.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, storage.ConflictError{
		WorkflowID: parent.ID, Branch: "branch$b", BranchStepID: 0,
		ID: holder, Name: "child", Key: "p$b$c$$5", ParentStepID: 0,
	}, *ce)
	_, err = s.FindWorkflow(context.Background(), "child", "p$b$c$$2")
	require.ErrorIs(t, err, storage.ErrNotFound, "the refused batch stored a child")
	_, steps, err := s.Load(ctx, parent.ID)
	require.NoError(t, err)
	require.Empty(t, steps, "the refused batch recorded its branch step")
}
