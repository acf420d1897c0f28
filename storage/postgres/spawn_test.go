package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// TestSpawnConflictCommittedMeanwhile: a child key that another transaction inserts before
// the spawn statement starts and commits while it runs is a conflict, never a silent skip.
// ON CONFLICT waits for that transaction and then skips the row; the statement's check of
// skipped children, which reads the statement's snapshot, does not find it among the branch's
// children, so the whole batch is refused, and the holder is named after it.
func TestSpawnConflictCommittedMeanwhile(t *testing.T) {
	t.Parallel()
	pool := ownPool(t, 4, nil)
	s := newStore(t, pool)
	ctx := t.Context()
	now := base(0)
	parent, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "parent", Key: "p", Now: now})
	require.NoError(t, err)
	claimed, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: now})
	require.NoError(t, err)
	l := claimed[0].Lease()
	batch := func(from, to int) storage.SpawnRequest {
		r := storage.SpawnRequest{Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}}, Now: now.Add(time.Second)}
		for i := from; i < to; i++ {
			r.Children = append(r.Children, storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$c$$%d", i)})
		}
		return r
	}
	first, err := s.SpawnBatch(ctx, l, batch(0, 2))
	require.NoError(t, err)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var holder int64
	require.NoError(t, tx.QueryRow(ctx, `INSERT INTO `+s.workflows+` (name, key, state, created_at, updated_at)
		VALUES ('child', 'p$b$c$$5', 'idle', now(), now()) RETURNING id`).Scan(&holder))

	done := make(chan error, 1)
	go func() {
		_, err := s.SpawnBatch(ctx, l, batch(0, 10))
		done <- err
	}()
	// The spawn waits for the holder's transaction on the unique index.
	eventually(t, 30*time.Second, func() bool {
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND position($1 in query) > 0)`, s.workflows).Scan(&waiting)
		require.NoError(t, err)
		return waiting
	}, "the spawn never waited for the uncommitted holder")
	require.NoError(t, tx.Commit(ctx))

	err = <-done
	require.ErrorIs(t, err, storage.ErrConflict)
	var ce *storage.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, storage.ConflictError{
		WorkflowID: parent.ID, Branch: "branch$b", BranchStepID: first.BranchStepID,
		ID: holder, Name: "child", Key: "p$b$c$$5", ParentStepID: 0,
	}, *ce)
	_, err = s.FindWorkflow(ctx, "child", "p$b$c$$2")
	require.ErrorIs(t, err, storage.ErrNotFound, "the refused batch stored a child")
	kids, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: first.BranchStepID})
	require.NoError(t, err)
	require.Len(t, kids, 2, "the branch keeps the children of its first batch only")
}
