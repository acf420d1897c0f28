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

// Mailboxes, tags and bulk creation on PostgreSQL: the outcomes, the races the statements
// must survive, and what each unit costs in statements.

// claimOne creates a workflow and claims it, returning its lease.
func claimOne(t *testing.T, s storage.Storage, name string, now time.Time) storage.Workflow {
	t.Helper()
	ctx := t.Context()
	_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: name, Key: "k", Now: now})
	require.NoError(t, err)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, Names: []string{name}, TTL: time.Hour, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 1)
	return got[0]
}

// TestSendMessageWakes: a message wakes an idle workflow waiting on its topic (RunAt moves
// to the send's Now) and a running one (the wake is kept for FinishRun), leaves others
// alone, and a listener hears of the idle one woken.
func TestSendMessageWakes(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()

	// Idle, waiting on "orders" with no RunAt: the message makes it runnable at its Now.
	w := claimOne(t, s, "waiter", base(0))
	require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{
		Commit: storage.Commit{Now: base(time.Second)}, State: storage.StateIdle,
		Wait: storage.Wait{Kind: storage.WaitMessage, Step: "recv$orders", Data: []byte("orders")},
	}))
	// Another topic leaves it waiting.
	_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "other", Payload: []byte(`0`), Now: base(2 * time.Second)})
	require.NoError(t, err)
	require.True(t, created)
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.True(t, got.RunAt.IsZero(), "a message on another topic does not wake: %v", got.RunAt)

	listenCtx, stop := context.WithCancel(ctx)
	defer stop()
	wake, err := s.Listen(listenCtx)
	require.NoError(t, err)
	eventually(t, 10*time.Second, func() bool { return len(listenerPIDs(t, s)) == 1 }, "the store listens")
	for len(wake) > 0 {
		<-wake
	}
	msg, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "orders", Payload: []byte(`{"n":1}`), Now: base(3 * time.Second)})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, w.ID, msg.WorkflowID)
	require.Equal(t, "orders", msg.Topic)
	require.JSONEq(t, `{"n":1}`, string(msg.Payload))
	require.True(t, base(3*time.Second).Equal(msg.CreatedAt))
	require.Empty(t, msg.ConsumedBy)
	require.True(t, msg.ConsumedAt.IsZero())
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for a workflow a message made runnable")
	}
	got, err = s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.True(t, base(3*time.Second).Equal(got.RunAt), "woken at the send's Now: %v", got.RunAt)
	require.True(t, base(time.Second).Equal(got.UpdatedAt), "a send leaves UpdatedAt: %v", got.UpdatedAt)

	// Running: the wake is kept, so a run that decides to wait on a later time suspends no
	// later than the send.
	r := claimOne(t, s, "runner", base(0))
	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: r.ID, Topic: "t", Payload: []byte(`1`), Now: base(5 * time.Second)})
	require.NoError(t, err)
	require.NoError(t, s.FinishRun(ctx, r.Lease(), storage.Finish{
		Commit: storage.Commit{Now: base(6 * time.Second)}, State: storage.StateIdle, RunAt: base(time.Hour),
		Wait: storage.Wait{Kind: storage.WaitMessage, Data: []byte("t")},
	}))
	got, err = s.GetWorkflow(ctx, r.ID)
	require.NoError(t, err)
	require.True(t, base(5*time.Second).Equal(got.RunAt), "the kept wake: %v", got.RunAt)
}

