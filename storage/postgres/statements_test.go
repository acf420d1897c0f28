package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// The performance promises of issue 3 are structural: each unit is a fixed number of
// statements however much it carries. These tests count what reaches the server through a
// tracer on the pool: every query, exec, batch and COPY, including BEGIN and COMMIT.

// statementLog records the statements sent under one context.
type statementLog struct {
	mu  sync.Mutex
	sql []string
}

func (l *statementLog) add(sql string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sql = append(l.sql, strings.Join(strings.Fields(sql), " "))
}

func (l *statementLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.sql
	l.sql = nil
	return out
}

type logKey struct{}

// counter is a pgx tracer that appends every statement to the statementLog in its context.
type counter struct{}

func logOf(ctx context.Context) *statementLog {
	l, _ := ctx.Value(logKey{}).(*statementLog)
	return l
}

func (counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if l := logOf(ctx); l != nil {
		l.add(data.SQL)
	}
	return ctx
}

func (counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (counter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if l := logOf(ctx); l != nil {
		for _, q := range data.Batch.QueuedQueries {
			l.add("batch: " + q.SQL)
		}
	}
	return ctx
}

func (counter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (counter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (counter) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	if l := logOf(ctx); l != nil {
		l.add(fmt.Sprintf("copy: %v", data.TableName))
	}
	return ctx
}

func (counter) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

// countingStore is a migrated store over a pool that traces statements.
type countingStore struct {
	*Store
	t *testing.T
}

func newCountingStore(t *testing.T) countingStore {
	pool := ownPool(t, 4, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter{} })
	return countingStore{Store: newStore(t, pool), t: t}
}

// count runs fn with a traced context and returns the statements it sent.
func (c countingStore) count(fn func(ctx context.Context)) []string {
	l := &statementLog{}
	fn(context.WithValue(c.t.Context(), logKey{}, l))
	return l.take()
}

// requireOne requires that fn sent exactly one statement, and no BEGIN/COMMIT around it: a
// single statement is its own transaction.
func (c countingStore) requireOne(what string, fn func(ctx context.Context)) {
	c.t.Helper()
	sql := c.count(fn)
	require.Len(c.t, sql, 1, "%s: want one statement, got %d:\n%s", what, len(sql), strings.Join(sql, "\n"))
	c.t.Logf("%s: 1 statement", what)
}

func base(d time.Duration) time.Time {
	return time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC).Add(d)
}

// TestStatementsLoad: loading a workflow with its steps is one query.
func TestStatementsLoad(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "load", Key: "k", Input: []byte(`1`), Now: base(0)})
	require.NoError(t, err)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	for batch := range 5 {
		steps := make([]storage.Step, 40)
		for i := range steps {
			steps[i] = storage.Step{Name: fmt.Sprintf("s%03d", batch*40+i), State: storage.StepCompleted, Attempts: 1, Result: []byte(`"ok"`)}
		}
		require.NoError(t, s.SaveSteps(ctx, got[0].Lease(), storage.Commit{Steps: steps, Now: base(time.Second)}))
	}

	s.requireOne("Load of a workflow with 200 steps", func(ctx context.Context) {
		lw, steps, err := s.Load(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, w.ID, lw.ID)
		require.Len(t, steps, 200)
	})
	s.requireOne("Load of an unknown workflow", func(ctx context.Context) {
		_, _, err := s.Load(ctx, w.ID+1000)
		require.ErrorIs(t, err, storage.ErrNotFound)
	})
}

