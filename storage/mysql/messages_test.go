package mysql

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// claimOne claims the workflow named name (the only runnable one of that name) and returns
// its lease.
func claimOne(t *testing.T, s *Store, name string, now time.Time) storage.Lease {
	t.Helper()
	got := claimAll(t, s, now, 1, name)
	require.Len(t, got, 1)
	return got[0].Lease()
}

func send(t *testing.T, s *Store, id int64, topic, key, payload string, now time.Time) (storage.Message, bool) {
	t.Helper()
	m, created, err := s.SendMessage(context.Background(), storage.NewMessage{WorkflowID: id, Topic: topic, Key: key, Payload: []byte(payload), Now: now})
	require.NoError(t, err)
	return m, created
}

// countMessages counts the rows of the messages table of one workflow.
func countMessages(t *testing.T, s *Store, id int64) int {
	t.Helper()
	var n int
	require.NoError(t, s.db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+s.messages+" WHERE workflow_id = ?", id).Scan(&n))
	return n
}

func TestSendAndConsumeMessages(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	w := create(t, s, "mbox", "a", at(0))

	// Sends are stored in order; a key makes a send idempotent whatever the topic.
	m1, created := send(t, s, w.ID, "orders", "k1", `"one"`, at(time.Second))
	require.True(t, created)
	require.Equal(t, storage.Message{ID: m1.ID, WorkflowID: w.ID, Topic: "orders", Key: "k1", Payload: []byte(`"one"`), CreatedAt: at(time.Second)}, m1)
	m2, created := send(t, s, w.ID, "orders", "", `"two"`, at(2*time.Second))
	require.True(t, created)
	m3, created := send(t, s, w.ID, "orders", "", `"two"`, at(2*time.Second))
	require.True(t, created, "messages without a key are never deduplicated")
	require.Less(t, m1.ID, m2.ID)
	require.Less(t, m2.ID, m3.ID)
	again, created := send(t, s, w.ID, "other topic", "k1", `"different"`, at(3*time.Second))
	require.False(t, created)
	require.Equal(t, m1, again, "the stored message is returned for a taken key")
	other, created := send(t, s, w.ID, "other topic", "k1 ", `"trailing space"`, at(3*time.Second))
	require.True(t, created, "keys compare byte for byte")
	require.Equal(t, 4, countMessages(t, s, w.ID))

	// The send did not wake an idle workflow that waits for nothing: RunAt is unchanged.
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, at(0), got.RunAt)

	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID + 1000, Topic: "orders", Now: at(0)})
	require.ErrorIs(t, err, storage.ErrNotFound)
	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "", Now: at(0)})
	require.ErrorIs(t, err, storage.ErrInvalid)

	// Consume in ID order under the lease, each into its step, with the commit.
	l := claimOne(t, s, "mbox", at(4*time.Second))
	msg, ok, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{
		Commit: storage.Commit{Steps: []storage.Step{{Name: "before", State: storage.StepCompleted, Attempts: 1, Result: []byte(`7`)}},
			Values: []byte(`{"v":1}`), Errors: []storage.ErrorRecord{{Step: "before", Attempt: 1, Message: "noted"}}, Now: at(5 * time.Second)},
		Topic: "orders", Step: "recv$1",
	})
	require.NoError(t, err)
	require.True(t, ok)
	want := m1
	want.ConsumedBy, want.ConsumedAt = "recv$1", at(5*time.Second)
	require.Equal(t, want, msg)

	for i, wantMsg := range []storage.Message{m2, m3} {
		step := fmt.Sprintf("recv$%d", i+2)
		msg, ok, err = s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(6 * time.Second)}, Topic: "orders", Step: step})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, wantMsg.ID, msg.ID)
		require.Equal(t, step, msg.ConsumedBy)
	}
	// Nothing left on the topic: the commit is written alone.
	msg, ok, err = s.ConsumeMessage(ctx, l, storage.ConsumeRequest{
		Commit: storage.Commit{Steps: []storage.Step{{Name: "after", State: storage.StepPending}}, Now: at(7 * time.Second)},
		Topic:  "orders", Step: "recv$4",
	})
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, storage.Message{}, msg)

	wf, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, []byte(`{"v":1}`), wf.Values)
	require.Equal(t, "noted", wf.LastError)
	require.Equal(t, at(7*time.Second), wf.UpdatedAt)
	byName := map[string]storage.Step{}
	var names []string
	for _, st := range steps {
		byName[st.Name] = st
		names = append(names, st.Name)
	}
	require.Equal(t, []string{"before", "recv$1", "recv$2", "recv$3", "after"}, names, "in ID order: commit steps first")
	r1 := byName["recv$1"]
	require.Equal(t, storage.StepCompleted, r1.State)
	require.Equal(t, 1, r1.Attempts)
	require.Equal(t, []byte(`"one"`), r1.Result)
	require.Empty(t, r1.Meta)
	require.Empty(t, r1.LastError)
	require.Equal(t, at(5*time.Second), r1.CompletedAt)
	require.Equal(t, at(5*time.Second), r1.CreatedAt)
	_, ok = byName["recv$4"]
	require.False(t, ok, "no message, no step")

	// A consumed keyed message is still returned for its key, with its consumption.
	again, created = send(t, s, w.ID, "orders", "k1", `"x"`, at(8*time.Second))
	require.False(t, created)
	require.Equal(t, want, again)

	// The other topic still holds its message.
	msg, ok, err = s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(9 * time.Second)}, Topic: "other topic", Step: "recv$o"})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, other.ID, msg.ID)
	require.Equal(t, "k1 ", msg.Key)

	// Consuming into a step that was completed before keeps its completion time.
	send(t, s, w.ID, "orders", "", `"late"`, at(10*time.Second))
	msg, ok, err = s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(11 * time.Second)}, Topic: "orders", Step: "recv$1"})
	require.NoError(t, err)
	require.True(t, ok)
	_, steps, err = s.Load(ctx, w.ID)
	require.NoError(t, err)
	for _, st := range steps {
		if st.Name == "recv$1" {
			require.Equal(t, []byte(`"late"`), st.Result)
			require.Equal(t, at(5*time.Second), st.CompletedAt)
			require.Equal(t, at(11*time.Second), st.UpdatedAt)
		}
	}

	// A stale lease consumes nothing and writes nothing.
	send(t, s, w.ID, "orders", "", `"kept"`, at(12*time.Second))
	stale := l
	stale.Token--
	_, _, err = s.ConsumeMessage(ctx, stale, storage.ConsumeRequest{
		Commit: storage.Commit{Steps: []storage.Step{{Name: "stale", State: storage.StepPending}}, Now: at(12 * time.Second)},
		Topic:  "orders", Step: "recv$stale",
	})
	require.ErrorIs(t, err, storage.ErrLeaseLost)
	_, steps, err = s.Load(ctx, w.ID)
	require.NoError(t, err)
	for _, st := range steps {
		require.NotEqual(t, "stale", st.Name)
		require.NotEqual(t, "recv$stale", st.Name)
	}
	_, _, err = s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(12 * time.Second)}, Topic: "orders", Step: ""})
	require.ErrorIs(t, err, storage.ErrInvalid)

	// A final workflow takes no new message but still answers for its keys; cleanup deletes
	// its messages with it.
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(13 * time.Second)}, State: storage.StateCompleted}))
	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "orders", Payload: []byte(`1`), Now: at(14 * time.Second)})
	require.ErrorIs(t, err, storage.ErrWrongState)
	_, _, err = s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "orders", Key: "new", Payload: []byte(`1`), Now: at(14 * time.Second)})
	require.ErrorIs(t, err, storage.ErrWrongState)
	again, created = send(t, s, w.ID, "orders", "k1", `"x"`, at(14*time.Second))
	require.False(t, created)
	require.Equal(t, want, again)
	require.Equal(t, 6, countMessages(t, s, w.ID))

	keep := create(t, s, "mbox", "b", at(0))
	send(t, s, keep.ID, "orders", "k1", `1`, at(0))
	res, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 1, res.Deleted)
	require.Zero(t, countMessages(t, s, w.ID), "the messages of a deleted workflow are deleted with it")
	require.Equal(t, 1, countMessages(t, s, keep.ID))
}

