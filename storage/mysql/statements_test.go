package mysql

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// The performance promises of the backend are structural: each unit sends a fixed number of
// statements however much it carries. These tests count what reaches the driver.

// measure runs fn and returns what it sent, failing with the statement log if want differs.
func measure(t *testing.T, c *counts, what string, want snapshot, fn func()) {
	t.Helper()
	before, logAt := c.snap(), c.logLen()
	fn()
	got := c.snap().minus(before)
	require.Equal(t, want, got, "%s sent %v", what, c.since(logAt))
}

func TestStatementCounts(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()

	// Create: one INSERT; an existing name and key adds the SELECT of the stored row.
	var w storage.Workflow
	measure(t, c, "CreateWorkflow", snapshot{Exec: 1}, func() { w = create(t, s, "job", "k", at(0)) })
	measure(t, c, "CreateWorkflow of an existing key", snapshot{Exec: 1, Query: 1}, func() {
		_, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "job", Key: "k", Now: at(0)})
		require.NoError(t, err)
		require.False(t, created)
	})

	// Claim: one UPDATE and one SELECT, whatever the batch size; nothing due is one UPDATE.
	for _, k := range []int{1, 10, 200} {
		for i := range k {
			create(t, s, fmt.Sprintf("batch%d", k), fmt.Sprint(i), at(time.Duration(i)*time.Millisecond))
		}
		measure(t, c, fmt.Sprintf("Claim of %d", k), snapshot{Exec: 1, Query: 1}, func() {
			require.Len(t, claimAll(t, s, at(time.Second), k, fmt.Sprintf("batch%d", k)), k)
		})
	}
	measure(t, c, "Claim finding nothing", snapshot{Exec: 1}, func() {
		require.Empty(t, claimAll(t, s, at(time.Second), 100, "nothing-due"))
	})

	got := claimAll(t, s, at(time.Second), 1, "job")
	require.Len(t, got, 1)
	l := got[0].Lease()

	// SaveSteps: one transaction of fence, step upsert, workflow UPDATE and error INSERT,
	// whether it carries 1 or 300 steps and 1 or 50 error records.
	tx := snapshot{Begin: 1, Commit: 1}
	for _, n := range []int{1, 300} {
		steps := make([]storage.Step, n)
		for i := range steps {
			steps[i] = storage.Step{Name: fmt.Sprintf("n%d-s%d", n, i), State: storage.StepCompleted, Attempts: 1,
				Result: []byte(`"ok"`), CompletedAt: at(2 * time.Second)}
		}
		errs := make([]storage.ErrorRecord, min(n, 50))
		for i := range errs {
			errs[i] = storage.ErrorRecord{Step: steps[i].Name, Attempt: 1, Message: "boom"}
		}
		want := tx
		want.Query, want.Exec = 1, 3
		measure(t, c, fmt.Sprintf("SaveSteps of %d steps", n), want, func() {
			require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{Steps: steps, Values: []byte(`{"n":1}`), Errors: errs, Now: at(2 * time.Second)}))
		})
	}
	want := tx
	want.Query, want.Exec = 1, 2
	measure(t, c, "SaveSteps of steps only", want, func() {
		require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{{Name: "only", State: storage.StepPending}}, Now: at(3 * time.Second)}))
	})

	// Heartbeat and Release: fence and one UPDATE.
	want = tx
	want.Query, want.Exec = 1, 1
	measure(t, c, "Heartbeat", want, func() {
		require.NoError(t, s.Heartbeat(ctx, l, time.Minute, at(3*time.Second)))
	})

	// Load: one query for the workflow and its 302 steps.
	measure(t, c, "Load", snapshot{Query: 1}, func() {
		_, steps, err := s.Load(ctx, w.ID)
		require.NoError(t, err)
		require.Len(t, steps, 302)
	})

	// Wake of a running workflow: one UPDATE.
	measure(t, c, "Wake", snapshot{Exec: 1}, func() {
		woken, err := s.Wake(ctx, w.ID, at(4*time.Second))
		require.NoError(t, err)
		require.True(t, woken)
	})

	// FinishRun: one transaction shaped like SaveSteps, with the lease released.
	want = tx
	want.Query, want.Exec = 1, 3
	measure(t, c, "FinishRun", want, func() {
		require.NoError(t, s.FinishRun(ctx, l, storage.Finish{
			Commit: storage.Commit{
				Steps:  []storage.Step{{Name: "last", State: storage.StepCompleted, Result: []byte("1"), CompletedAt: at(5 * time.Second)}},
				Values: []byte(`{"n":2}`), Errors: []storage.ErrorRecord{{Message: "x"}}, Now: at(5 * time.Second),
			},
			State: storage.StateIdle, RunAt: at(time.Hour),
		}))
	})
	got2, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, at(4*time.Second), got2.RunAt, "the wake during the run moved RunAt earlier")

	// Cancel: one UPDATE. DeleteFinished: one transaction: SELECT the batch, DELETE at most
	// the step budget of its steps, DELETE its emptied workflows (errors cascading).
	measure(t, c, "Cancel", snapshot{Exec: 1}, func() { require.NoError(t, s.Cancel(ctx, w.ID, at(6*time.Second))) })
	measure(t, c, "DeleteFinished", snapshot{Exec: 2, Query: 1, Begin: 1, Commit: 1}, func() {
		res, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(time.Hour)})
		require.NoError(t, err)
		require.Equal(t, 1, res.Deleted)
	})
}