// TestStatementsStepCommit: completing steps with their durable values (and error records)
// is one transaction: one statement, however many steps.
func TestStatementsStepCommit(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "commit", Key: "k", Now: base(0)})
	require.NoError(t, err)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	l := got[0].Lease()

	for _, n := range []int{1, 50} {
		steps := make([]storage.Step, n)
		for i := range steps {
			steps[i] = storage.Step{Name: fmt.Sprintf("n%d-s%d", n, i), State: storage.StepCompleted, Attempts: 1, Result: []byte(`{}`)}
		}
		c := storage.Commit{
			Steps:  steps,
			Values: []byte(fmt.Sprintf(`{"n":%d}`, n)),
			Errors: []storage.ErrorRecord{{Step: steps[0].Name, Attempt: 1, Message: "first try failed"}},
			Now:    base(time.Second),
		}
		s.requireOne(fmt.Sprintf("SaveSteps of %d steps with durable values and an error record", n), func(ctx context.Context) {
			require.NoError(t, s.SaveSteps(ctx, l, c))
		})
	}
	s.requireOne("SaveSteps replacing a step", func(ctx context.Context) {
		require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{{Name: "n1-s0", State: storage.StepPending, Attempts: 2}}, Now: base(2 * time.Second)}))
	})
	s.requireOne("Heartbeat", func(ctx context.Context) {
		require.NoError(t, s.Heartbeat(ctx, l, time.Hour, base(3*time.Second)))
	})
	w, steps, err := s.Load(ctx, l.WorkflowID)
	require.NoError(t, err)
	require.Len(t, steps, 51)
	require.JSONEq(t, `{"n":50}`, string(w.Values))
	require.Equal(t, "first try failed", w.LastError)
}

// TestStatementsFinish: finishing or suspending a run (state, values, next run_at, wait,
// lease release) is one transaction: one statement.
func TestStatementsFinish(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	for i := range 3 {
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "finish", Key: fmt.Sprint(i), Now: base(0)})
		require.NoError(t, err)
	}
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 3, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	require.Len(t, got, 3)
	steps := []storage.Step{{Name: "last", State: storage.StepCompleted, Attempts: 1, Result: []byte(`1`)}, {Name: "sleep$nap", State: storage.StepPending}}

	s.requireOne("FinishRun suspending (idle, next run_at, wait, values, steps)", func(ctx context.Context) {
		require.NoError(t, s.FinishRun(ctx, got[0].Lease(), storage.Finish{
			Commit: storage.Commit{Steps: steps, Values: []byte(`{"a":1}`), Now: base(time.Second)},
			State:  storage.StateIdle, RunAt: base(time.Hour), Wait: storage.Wait{Kind: "sleep", Step: "sleep$nap", Data: []byte(`{}`)},
		}))
	})
	s.requireOne("FinishRun completing (output, values, steps, errors)", func(ctx context.Context) {
		require.NoError(t, s.FinishRun(ctx, got[1].Lease(), storage.Finish{
			Commit: storage.Commit{Steps: steps, Values: []byte(`{"a":2}`), Errors: []storage.ErrorRecord{{Message: "retried"}}, Now: base(time.Second)},
			State:  storage.StateCompleted, Output: []byte(`"done"`),
		}))
	})
	s.requireOne("Release", func(ctx context.Context) {
		require.NoError(t, s.Release(ctx, got[2].Lease(), base(time.Second)))
	})
	sql := s.count(func(ctx context.Context) {
		err := s.FinishRun(ctx, got[1].Lease(), storage.Finish{Commit: storage.Commit{Now: base(2 * time.Second)}, State: storage.StateCompleted})
		require.ErrorIs(t, err, storage.ErrLeaseLost)
	})
	require.Len(t, sql, 2, "a refused finish costs the statement and one read: %v", sql)

	w, err := s.GetWorkflow(ctx, got[0].ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, w.State)
	require.True(t, base(time.Hour).Equal(w.RunAt))
}