func TestSendMessageWakes(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()

	// An idle workflow waiting for a message on the topic is made runnable at the send's Now;
	// one waiting on another topic, or for a signal, is left alone.
	park := func(key string, wait storage.Wait) storage.Workflow {
		w := create(t, s, "waiter", key, at(0))
		l := claimOne(t, s, "waiter", at(0))
		require.Equal(t, w.ID, l.WorkflowID)
		require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(0)}, State: storage.StateIdle, RunAt: at(time.Hour), Wait: wait}))
		return w
	}
	onTopic := park("topic", storage.Wait{Kind: storage.WaitMessage, Data: []byte("go")})
	onOther := park("other", storage.Wait{Kind: storage.WaitMessage, Data: []byte("go ")})
	onSignal := park("signal", storage.Wait{Kind: storage.WaitSignal, Data: []byte("go")})
	for _, w := range []storage.Workflow{onTopic, onOther, onSignal} {
		send(t, s, w.ID, "go", "", `1`, at(time.Minute))
	}
	for _, tc := range []struct {
		w     storage.Workflow
		runAt time.Time
	}{{onTopic, at(time.Minute)}, {onOther, at(time.Hour)}, {onSignal, at(time.Hour)}} {
		got, err := s.GetWorkflow(ctx, tc.w.ID)
		require.NoError(t, err)
		require.Equal(t, tc.runAt, got.RunAt, "workflow %q", tc.w.Key)
	}
	// A later send does not move RunAt back.
	send(t, s, onTopic.ID, "go", "", `2`, at(2*time.Minute))
	got, err := s.GetWorkflow(ctx, onTopic.ID)
	require.NoError(t, err)
	require.Equal(t, at(time.Minute), got.RunAt)

	// A running workflow remembers the wake: its finish as idle runs it no later than the send.
	run := create(t, s, "runner", "r", at(0))
	l := claimOne(t, s, "runner", at(0))
	send(t, s, run.ID, "anything", "", `1`, at(30*time.Second))
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateIdle, RunAt: at(time.Hour),
		Wait: storage.Wait{Kind: storage.WaitMessage, Data: []byte("anything")}}))
	got, err = s.GetWorkflow(ctx, run.ID)
	require.NoError(t, err)
	require.Equal(t, at(30*time.Second), got.RunAt)
}