// TestSendMessageStates: unknown workflows, final ones, stalled ones, and keys.
func TestSendMessageStates(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()

	_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: 12345, Topic: "t", Now: base(0)})
	require.ErrorIs(t, err, storage.ErrNotFound)

	// A keyed message is stored once; the second send returns it.
	w := claimOne(t, s, "keys", base(0))
	first, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "k1", Payload: []byte(`1`), Now: base(time.Second)})
	require.NoError(t, err)
	require.True(t, created)
	again, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "other", Key: "k1", Payload: []byte(`2`), Now: base(2 * time.Second)})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, first, again, "the stored message wins, whatever the topic")
	// Keyless messages never collide.
	a, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Payload: []byte(`3`), Now: base(3 * time.Second)})
	require.NoError(t, err)
	b, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Payload: []byte(`3`), Now: base(3 * time.Second)})
	require.NoError(t, err)
	require.True(t, created)
	require.Greater(t, b.ID, a.ID)

	// Consumed, then final: the keyed message is still returned; a new one is refused.
	msg, ok, err := s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{Commit: storage.Commit{Now: base(4 * time.Second)}, Topic: "t", Step: "recv$1"})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, first.ID, msg.ID)
	require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: base(5 * time.Second)}, State: storage.StateCompleted}))
	again, created, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "k1", Now: base(6 * time.Second)})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, "recv$1", again.ConsumedBy)
	require.True(t, base(4*time.Second).Equal(again.ConsumedAt))
	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "k2", Now: base(6 * time.Second)})
	require.ErrorIs(t, err, storage.ErrWrongState)
	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Now: base(6 * time.Second)})
	require.ErrorIs(t, err, storage.ErrWrongState)
	var n int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM `+s.messages+` WHERE workflow_id = $1`, w.ID).Scan(&n))
	require.Equal(t, 3, n, "a refused send stores nothing")

	// Stalled: the message is kept for after a retry, and nothing is woken.
	st := claimOne(t, s, "stalled", base(0))
	require.NoError(t, s.FinishRun(ctx, st.Lease(), storage.Finish{Commit: storage.Commit{Now: base(time.Second)}, State: storage.StateStalled}))
	_, created, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: st.ID, Topic: "t", Now: base(2 * time.Second)})
	require.NoError(t, err)
	require.True(t, created)
	got, err := s.GetWorkflow(ctx, st.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateStalled, got.State)
	require.True(t, got.RunAt.IsZero())
}

// TestConsumeMessage: messages of a topic are consumed oldest first into completed step
// records, under the lease's fence, with the commit written in any case.
func TestConsumeMessage(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()
	w := claimOne(t, s, "consumer", base(0))
	for i, topic := range []string{"a", "b", "a"} {
		_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: topic, Payload: []byte(fmt.Sprint(i)), Now: base(time.Duration(i) * time.Second)})
		require.NoError(t, err)
	}
	commit := func(d time.Duration, steps ...storage.Step) storage.Commit {
		return storage.Commit{Steps: steps, Values: []byte(fmt.Sprintf(`{"at":%d}`, d/time.Second)), Now: base(d)}
	}
	// A pending step record of the name the message goes to is replaced, keeping its ID.
	require.NoError(t, s.SaveSteps(ctx, w.Lease(), storage.Commit{Steps: []storage.Step{{Name: "recv$a1", State: storage.StepPending, Meta: []byte(`{}`), LastError: "x", Attempts: 3}}, Now: base(9 * time.Second)}))
	_, before, err := s.Load(ctx, w.ID)
	require.NoError(t, err)

	msg, ok, err := s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{
		Commit: commit(10*time.Second, storage.Step{Name: "before", State: storage.StepCompleted, Attempts: 1}),
		Topic:  "a", Step: "recv$a1",
	})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "0", string(msg.Payload))
	require.Equal(t, "recv$a1", msg.ConsumedBy)
	require.True(t, base(10*time.Second).Equal(msg.ConsumedAt))

	msg, ok, err = s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{Commit: commit(11 * time.Second), Topic: "a", Step: "recv$a2"})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "2", string(msg.Payload), "the next message of the topic, skipping other topics")

	_, ok, err = s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{Commit: commit(12 * time.Second), Topic: "a", Step: "recv$a3"})
	require.NoError(t, err)
	require.False(t, ok, "topic a is empty")

	got, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.JSONEq(t, `{"at":12}`, string(got.Values), "the commit is written with or without a message")
	byName := map[string]storage.Step{}
	for _, st := range steps {
		byName[st.Name] = st
	}
	require.NotContains(t, byName, "recv$a3", "no message, no step record")
	a1 := byName["recv$a1"]
	require.Equal(t, before[0].ID, a1.ID, "a replaced record keeps its ID")
	require.Equal(t, storage.StepCompleted, a1.State)
	require.Equal(t, 1, a1.Attempts)
	require.Equal(t, "0", string(a1.Result))
	require.Empty(t, a1.Meta)
	require.Empty(t, a1.LastError)
	require.True(t, base(10*time.Second).Equal(a1.CompletedAt))
	require.True(t, base(9*time.Second).Equal(a1.CreatedAt))
	require.Less(t, byName["before"].ID, byName["recv$a2"].ID, "the commit's new records come first")

	// A lost lease consumes nothing and writes nothing.
	stale := w.Lease()
	stale.Token--
	_, _, err = s.ConsumeMessage(ctx, stale, storage.ConsumeRequest{Commit: commit(13 * time.Second), Topic: "b", Step: "recv$b"})
	require.ErrorIs(t, err, storage.ErrLeaseLost)
	require.NoError(t, s.Cancel(ctx, w.ID, base(14*time.Second)))
	_, _, err = s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{Commit: commit(15 * time.Second), Topic: "b", Step: "recv$b"})
	require.ErrorIs(t, err, storage.ErrCancelled)
	var unconsumed int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM `+s.messages+` WHERE consumed_at IS NULL`).Scan(&unconsumed))
	require.Equal(t, 1, unconsumed, "b's message is still there")
}