// TestStatementsClaim: claiming a batch of K runnable workflows is one statement.
func TestStatementsClaim(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	for i := range 100 {
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "claim", Key: fmt.Sprint(i), RunAt: base(time.Duration(i%7) * time.Second), Now: base(0)})
		require.NoError(t, err)
	}
	for _, k := range []int{1, 25, 64} {
		s.requireOne(fmt.Sprintf("Claim of a batch of %d", k), func(ctx context.Context) {
			got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: k, Names: []string{"claim"}, TTL: time.Minute, Now: base(time.Minute)})
			require.NoError(t, err)
			require.Len(t, got, k)
			for i := 1; i < len(got); i++ {
				require.False(t, got[i].RunAt.Before(got[i-1].RunAt))
			}
		})
	}
}

// TestStatementsOtherUnits: every other unit is one statement too; a spawn batch of 2,000
// children is one statement, not one per child, and a refused one (a key held elsewhere) two.
func TestStatementsOtherUnits(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	var parent storage.Workflow
	s.requireOne("CreateWorkflow", func(ctx context.Context) {
		var err error
		parent, _, err = s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "parent", Key: "p", Now: base(0)})
		require.NoError(t, err)
	})
	s.requireOne("CreateWorkflow of an existing name and key", func(ctx context.Context) {
		_, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "parent", Key: "p", Now: base(0)})
		require.NoError(t, err)
		require.False(t, created)
	})
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	l := got[0].Lease()

	children := make([]storage.NewWorkflow, 2000)
	for i := range children {
		children[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$c_%d", i), Input: []byte(`{}`)}
	}
	req := storage.SpawnRequest{
		Branch:   "branch$b",
		Steps:    []storage.Step{{Name: "branch$b", State: storage.StepPending}, {Name: "spawn$b$c", State: storage.StepPending, Meta: []byte(`{"cursor":2000}`)}},
		Children: children,
		Now:      base(time.Second),
	}
	var branch int64
	// This batch makes the store's first statistics refresh due; the refresh runs in the
	// background (see maintain_test.go), so the batch is one statement all the same.
	s.requireOne("SpawnBatch of 2,000 children that makes table maintenance due", func(ctx context.Context) {
		res, err := s.SpawnBatch(ctx, l, req)
		require.NoError(t, err)
		require.Equal(t, 2000, res.Inserted)
		branch = res.BranchStepID
	})
	s.requireOne("SpawnBatch of 2,000 new children with the branch and cursor records", func(ctx context.Context) {
		more := req
		more.Children = make([]storage.NewWorkflow, len(children))
		for i := range more.Children {
			more.Children[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$d_%d", i), Input: []byte(`{}`)}
		}
		res, err := s.SpawnBatch(ctx, l, more)
		require.NoError(t, err)
		require.Equal(t, 2000, res.Inserted)
	})
	s.requireOne("SpawnBatch of the same 2,000 children again", func(ctx context.Context) {
		res, err := s.SpawnBatch(ctx, l, req)
		require.NoError(t, err)
		require.Zero(t, res.Inserted)
	})
	// A batch of 2,000 with one key a root holds: the batch fails whole, and one read names
	// the holder. Two statements, whatever the batch size.
	taken, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "child", Key: "p$b$e_1500", Now: base(0)})
	require.NoError(t, err)
	conflict := req
	conflict.Children = make([]storage.NewWorkflow, len(children))
	for i := range conflict.Children {
		conflict.Children[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b$e_%d", i)}
	}
	sql := s.count(func(ctx context.Context) {
		_, err := s.SpawnBatch(ctx, l, conflict)
		var ce *storage.ConflictError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, taken.ID, ce.ID)
	})
	require.Len(t, sql, 2, "a conflicting SpawnBatch: the batch and the read of the holder:\n%s", strings.Join(sql, "\n"))
	_, err = s.FindWorkflow(ctx, "child", "p$b$e_0")
	require.ErrorIs(t, err, storage.ErrNotFound, "a conflicting batch stores no child")
	s.requireOne("CountChildren", func(ctx context.Context) {
		n, err := s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{branch}, States: []storage.State{storage.StateIdle, storage.StateRunning}, Cap: 1500})
		require.NoError(t, err)
		require.Equal(t, 1500, n)
	})
	s.requireOne("Wake", func(ctx context.Context) {
		woken, err := s.Wake(ctx, parent.ID, base(time.Second))
		require.NoError(t, err)
		require.True(t, woken)
	})
	s.requireOne("ListWorkflows", func(ctx context.Context) {
		page, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: branch, States: []storage.State{storage.StateIdle}, Limit: 500})
		require.NoError(t, err)
		require.Len(t, page, 500)
	})
	s.requireOne("ListErrors", func(ctx context.Context) {
		_, err := s.ListErrors(ctx, parent.ID, 0)
		require.NoError(t, err)
	})
	s.requireOne("Cancel", func(ctx context.Context) {
		require.NoError(t, s.Cancel(ctx, parent.ID, base(2*time.Second)))
	})
	// DeleteFinished: one transaction of two statements (lock the batch and delete its
	// steps within the budget; delete the emptied workflows), whatever the batch's size.
	sql = s.count(func(ctx context.Context) {
		res, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: base(time.Hour)})
		require.NoError(t, err)
		require.Equal(t, 1, res.Deleted)
	})
	require.LessOrEqual(t, len(sql), 4, "DeleteFinished: BEGIN, two statements, COMMIT:\n%s", strings.Join(sql, "\n"))
}