// TestSendMessageConcurrently: many senders of one key store one message; keyless sends to
// one workflow from many goroutines all land, with distinct IDs, consumed in ID order.
func TestSendMessageConcurrently(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	w := create(t, s, "busy", "k", at(0))
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		ids     = map[int64]bool{}
		errs    []error
	)
	for i := range n {
		wg.Go(func() {
			m, c, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "once", Payload: []byte(fmt.Sprint(i)), Now: at(0)})
			m2, _, err2 := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "u", Payload: []byte(fmt.Sprint(i)), Now: at(0)})
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err, err2)
			if err == nil && m.Key != "once" {
				errs = append(errs, fmt.Errorf("send of key %q returned key %q", "once", m.Key))
			}
			if err == nil && c {
				created++
			}
			if err2 == nil {
				ids[m2.ID] = true
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, created, "one send of the key stores it")
	require.Len(t, ids, n)
	require.Equal(t, n+1, countMessages(t, s, w.ID))

	l := claimOne(t, s, "busy", at(0))
	var last int64
	for i := range n {
		m, ok, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(time.Second)}, Topic: "u", Step: fmt.Sprint("u", i)})
		require.NoError(t, err)
		require.True(t, ok)
		require.Greater(t, m.ID, last)
		last = m.ID
	}
	_, ok, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(time.Second)}, Topic: "u", Step: "u-none"})
	require.NoError(t, err)
	require.False(t, ok)
}