func TestSpawnStatementCounts(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	p := create(t, s, "parent", "p", at(0))
	got := claimAll(t, s, at(0), 1, "parent")
	require.Len(t, got, 1)
	l := got[0].Lease()

	batch := func(from, n int) storage.SpawnRequest {
		children := make([]storage.NewWorkflow, n)
		for i := range children {
			children[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$items_%d", from+i), Input: []byte(`1`)}
		}
		return storage.SpawnRequest{
			Branch: "branch$b",
			Steps: []storage.Step{
				{Name: "branch$b", State: storage.StepPending, Attempts: 1},
				{Name: "spawn$b$items", State: storage.StepPending, Meta: []byte(fmt.Sprint(from + n))},
			},
			Children: children,
			Now:      at(time.Second),
		}
	}
	tx := snapshot{Begin: 1, Commit: 1}

	// The batch that records the branch step first reads its new ID back: fence, upsert,
	// branch ID, children, parent. Later batches find the ID in the fence.
	var first storage.SpawnResult
	want := tx
	want.Query, want.Exec = 2, 3
	measure(t, c, "first SpawnBatch of 10", want, func() {
		var err error
		first, err = s.SpawnBatch(ctx, l, batch(0, 10))
		require.NoError(t, err)
		require.Equal(t, 10, first.Inserted)
	})
	want.Query = 1
	for _, n := range []int{1, 1000, storage.MaxSpawnBatch} {
		measure(t, c, fmt.Sprintf("SpawnBatch of %d", n), want, func() {
			res, err := s.SpawnBatch(ctx, l, batch(10_000*n, n))
			require.NoError(t, err)
			require.Equal(t, n, res.Inserted)
			require.Equal(t, first.BranchStepID, res.BranchStepID)
		})
	}
	// A batch that skips stored children reads who holds their keys: one more query.
	want.Query = 2
	measure(t, c, "SpawnBatch applied again", want, func() {
		res, err := s.SpawnBatch(ctx, l, batch(10_000*1000, 1000))
		require.NoError(t, err)
		require.Zero(t, res.Inserted, "a repeated batch inserts nothing")
	})
	// A batch of 1,000 with one key a root holds: fence, upsert, children, the holders'
	// read, and a rollback instead of the parent's UPDATE and the commit.
	taken := create(t, s, "child", "p$b$items_77", at(0))
	measure(t, c, "SpawnBatch meeting a root's key", snapshot{Begin: 1, Rollback: 1, Query: 2, Exec: 2}, func() {
		_, err := s.SpawnBatch(ctx, l, batch(0, 1000))
		var ce *storage.ConflictError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, taken.ID, ce.ID)
	})
	_, err := s.FindWorkflow(ctx, "child", "p$b$items_500")
	require.ErrorIs(t, err, storage.ErrNotFound, "a conflicting batch stores no child")

	// CountChildren: one query, capped.
	measure(t, c, "CountChildren", snapshot{Query: 1}, func() {
		n, err := s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{first.BranchStepID}, States: []storage.State{storage.StateIdle}, Cap: 4000})
		require.NoError(t, err)
		require.Equal(t, 4000, n)
	})
	kids, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: first.BranchStepID, Limit: 5})
	require.NoError(t, err)
	require.Len(t, kids, 5)
	require.NotEqual(t, p.ID, kids[0].ID)
}

// TestStatementCountsCleanupManySteps: a completed workflow with 10,000 steps is deleted in
// at most 11 DeleteFinished calls, each one transaction of three statements deleting at most
// DefaultCleanupSteps step rows.
func TestStatementCountsCleanupManySteps(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	w := create(t, s, "big", "k", at(0))
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: at(0)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	l := got[0].Lease()
	for from := 0; from < 10_000; from += 1000 {
		steps := make([]storage.Step, 1000)
		for i := range steps {
			steps[i] = storage.Step{Name: fmt.Sprintf("s%05d", from+i), State: storage.StepCompleted, Attempts: 1, Result: []byte(`1`)}
		}
		require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{Steps: steps, Now: at(time.Second)}))
	}
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(time.Minute)}, State: storage.StateCompleted}))

	calls, steps := 0, 0
	for {
		var res storage.CleanupResult
		calls++
		measure(t, c, fmt.Sprint("DeleteFinished call ", calls), snapshot{Exec: 2, Query: 1, Begin: 1, Commit: 1}, func() {
			res, err = s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(time.Hour)})
			require.NoError(t, err)
		})
		require.LessOrEqual(t, res.Steps, storage.DefaultCleanupSteps, "call %d", calls)
		steps += res.Steps
		if res.Deleted == 1 {
			break
		}
		require.True(t, res.More, "call %d left the workflow without saying so", calls)
		require.Less(t, calls, 11, "calls to delete 10,000 steps")
	}
	require.Equal(t, 10_000, steps)
	_, err = s.GetWorkflow(ctx, w.ID)
	require.ErrorIs(t, err, storage.ErrNotFound)
	t.Logf("10,000 steps deleted in %d calls", calls)
}