// TestStatementsCleanupManySteps: a completed workflow with 10,000 steps is deleted in at
// most 11 DeleteFinished calls, each one transaction of two statements deleting at most
// DefaultCleanupSteps step rows.
func TestStatementsCleanupManySteps(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "big", Key: "k", Now: base(0)})
	require.NoError(t, err)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	l := got[0].Lease()
	for from := 0; from < 10_000; from += 1000 {
		steps := make([]storage.Step, 1000)
		for i := range steps {
			steps[i] = storage.Step{Name: fmt.Sprintf("s%05d", from+i), State: storage.StepCompleted, Attempts: 1, Result: []byte(`1`)}
		}
		require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{Steps: steps, Now: base(time.Second)}))
	}
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: base(time.Minute)}, State: storage.StateCompleted}))

	calls, steps := 0, 0
	for {
		var res storage.CleanupResult
		sql := s.count(func(ctx context.Context) {
			res, err = s.DeleteFinished(ctx, storage.CleanupRequest{Before: base(time.Hour)})
			require.NoError(t, err)
		})
		calls++
		require.LessOrEqual(t, len(sql), 4, "call %d: BEGIN, two statements, COMMIT:\n%s", calls, strings.Join(sql, "\n"))
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

// TestStatementsFinishRuns: the final writes of 8 runs are one pipelined batch (one round
// trip, one implicit transaction, no BEGIN or COMMIT): the finish statement once per run.
func TestStatementsFinishRuns(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	const n = 8
	for i := range n {
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "group", Key: fmt.Sprint(i), Now: base(0)})
		require.NoError(t, err)
	}
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: n, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	require.Len(t, got, n)
	ends := make([]storage.RunEnd, n)
	for i, w := range got {
		ends[i] = storage.RunEnd{Lease: w.Lease(), Finish: storage.Finish{
			Commit: storage.Commit{Steps: []storage.Step{{Name: "s", State: storage.StepCompleted, Attempts: 1, Result: []byte(`1`)}}, Now: base(time.Second)},
			State:  storage.StateCompleted, Output: []byte(`1`),
		}}
	}
	sql := s.count(func(ctx context.Context) {
		errs, err := s.FinishRuns(ctx, ends)
		require.NoError(t, err)
		for _, err := range errs {
			require.NoError(t, err)
		}
	})
	require.Len(t, sql, n, "one finish statement per run: %v", sql)
	for _, q := range sql {
		require.True(t, strings.HasPrefix(q, "batch: "), "every statement rides the one batch: %s", q)
	}
	for _, w := range got {
		stored, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, storage.StateCompleted, stored.State)
	}
}