// TestConsumeMessageConcurrent: many consumes of one lease at once take each message once
// and write one step record per message taken.
func TestConsumeMessageConcurrent(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()
	w := claimOne(t, s, "race", base(0))
	const msgs, consumers = 20, 8
	for i := range msgs {
		_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Payload: []byte(fmt.Sprint(i)), Now: base(0)})
		require.NoError(t, err)
	}
	var (
		mu   sync.Mutex
		seen = map[int64]string{}
		wg   sync.WaitGroup
	)
	for c := range consumers {
		wg.Go(func() {
			for i := 0; ; i++ {
				step := fmt.Sprintf("recv$%d_%d", c, i)
				msg, ok, err := s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{Commit: storage.Commit{Now: base(time.Second)}, Topic: "t", Step: step})
				if !ok || err != nil {
					require.NoError(t, err)
					return
				}
				mu.Lock()
				_, dup := seen[msg.ID]
				seen[msg.ID] = step
				mu.Unlock()
				require.False(t, dup, "message %d consumed twice", msg.ID)
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, msgs)
	_, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Len(t, steps, msgs)
	for _, st := range steps {
		require.Equal(t, storage.StepCompleted, st.State)
	}
}

// TestSendMessageRaces: the two races of SendMessage's snapshot. A send waiting for the
// workflow's lock while another transaction stores a message under the same key (and, the
// second time, also cancels the workflow) returns that message with created == false, not a
// refusal: the statement finds nothing it can answer with and runs once more.
func TestSendMessageRaces(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	for _, cancel := range []bool{false, true} {
		name := fmt.Sprintf("race-%v", cancel)
		w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: name, Key: "k", Now: base(0)})
		require.NoError(t, err)

		tx, err := s.pool.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `SELECT 1 FROM `+s.workflows+` WHERE id = $1 FOR UPDATE`, w.ID)
		require.NoError(t, err)
		var stored int64
		require.NoError(t, tx.QueryRow(ctx, `INSERT INTO `+s.messages+` (workflow_id, topic, msg_key, payload, created_at)
			VALUES ($1, 't', 'dup', '\x31', $2) RETURNING id`, w.ID, base(time.Second)).Scan(&stored))
		if cancel {
			_, err = tx.Exec(ctx, `UPDATE `+s.workflows+` SET state = 'cancelled', run_at = NULL, finished_at = $2 WHERE id = $1`, w.ID, base(time.Second))
			require.NoError(t, err)
		}

		type result struct {
			msg     storage.Message
			created bool
			err     error
			sql     []string
		}
		done := make(chan result, 1)
		go func() {
			var r result
			r.sql = s.count(func(ctx context.Context) {
				r.msg, r.created, r.err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "dup", Payload: []byte(`2`), Now: base(2 * time.Second)})
			})
			done <- r
		}()
		eventually(t, 10*time.Second, func() bool { return lockWaiters(t, s.Store) > 0 }, "the send waits for the workflow's lock")
		require.NoError(t, tx.Commit(ctx))
		r := <-done
		require.NoError(t, r.err, "cancelled %v", cancel)
		require.False(t, r.created)
		require.Equal(t, stored, r.msg.ID)
		require.Equal(t, "1", string(r.msg.Payload))
		require.Len(t, r.sql, 2, "the statement and one more after the race:\n%s", strings.Join(r.sql, "\n"))
	}
}