// TestBatchAndMessageStatementCounts: CreateWorkflows is one transaction of an INSERT and a
// SELECT for any batch size; SendMessage is the lock, the insert and the wake when one is
// due; ConsumeMessage is shaped like SaveSteps plus the seek of the next message and its
// consumed mark.
func TestBatchAndMessageStatementCounts(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()
	tx := snapshot{Begin: 1, Commit: 1, Exec: 1, Query: 1}

	for _, n := range []int{1, 100, storage.MaxCreateBatch} {
		ws := make([]storage.NewWorkflow, n)
		for i := range ws {
			ws[i] = storage.NewWorkflow{Name: fmt.Sprint("bulk", i%3), Key: fmt.Sprint(n, "-", i), Input: []byte(`{}`),
				Tags: map[string]string{"batch": fmt.Sprint(n)}, Now: at(0)}
		}
		measure(t, c, fmt.Sprintf("CreateWorkflows of %d", n), tx, func() {
			out, created, err := s.CreateWorkflows(ctx, ws)
			require.NoError(t, err)
			require.Len(t, out, n)
			require.NotContains(t, created, false)
		})
		measure(t, c, fmt.Sprintf("CreateWorkflows of %d existing", n), tx, func() {
			_, created, err := s.CreateWorkflows(ctx, ws)
			require.NoError(t, err)
			require.NotContains(t, created, true)
		})
	}

	w := create(t, s, "mbox", "k", at(0))
	// To an idle workflow waiting for nothing: lock and insert.
	measure(t, c, "SendMessage", snapshot{Begin: 1, Commit: 1, Query: 1, Exec: 1}, func() {
		_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "a", Payload: []byte(`1`), Now: at(0)})
		require.NoError(t, err)
		require.True(t, created)
	})
	// A taken key: lock, insert skipped, read of the stored message.
	measure(t, c, "SendMessage of a taken key", snapshot{Begin: 1, Commit: 1, Query: 2, Exec: 1}, func() {
		_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "a", Payload: []byte(`1`), Now: at(0)})
		require.NoError(t, err)
		require.False(t, created)
	})
	got := claimAll(t, s, at(0), 1, "mbox")
	require.Len(t, got, 1)
	l := got[0].Lease()
	// To a running workflow: lock, insert, wake.
	measure(t, c, "SendMessage waking", snapshot{Begin: 1, Commit: 1, Query: 1, Exec: 2}, func() {
		_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Payload: []byte(`2`), Now: at(time.Second)})
		require.NoError(t, err)
		require.True(t, created)
	})

	// Consume with a full commit: fence, next message, one upsert of 100 steps and the
	// consuming one, the error records, the consumed mark, the workflow row.
	steps := make([]storage.Step, 100)
	for i := range steps {
		steps[i] = storage.Step{Name: fmt.Sprint("s", i), State: storage.StepCompleted, Attempts: 1, Result: []byte(`1`), CompletedAt: at(time.Second)}
	}
	measure(t, c, "ConsumeMessage with steps and errors", snapshot{Begin: 1, Commit: 1, Query: 2, Exec: 4}, func() {
		_, ok, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{
			Commit: storage.Commit{Steps: steps, Values: []byte(`{}`), Errors: []storage.ErrorRecord{{Message: "x"}}, Now: at(2 * time.Second)},
			Topic:  "t", Step: "recv1",
		})
		require.NoError(t, err)
		require.True(t, ok)
	})
	measure(t, c, "ConsumeMessage alone", snapshot{Begin: 1, Commit: 1, Query: 2, Exec: 3}, func() {
		_, ok, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(3 * time.Second)}, Topic: "t", Step: "recv2"})
		require.NoError(t, err)
		require.True(t, ok)
	})
	measure(t, c, "ConsumeMessage finding nothing", snapshot{Begin: 1, Commit: 1, Query: 2, Exec: 1}, func() {
		_, ok, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(4 * time.Second)}, Topic: "t", Step: "recv3"})
		require.NoError(t, err)
		require.False(t, ok)
	})

	// To a final workflow: the lock (and the key's read), then a rollback.
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(5 * time.Second)}, State: storage.StateCompleted}))
	measure(t, c, "SendMessage to a final workflow", snapshot{Begin: 1, Rollback: 1, Query: 2}, func() {
		_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "b", Payload: []byte(`1`), Now: at(6 * time.Second)})
		require.ErrorIs(t, err, storage.ErrWrongState)
	})

	// Cleanup is still three statements: the messages go with their workflow.
	measure(t, c, "DeleteFinished with messages", snapshot{Exec: 2, Query: 1, Begin: 1, Commit: 1}, func() {
		res, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(time.Hour)})
		require.NoError(t, err)
		require.Equal(t, 1, res.Deleted)
	})
	require.Zero(t, countMessages(t, s, w.ID))
}