// lockWaiters counts the sessions waiting for a lock on s's tables.
func lockWaiters(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	require.NoError(t, testPool(t).QueryRow(t.Context(),
		`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, s.schema).Scan(&n))
	return n
}

// TestCreateWorkflows: a batch creates what is new and returns what exists, in batch order,
// with tags, IDs in batch order, and a notification for due rows.
func TestCreateWorkflows(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()
	old, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "bulk", Key: "b", Input: []byte(`"old"`), Now: base(0)})
	require.NoError(t, err)
	parent := claimOne(t, s, "parent", base(0))
	branch, err := s.SpawnBatch(ctx, parent.Lease(), storage.SpawnRequest{Branch: "branch$x", Steps: []storage.Step{{Name: "branch$x", State: storage.StepPending}}, Now: base(0)})
	require.NoError(t, err)

	ws := []storage.NewWorkflow{
		{Name: "bulk", Key: "c", Input: []byte(`"c"`), Tags: map[string]string{"team": "a", "empty": ""}, RunAt: base(time.Hour), Now: base(time.Second)},
		{Name: "bulk", Key: "b", Input: []byte(`"new"`), Tags: map[string]string{"team": "b"}, Now: base(time.Second)},
		{Name: "bulk", Key: "a", TraceContext: []byte(`{"traceparent":"x"}`), ParentStepID: branch.BranchStepID, Tags: map[string]string{}, Now: base(2 * time.Second)},
	}
	out, created, err := s.CreateWorkflows(ctx, ws)
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true}, created)
	require.Equal(t, old, out[1], "an existing workflow is returned unchanged")
	require.Less(t, out[0].ID, out[2].ID, "IDs follow the batch order")
	require.Equal(t, map[string]string{"team": "a", "empty": ""}, out[0].Tags)
	require.Nil(t, out[2].Tags, "empty tags are none")
	require.Equal(t, storage.StateIdle, out[0].State)
	require.True(t, base(time.Hour).Equal(out[0].RunAt))
	require.True(t, base(2*time.Second).Equal(out[2].RunAt), "RunAt defaults to the workflow's own Now")
	require.True(t, base(2*time.Second).Equal(out[2].CreatedAt))
	require.Equal(t, branch.BranchStepID, out[2].ParentStepID)
	require.JSONEq(t, `{"traceparent":"x"}`, string(out[2].TraceContext))
	n, err := s.CountChildren(ctx, storage.ChildQuery{StepIDs: []int64{branch.BranchStepID}, States: []storage.State{storage.StateIdle}, Cap: 10})
	require.NoError(t, err)
	require.Equal(t, 1, n, "a created child counts as one")

	// Every read returns the tags.
	got, err := s.GetWorkflow(ctx, out[0].ID)
	require.NoError(t, err)
	require.Equal(t, out[0], got)
	got, err = s.FindWorkflow(ctx, "bulk", "c")
	require.NoError(t, err)
	require.Equal(t, out[0], got)
	got, _, err = s.Load(ctx, out[0].ID)
	require.NoError(t, err)
	require.Equal(t, out[0], got)

	// Again: nothing is created and the same rows come back.
	again, created, err := s.CreateWorkflows(ctx, ws)
	require.NoError(t, err)
	require.Equal(t, []bool{false, false, false}, created)
	require.Equal(t, out, again)

	// A new workflow due by its Now is announced.
	listenCtx, stop := context.WithCancel(ctx)
	defer stop()
	wake, err := s.Listen(listenCtx)
	require.NoError(t, err)
	eventually(t, 10*time.Second, func() bool { return len(listenerPIDs(t, s)) == 1 }, "the store listens")
	for len(wake) > 0 {
		<-wake
	}
	_, created, err = s.CreateWorkflows(ctx, []storage.NewWorkflow{
		{Name: "bulk", Key: "later", RunAt: base(time.Hour), Now: base(time.Second)},
		{Name: "bulk", Key: "now", Now: base(time.Second)},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true}, created)
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for a batch with a workflow due at once")
	}
}

// TestCreateWorkflowsConcurrentRow: a row another transaction commits while the batch's
// statement runs is skipped by its insert and invisible to its read; one more statement reads
// it, and the batch returns it as existing.
func TestCreateWorkflowsConcurrentRow(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	tx, err := s.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	var theirs int64
	require.NoError(t, tx.QueryRow(ctx, `INSERT INTO `+s.workflows+` (name, key, input, state, created_at, updated_at)
		VALUES ('race', 'b', '\x74', 'idle', $1, $1) RETURNING id`, base(0)).Scan(&theirs))

	type result struct {
		out     []storage.Workflow
		created []bool
		err     error
		sql     []string
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.sql = s.count(func(ctx context.Context) {
			r.out, r.created, r.err = s.CreateWorkflows(ctx, []storage.NewWorkflow{
				{Name: "race", Key: "a", Now: base(time.Second)},
				{Name: "race", Key: "b", Now: base(time.Second)},
				{Name: "race", Key: "c", Now: base(time.Second)},
			})
		})
		done <- r
	}()
	eventually(t, 10*time.Second, func() bool { return lockWaiters(t, s.Store) > 0 }, "the batch waits for the other insert")
	require.NoError(t, tx.Commit(ctx))
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, []bool{true, false, true}, r.created)
	require.Equal(t, theirs, r.out[1].ID)
	require.Equal(t, "t", string(r.out[1].Input))
	require.Len(t, r.sql, 2, "the batch and one read of the row it missed:\n%s", strings.Join(r.sql, "\n"))
}

// TestStatementsMessagesAndBulk: CreateWorkflows is one statement per batch, however large;
// SendMessage and ConsumeMessage are one statement each, in every outcome but a race.
func TestStatementsMessagesAndBulk(t *testing.T) {
	t.Parallel()
	s := newCountingStore(t)
	ctx := t.Context()
	batch := make([]storage.NewWorkflow, storage.MaxCreateBatch)
	for i := range batch {
		batch[i] = storage.NewWorkflow{Name: "bulk", Key: fmt.Sprint(i), Input: []byte(`{}`), Tags: map[string]string{"i": fmt.Sprint(i % 7)}, Now: base(0)}
	}
	s.requireOne("CreateWorkflows of 5,000 new workflows", func(ctx context.Context) {
		_, created, err := s.CreateWorkflows(ctx, batch)
		require.NoError(t, err)
		require.NotContains(t, created, false)
	})
	more := append(batch[:2500:2500], make([]storage.NewWorkflow, 2500)...)
	for i := 2500; i < len(more); i++ {
		more[i] = storage.NewWorkflow{Name: "bulk", Key: fmt.Sprint("n", i), Now: base(0)}
	}
	s.requireOne("CreateWorkflows of 2,500 existing and 2,500 new workflows", func(ctx context.Context) {
		out, created, err := s.CreateWorkflows(ctx, more)
		require.NoError(t, err)
		require.False(t, created[0])
		require.True(t, created[4999])
		require.Equal(t, map[string]string{"i": "3"}, out[3].Tags)
	})
	s.requireOne("ListWorkflows by tag", func(ctx context.Context) {
		page, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "bulk", Tags: map[string]string{"i": "3"}, Limit: 1000})
		require.NoError(t, err)
		require.Len(t, page, 714)
		for _, w := range page {
			require.Equal(t, "3", w.Tags["i"])
		}
	})

	w := claimOne(t, s, "mail", base(0))
	s.requireOne("SendMessage to a running workflow", func(ctx context.Context) {
		_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "k", Payload: []byte(`1`), Now: base(time.Second)})
		require.NoError(t, err)
		require.True(t, created)
	})
	s.requireOne("SendMessage of a stored key", func(ctx context.Context) {
		_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "k", Payload: []byte(`1`), Now: base(time.Second)})
		require.NoError(t, err)
		require.False(t, created)
	})
	s.requireOne("ConsumeMessage of a waiting message, with a commit", func(ctx context.Context) {
		_, ok, err := s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{
			Commit: storage.Commit{Steps: []storage.Step{{Name: "s", State: storage.StepCompleted}}, Errors: []storage.ErrorRecord{{Message: "m"}}, Values: []byte(`{}`), Now: base(2 * time.Second)},
			Topic:  "t", Step: "recv$t",
		})
		require.NoError(t, err)
		require.True(t, ok)
	})
	s.requireOne("ConsumeMessage of an empty topic", func(ctx context.Context) {
		_, ok, err := s.ConsumeMessage(ctx, w.Lease(), storage.ConsumeRequest{Commit: storage.Commit{Now: base(2 * time.Second)}, Topic: "t", Step: "recv$t2"})
		require.NoError(t, err)
		require.False(t, ok)
	})
	require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{
		Commit: storage.Commit{Now: base(3 * time.Second)}, State: storage.StateIdle,
		Wait: storage.Wait{Kind: storage.WaitMessage, Data: []byte("t")},
	}))
	s.requireOne("SendMessage waking an idle workflow", func(ctx context.Context) {
		_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Now: base(4 * time.Second)})
		require.NoError(t, err)
		require.True(t, created)
	})
	require.NoError(t, s.Cancel(ctx, w.ID, base(5*time.Second)))
	s.requireOne("SendMessage refused by a final workflow", func(ctx context.Context) {
		_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "new", Now: base(6 * time.Second)})
		require.ErrorIs(t, err, storage.ErrWrongState)
	})
	s.requireOne("SendMessage of a stored key to a final workflow", func(ctx context.Context) {
		_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "k", Now: base(6 * time.Second)})
		require.NoError(t, err)
		require.False(t, created)
	})
	s.requireOne("SendMessage to an unknown workflow", func(ctx context.Context) {
		_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID + 100_000, Topic: "t", Now: base(6 * time.Second)})
		require.ErrorIs(t, err, storage.ErrNotFound)
	})
	// DeleteFinished takes the messages with the workflow, in its one transaction.
	sql := s.count(func(ctx context.Context) {
		res, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: base(time.Hour)})
		require.NoError(t, err)
		require.Equal(t, 1, res.Deleted)
	})
	require.LessOrEqual(t, len(sql), 4, "DeleteFinished: BEGIN, two statements, COMMIT:\n%s", strings.Join(sql, "\n"))
	var left int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM `+s.messages).Scan(&left))
	require.Zero(t, left, "the deleted workflow's messages are gone")
}

// TestTagsEverywhere: tags come back from Claim, Spawn (children keep theirs), List and
// CreateWorkflow, and a list filter matches all of its tags, an empty value only a tag
// stored empty.
func TestTagsEverywhere(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()
	p, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "p", Key: "k", Tags: map[string]string{"team": "x", "tier": ""}, Now: base(0)})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"team": "x", "tier": ""}, p.Tags)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base(0)})
	require.NoError(t, err)
	require.Equal(t, p.Tags, got[0].Tags)
	res, err := s.SpawnBatch(ctx, got[0].Lease(), storage.SpawnRequest{
		Branch: "branch$b", Steps: []storage.Step{{Name: "branch$b", State: storage.StepPending}},
		Children: []storage.NewWorkflow{
			{Name: "c", Key: "1", Tags: map[string]string{"team": "x"}},
			{Name: "c", Key: "2", Tags: map[string]string{"team": "y", "tier": ""}},
			{Name: "c", Key: "3"},
		},
		Now: base(time.Second),
	})
	require.NoError(t, err)
	require.Equal(t, 3, res.Inserted)
	keys := func(f storage.ListFilter) []string {
		t.Helper()
		page, err := s.ListWorkflows(ctx, f)
		require.NoError(t, err)
		var out []string
		for _, w := range page {
			out = append(out, w.Name+"/"+w.Key)
		}
		return out
	}
	require.Equal(t, []string{"p/k", "c/1"}, keys(storage.ListFilter{Tags: map[string]string{"team": "x"}}))
	require.Equal(t, []string{"p/k", "c/2"}, keys(storage.ListFilter{Tags: map[string]string{"tier": ""}}), "empty matches empty, not missing")
	require.Equal(t, []string{"c/2"}, keys(storage.ListFilter{Tags: map[string]string{"tier": "", "team": "y"}}))
	require.Equal(t, []string{"c/2"}, keys(storage.ListFilter{ParentStepID: res.BranchStepID, Tags: map[string]string{"team": "y"}}))
	require.Empty(t, keys(storage.ListFilter{Tags: map[string]string{"team": "z"}}))
	page, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "c"})
	require.NoError(t, err)
	require.Len(t, page, 3)
	require.Nil(t, page[2].Tags)
	require.Equal(t, map[string]string{"team": "y", "tier": ""}, page[1].Tags)
	// Quotes and JSON metacharacters are data.
	odd := map[string]string{`k"\`: `v'"}{`, "ü": "\u00e9"}
	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "odd", Key: "k", Tags: odd, Now: base(0)})
	require.NoError(t, err)
	require.Equal(t, odd, w.Tags)
	require.Equal(t, []string{"odd/k"}, keys(storage.ListFilter{Tags: map[string]string{`k"\`: `v'"}{`}}))
}

// TestMigrateFromVersion1: tables made by version 1 (with workflows, steps and error records
// in them) move to the current version with Migrate; the old rows have no tags and no flow,
// take messages and are claimed.
func TestMigrateFromVersion1(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	s := storeIn(t, pool, freshSchema(t))
	ms, err := migrations()
	require.NoError(t, err)
	require.Equal(t, 3, len(ms), "this test knows versions 1 to 3")
	require.NoError(t, pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error { return s.migrate(t.Context(), tx, ms[:1]) }))
	require.Equal(t, []int{1}, versions(t, s))
	_, err = s.GetWorkflow(t.Context(), 1)
	require.ErrorIs(t, err, storage.ErrNotMigrated, "a version 1 schema needs Migrate")

	// A workflow written by a version 1 build, with a step and an error record.
	ctx := t.Context()
	var id int64
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO `+s.workflows+` (name, key, state, run_at, created_at, updated_at)
		VALUES ('old', 'k', 'idle', $1, $1, $1) RETURNING id`, base(0)).Scan(&id))
	_, err = pool.Exec(ctx, `INSERT INTO `+s.steps+` (workflow_id, name, state, created_at, updated_at) VALUES ($1, 's', 'completed', $2, $2)`, id, base(0))
	require.NoError(t, err)

	require.NoError(t, s.Migrate(ctx))
	require.Equal(t, []int{1, 2, 3}, versions(t, s))
	w, steps, err := s.Load(ctx, id)
	require.NoError(t, err)
	require.Nil(t, w.Tags)
	require.Empty(t, w.Flow)
	require.Len(t, steps, 1)
	_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: id, Topic: "t", Now: base(time.Second)})
	require.NoError(t, err)
	require.True(t, created)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base(time.Second)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	msg, ok, err := s.ConsumeMessage(ctx, got[0].Lease(), storage.ConsumeRequest{Commit: storage.Commit{Now: base(2 * time.Second)}, Topic: "t", Step: "recv"})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, id, msg.WorkflowID)
}

// TestMailboxSimpleProtocol: tags, bulk creation and mailboxes work over a pool that sends
// every statement with the simple protocol (as behind PgBouncer), where pgx encodes the
// arguments as text.
func TestMailboxSimpleProtocol(t *testing.T) {
	t.Parallel()
	pool := ownPool(t, 2, func(c *pgxpool.Config) { c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	s := newStore(t, pool)
	ctx := t.Context()
	tags := map[string]string{"team": `a"b`, "empty": ""}
	out, created, err := s.CreateWorkflows(ctx, []storage.NewWorkflow{
		{Name: "simple", Key: "a", Input: []byte{0, 1, 2}, Tags: tags, Now: base(0)},
		{Name: "simple", Key: "b", Now: base(0)},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true}, created)
	require.Equal(t, tags, out[0].Tags)
	require.Nil(t, out[1].Tags)
	page, err := s.ListWorkflows(ctx, storage.ListFilter{Tags: map[string]string{"team": `a"b`}})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, out[0], page[0])

	msg, isNew, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: out[0].ID, Topic: "t", Key: "k", Payload: []byte{0, 255}, Now: base(time.Second)})
	require.NoError(t, err)
	require.True(t, isNew)
	again, isNew, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: out[0].ID, Topic: "t", Key: "k", Now: base(2 * time.Second)})
	require.NoError(t, err)
	require.False(t, isNew)
	require.Equal(t, msg, again)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base(time.Second)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, tags, got[0].Tags)
	taken, ok, err := s.ConsumeMessage(ctx, got[0].Lease(), storage.ConsumeRequest{Commit: storage.Commit{Now: base(3 * time.Second)}, Topic: "t", Step: "recv"})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []byte{0, 255}, taken.Payload)
	_, steps, err := s.Load(ctx, out[0].ID)
	require.NoError(t, err)
	require.Len(t, steps, 1)
	require.Equal(t, []byte{0, 255}, steps[0].Result)
}

// TestFinishRunOnAWaitingMessage: a run that suspends to receive on a topic whose message is
// already waiting (it committed after the run looked) is runnable at once, whatever became of
// the send's own wake: the finish checks the mailbox in its statement.
func TestFinishRunOnAWaitingMessage(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()
	w := claimOne(t, s, "late", base(0))
	// Stored while the run holds its lease, as a send racing the run's receive would be; the
	// send's remembered wake is then dropped by a new claim, so only the finish can notice.
	_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "orders", Payload: []byte(`1`), Now: base(time.Second)})
	require.NoError(t, err)
	require.True(t, created)
	_, err = s.pool.Exec(ctx, "UPDATE "+s.workflows+" SET wake_at = NULL WHERE id = $1", w.ID)
	require.NoError(t, err)
	require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{
		Commit: storage.Commit{Now: base(2 * time.Second)}, State: storage.StateIdle,
		Wait: storage.Wait{Kind: storage.WaitMessage, Step: "receive$o", Data: []byte("orders")},
	}))
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.True(t, base(2*time.Second).Equal(got.RunAt), "runnable at the finish's Now: %v", got.RunAt)

	// A waiting message on another topic does not.
	w2 := claimOne(t, s, "other", base(0))
	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w2.ID, Topic: "else", Payload: []byte(`1`), Now: base(time.Second)})
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, "UPDATE "+s.workflows+" SET wake_at = NULL WHERE id = $1", w2.ID)
	require.NoError(t, err)
	require.NoError(t, s.FinishRun(ctx, w2.Lease(), storage.Finish{
		Commit: storage.Commit{Now: base(2 * time.Second)}, State: storage.StateIdle,
		Wait: storage.Wait{Kind: storage.WaitMessage, Step: "receive$o", Data: []byte("orders")},
	}))
	got, err = s.GetWorkflow(ctx, w2.ID)
	require.NoError(t, err)
	require.True(t, got.RunAt.IsZero(), "a message on another topic does not wake: %v", got.RunAt)
}
