package storagetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Mailboxes: SendMessage appends to a workflow's mailbox (idempotent by key) and wakes a
// workflow waiting on the topic; ConsumeMessage, fenced by the lease, takes the next message
// of a topic into a step record.

// send sends a message and requires that the store answered it.
func (f *fixture) send(id int64, topic, key string, body []byte, now time.Time) (storage.Message, bool) {
	f.t.Helper()
	m, created, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: id, Topic: topic, Key: key, Payload: body, Now: now})
	require.NoError(f.t, err, "SendMessage to workflow %d on topic %q key %q", id, topic, key)
	require.Positive(f.t, m.ID, "SendMessage answered a message without an ID")
	return m, created
}

// sent sends a message that must be stored anew.
func (f *fixture) sent(id int64, topic, key string, body []byte, now time.Time) storage.Message {
	f.t.Helper()
	m, created := f.send(id, topic, key, body, now)
	require.True(f.t, created, "SendMessage to workflow %d on topic %q key %q must store a new message", id, topic, key)
	return m
}

// consume takes the next message on topic into step under l at now, writing c (Now set to
// now) with it, and requires that the store answered.
func (f *fixture) consume(l storage.Lease, topic, step string, c storage.Commit, now time.Time) (storage.Message, bool) {
	f.t.Helper()
	c.Now = now
	m, ok, err := f.s.ConsumeMessage(f.ctx, l, storage.ConsumeRequest{Commit: c, Topic: topic, Step: step})
	require.NoError(f.t, err, "ConsumeMessage on topic %q into step %q under lease %+v", topic, step, l)
	if !ok {
		require.Zero(f.t, m.ID, "ConsumeMessage found no message but answered one")
	}
	return m, ok
}

// park finishes the run of l at now to idle, waiting for a message on topic until runAt
// (zero: without a timeout).
func (f *fixture) park(l storage.Lease, topic string, runAt, now time.Time) {
	f.t.Helper()
	f.finish(l, storage.Finish{
		Commit: storage.Commit{Now: now},
		State:  storage.StateIdle,
		RunAt:  runAt,
		Wait:   storage.Wait{Kind: storage.WaitMessage, Step: "receive$" + topic, Data: []byte(topic)},
	})
}

// peek reads the message stored under key in workflow id without consuming it, through the
// idempotency of SendMessage: the send is answered with the stored message.
func (f *fixture) peek(id int64, key string) storage.Message {
	f.t.Helper()
	m, created, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: id, Topic: "peek", Key: key, Payload: []byte("peek"), Now: at(time.Hour)})
	require.NoError(f.t, err, "SendMessage with the key %q of a stored message", key)
	require.False(f.t, created, "no message with key %q was stored in workflow %d", key, id)
	return m
}

// requireMessage requires that got is want as the store answers it: the same ID, workflow,
// topic, key, payload and times.
func requireMessage(t *testing.T, want, got storage.Message, what string) {
	t.Helper()
	require.Equal(t, want.ID, got.ID, what+": id")
	require.Equal(t, want.WorkflowID, got.WorkflowID, what+": workflow id")
	require.Equal(t, want.Topic, got.Topic, what+": topic")
	require.Equal(t, want.Key, got.Key, what+": key")
	requireBytes(t, want.Payload, got.Payload, what+": payload")
	requireTime(t, want.CreatedAt, got.CreatedAt, what+": created at")
	require.Equal(t, want.ConsumedBy, got.ConsumedBy, what+": consumed by")
	requireTime(t, want.ConsumedAt, got.ConsumedAt, what+": consumed at")
	for _, tm := range []time.Time{got.CreatedAt, got.ConsumedAt} {
		if !tm.IsZero() {
			require.True(t, tm.Location() == time.UTC, "%s: want a time in UTC, got %v (location %q)", what, tm, tm.Location())
		}
	}
}

// testMessageSendStored: SendMessage answers the message as stored: a new positive ID (in
// send order), the workflow, topic, key and payload as given, CreatedAt the send's Now to the
// microsecond in UTC, and nothing consumed. Messages without a key are never merged.
func testMessageSendStored(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("mail.stored", "k", at(time.Hour))
	body := payload(1000, 9)
	a, created, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "orders", Key: "evt-1", Payload: body, Now: east(atMicro(time.Second))})
	require.NoError(t, err)
	require.True(t, created)
	requireMessage(t, storage.Message{ID: a.ID, WorkflowID: w.ID, Topic: "orders", Key: "evt-1", Payload: body, CreatedAt: atMicro(time.Second)}, a, "answered by SendMessage")
	b := f.sent(w.ID, "orders", "", nil, at(2*time.Second))
	c := f.sent(w.ID, "orders", "", nil, at(2*time.Second))
	d := f.sent(w.ID, "other", "", []byte("d"), at(3*time.Second))
	require.Greater(t, b.ID, a.ID, "message IDs increase in send order")
	require.Greater(t, c.ID, b.ID, "two messages without a key are two messages")
	require.Greater(t, d.ID, c.ID, "message IDs increase in send order, across topics")
	require.Empty(t, b.Key)
	require.Empty(t, b.Payload)

	// The same key in another workflow is another message.
	o := f.create("mail.stored", "other", at(time.Hour))
	e := f.sent(o.ID, "orders", "evt-1", []byte("e"), at(4*time.Second))
	require.NotEqual(t, a.ID, e.ID)
	require.Equal(t, o.ID, e.WorkflowID)

	// Sends change neither workflow (no wait on the topic): not its RunAt, not its UpdatedAt.
	got := f.get(w.ID)
	requireTime(t, at(time.Hour), got.RunAt, "run at of a workflow not waiting for a message")
	requireTime(t, at(0), got.UpdatedAt, "updated at after sends (a send carries no write of the workflow)")
}

// testMessageSendUnknown: a message to an unknown workflow is ErrNotFound.
func testMessageSendUnknown(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("mail.unknown", "k", at(0))
	for _, key := range []string{"", "key"} {
		_, created, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID + 1_000_000, Topic: "t", Key: key, Now: at(time.Second)})
		require.ErrorIs(t, err, storage.ErrNotFound, "SendMessage to an unknown workflow with key %q", key)
		require.False(t, created)
	}
}

// testMessageSendFinal: a final workflow (completed, failed, cancelled) refuses a new message
// with ErrWrongState and stores nothing; a stalled one keeps it for the run after its retry,
// without being woken.
func testMessageSendFinal(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, state := range []storage.State{storage.StateCompleted, storage.StateFailed, storage.StateCancelled} {
		w := f.runTo("mail.final."+string(state), state, at(time.Second))
		for _, key := range []string{"", "k1", "k1"} {
			_, created, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: key, Payload: []byte("late"), Now: at(time.Minute)})
			require.ErrorIs(t, err, storage.ErrWrongState, "SendMessage to a %s workflow with key %q (a refused send stores nothing, so its key stays free)", state, key)
			require.False(t, created)
		}
		got := f.get(w.ID)
		require.Equal(t, state, got.State)
		requireTime(t, time.Time{}, got.RunAt, "run at of a "+string(state)+" workflow after a refused send")
		requireTime(t, w.UpdatedAt, got.UpdatedAt, "updated at of a "+string(state)+" workflow after a refused send")
	}
	// The failed one, retried, finds its mailbox empty.
	failed, err := f.s.FindWorkflow(f.ctx, "mail.final.failed", "failed")
	require.NoError(t, err)
	_, err = f.s.Retry(f.ctx, failed.ID, storage.RetryRequest{Now: at(time.Hour)})
	require.NoError(t, err)
	l := f.claimOne(failed, "worker-a", at(time.Hour))
	_, ok := f.consume(l, "t", "receive$1", storage.Commit{}, at(time.Hour))
	require.False(t, ok, "a message refused while the workflow was failed was stored")
	f.sent(failed.ID, "t", "k1", []byte("now"), at(time.Hour))

	// Stalled: the message is kept and does not wake the workflow.
	s, _ := f.stall("mail.stalled")
	before := f.get(s.ID)
	m := f.sent(s.ID, "t", "k", []byte("kept"), at(time.Minute))
	got := f.get(s.ID)
	require.Equal(t, storage.StateStalled, got.State)
	requireTime(t, time.Time{}, got.RunAt, "run at of a stalled workflow after a send")
	requireTime(t, before.UpdatedAt, got.UpdatedAt, "updated at of a stalled workflow after a send")
	f.requireNoClaim(at(365*24*time.Hour), "a send does not wake a stalled workflow", s.Name)
	_, err = f.s.Retry(f.ctx, s.ID, storage.RetryRequest{Now: at(time.Hour)})
	require.NoError(t, err)
	ls := f.claimOne(s, "worker-a", at(time.Hour))
	got2, ok := f.consume(ls, "t", "receive$1", storage.Commit{}, at(time.Hour+time.Second))
	require.True(t, ok, "the message sent while stalled is consumed after the retry")
	require.Equal(t, m.ID, got2.ID)
}

// testMessageIdempotentKey: a send with a key the workflow holds stores nothing and answers
// the stored message with created false, whatever its topic and payload, after it was
// consumed, and once the workflow is final; concurrent sends with one key store one message.
func testMessageIdempotentKey(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("mail.key")
	first := f.sent(w.ID, "a", "k", []byte("first"), at(time.Second))
	for i, nm := range []storage.NewMessage{
		{WorkflowID: w.ID, Topic: "a", Key: "k", Payload: []byte("first"), Now: at(time.Second)},
		{WorkflowID: w.ID, Topic: "a", Key: "k", Payload: []byte("second"), Now: at(2 * time.Second)},
		{WorkflowID: w.ID, Topic: "b", Key: "k", Payload: []byte("third"), Now: at(3 * time.Second)},
	} {
		m, created, err := f.s.SendMessage(f.ctx, nm)
		require.NoError(t, err)
		require.False(t, created, "send %d with a key the workflow holds", i)
		requireMessage(t, first, m, fmt.Sprintf("answer to send %d with a stored key", i))
	}
	_, ok := f.consume(l, "b", "receive$b", storage.Commit{}, at(4*time.Second))
	require.False(t, ok, "a repeated key on another topic stored a message there")

	got, ok := f.consume(l, "a", "receive$a", storage.Commit{}, atMicro(5*time.Second))
	require.True(t, ok)
	first.ConsumedBy, first.ConsumedAt = "receive$a", atMicro(5*time.Second)
	requireMessage(t, first, got, "consumed")
	_, ok = f.consume(l, "a", "receive$a2", storage.Commit{}, at(6*time.Second))
	require.False(t, ok, "the message with key k was stored once")

	m, created := f.send(w.ID, "a", "k", []byte("after"), at(7*time.Second))
	require.False(t, created, "a key stays taken after its message was consumed")
	requireMessage(t, first, m, "answer to a send with the key of a consumed message")
	_, ok = f.consume(l, "a", "receive$a3", storage.Commit{}, at(8*time.Second))
	require.False(t, ok, "a send with the key of a consumed message stored a new one")

	// Concurrent sends of one key.
	const n = 8
	results := make([]storage.Message, n)
	created2 := make([]bool, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], created2[i], errs[i] = f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "c", Key: "race", Payload: []byte(fmt.Sprint(i)), Now: at(9 * time.Second)})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range n {
		require.NoError(t, errs[i], "sender %d", i)
		if created2[i] {
			require.Equal(t, -1, winner, "senders %d and %d both stored the key", winner, i)
			winner = i
		}
	}
	require.NotEqual(t, -1, winner, "no concurrent sender stored the key")
	for i := range n {
		require.Equal(t, results[winner].ID, results[i].ID, "sender %d was answered another message", i)
		requireBytes(t, []byte(fmt.Sprint(winner)), results[i].Payload, fmt.Sprintf("payload answered to sender %d", i))
	}
	c, ok := f.consume(l, "c", "receive$c", storage.Commit{}, at(10*time.Second))
	require.True(t, ok)
	require.Equal(t, results[winner].ID, c.ID)
	_, ok = f.consume(l, "c", "receive$c2", storage.Commit{}, at(11*time.Second))
	require.False(t, ok, "concurrent sends with one key stored more than one message")

	// Final: the stored key is still answered; a new message is refused.
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(12 * time.Second)}, State: storage.StateCompleted})
	m, created = f.send(w.ID, "a", "k", []byte("final"), at(13*time.Second))
	require.False(t, created, "a send with a stored key to a completed workflow")
	requireMessage(t, first, m, "answer to a send with a stored key to a completed workflow")
	_, _, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "a", Key: "new", Now: at(13 * time.Second)})
	require.ErrorIs(t, err, storage.ErrWrongState, "a send with a new key to a completed workflow")
}

// testMessageWakesWaiter: a message on the topic an idle workflow waits on makes it runnable
// at the send's Now, or keeps an earlier RunAt; the workflow is claimable then and not
// before. Its UpdatedAt is left alone (a wake carries no write).
func testMessageWakesWaiter(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, tc := range []struct {
		name  string
		runAt time.Time // the timeout of the wait; zero: none
		want  time.Time
	}{
		{"no-timeout", time.Time{}, at(5 * time.Second)},
		{"later-timeout", at(time.Hour), at(5 * time.Second)},
		{"earlier-timeout", at(3 * time.Second), at(3 * time.Second)},
	} {
		w, l := f.start("mail.wake." + tc.name)
		f.park(l, "orders", tc.runAt, at(time.Second))
		before := f.get(w.ID)
		f.sent(w.ID, "orders", "", []byte("x"), at(5*time.Second))
		got := f.get(w.ID)
		require.Equal(t, storage.StateIdle, got.State, tc.name)
		requireTime(t, tc.want, got.RunAt, tc.name+": run at after a message on the topic waited on")
		requireTime(t, before.UpdatedAt, got.UpdatedAt, tc.name+": updated at after the wake")
		require.Equal(t, before.Wait, got.Wait, tc.name+": wait after the wake")
		f.requireNoClaim(tc.want.Add(-time.Millisecond), tc.name+": not due before the wake", w.Name)
		lb := f.claimOne(w, "worker-b", tc.want)
		m, ok := f.consume(lb, "orders", "receive$orders", storage.Commit{}, tc.want)
		require.True(t, ok, tc.name)
		requireBytes(t, []byte("x"), m.Payload, tc.name)
	}

	// A second message coalesces: the RunAt of the first stays.
	w, l := f.start("mail.wake.twice")
	f.park(l, "orders", time.Time{}, at(time.Second))
	f.sent(w.ID, "orders", "", nil, at(5*time.Second))
	f.sent(w.ID, "orders", "", nil, at(9*time.Second))
	requireTime(t, at(5*time.Second), f.get(w.ID).RunAt, "run at after two messages")
}

// testMessageWakesOnlyWaiters: a message wakes nothing but a workflow waiting on its topic:
// an idle workflow waiting on another topic, a sleep, a signal, a merge or nothing keeps its
// RunAt and is not claimable early.
func testMessageWakesOnlyWaiters(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, tc := range []struct {
		name  string
		wait  storage.Wait
		runAt time.Time
	}{
		{"other-topic", storage.Wait{Kind: storage.WaitMessage, Step: "receive$payments", Data: []byte("payments")}, time.Time{}},
		{"topic-prefix", storage.Wait{Kind: storage.WaitMessage, Step: "receive$ord", Data: []byte("ord")}, at(time.Hour)},
		{"sleep", storage.Wait{Kind: storage.WaitSleep, Step: "sleep$nap"}, at(time.Hour)},
		{"signal", storage.Wait{Kind: storage.WaitSignal, Step: "approve", Data: []byte("orders")}, time.Time{}},
		{"merge", storage.Wait{Kind: storage.WaitMerge, Step: "merge$m", Data: []byte("orders")}, time.Time{}},
		{"nothing", storage.Wait{}, time.Time{}},
	} {
		w, l := f.start("mail.nowake." + tc.name)
		f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateIdle, RunAt: tc.runAt, Wait: tc.wait})
		before := f.get(w.ID)
		f.sent(w.ID, "orders", "", []byte("x"), at(5*time.Second))
		got := f.get(w.ID)
		require.Equal(t, storage.StateIdle, got.State, tc.name)
		requireTime(t, tc.runAt, got.RunAt, tc.name+": run at after a message on a topic not waited on")
		requireTime(t, before.UpdatedAt, got.UpdatedAt, tc.name+": updated at")
		f.requireNoClaim(at(time.Hour-time.Millisecond), tc.name+": not woken by the message", w.Name)
	}
	// A new workflow, not yet run, is not moved earlier either.
	n := f.create("mail.nowake.new", "k", at(time.Hour))
	f.sent(n.ID, "orders", "", nil, at(5*time.Second))
	requireTime(t, at(time.Hour), f.get(n.ID).RunAt, "run at of a workflow that never ran, after a message")
}

// testMessageWakeDuringRun: a message sent while the workflow runs is remembered: the run's
// FinishRun to idle makes RunAt the earlier of its own and the send's Now, so a run that read
// the mailbox just before the message arrived still wakes; a final finish drops it.
func testMessageWakeDuringRun(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, tc := range []struct {
		name  string
		state storage.State
		runAt time.Time
		want  time.Time
	}{
		{"vs-no-timeout", storage.StateIdle, time.Time{}, at(5 * time.Second)},
		{"vs-later-timeout", storage.StateIdle, at(24 * time.Hour), at(5 * time.Second)},
		{"vs-earlier-timer", storage.StateIdle, at(2 * time.Second), at(2 * time.Second)},
		{"vs-completed", storage.StateCompleted, time.Time{}, time.Time{}},
	} {
		w, l := f.start("mail.during." + tc.name)
		_, ok := f.consume(l, "orders", "receive$orders", storage.Commit{}, at(time.Second))
		require.False(t, ok, tc.name+": the mailbox is empty")
		before := f.get(w.ID)
		f.sent(w.ID, "orders", "", []byte("x"), at(5*time.Second))
		requireLeaseUnchanged(t, before, f.get(w.ID))
		f.requireNoClaim(at(10*time.Second), tc.name+": the workflow is leased; the wake waits for the run to end", w.Name)
		fin := storage.Finish{Commit: storage.Commit{Now: at(10 * time.Second)}, State: tc.state, RunAt: tc.runAt}
		if tc.state == storage.StateIdle {
			fin.Wait = storage.Wait{Kind: storage.WaitMessage, Step: "receive$orders", Data: []byte("orders")}
		}
		f.finish(l, fin)
		got := f.get(w.ID)
		require.Equal(t, tc.state, got.State, tc.name)
		requireTime(t, tc.want, got.RunAt, tc.name+": run at after the finish")
		if tc.want.IsZero() {
			f.requireNoClaim(at(365*24*time.Hour), tc.name+": a final workflow ignores the wake", w.Name)
			continue
		}
		lb := f.claimOne(w, "worker-b", tc.want)
		m, ok := f.consume(lb, "orders", "receive$orders", storage.Commit{}, at(11*time.Second))
		require.True(t, ok, tc.name+": the message sent during the run is consumed by the next")
		requireBytes(t, []byte("x"), m.Payload, tc.name)
	}
}

// testMessageConsume: ConsumeMessage takes the unconsumed message of the topic with the
// lowest ID, marks it consumed by the step at the request's Now, and writes the step record
// (completed, Attempts 1, Result the payload, Meta and LastError empty) together with the
// commit; a message is never taken twice, topics are independent, and with no message the
// commit is written alone and ok is false.
func testMessageConsume(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("mail.consume")
	m1 := f.sent(w.ID, "orders", "", payload(300, 1), atMicro(time.Second))
	u1 := f.sent(w.ID, "refunds", "r", []byte("refund"), at(2*time.Second))
	m2 := f.sent(w.ID, "orders", "o2", []byte("second"), at(3*time.Second))
	m3 := f.sent(w.ID, "orders", "", nil, at(4*time.Second))

	now := atMicro(10 * time.Second)
	got, ok := f.consume(l, "orders", "receive$1", storage.Commit{
		Steps:  []storage.Step{step("before", []byte("b"))},
		Values: []byte(`{"seen":1}`),
		Errors: []storage.ErrorRecord{{Step: "before", Attempt: 1, Message: "noted"}},
	}, east(now))
	require.True(t, ok)
	want := m1
	want.ConsumedBy, want.ConsumedAt = "receive$1", now
	requireMessage(t, want, got, "the first message on orders")

	loaded, steps := f.load(w.ID)
	require.ElementsMatch(t, []string{"before", "receive$1"}, stepNames(steps), "the commit's step and the message's step")
	rec := stepByName(steps, "receive$1")
	require.Equal(t, storage.StepCompleted, rec.State)
	require.Equal(t, 1, rec.Attempts)
	requireBytes(t, m1.Payload, rec.Result, "result of the step a message was consumed into")
	require.Empty(t, rec.Meta)
	require.Empty(t, rec.LastError)
	require.Equal(t, w.ID, rec.WorkflowID)
	requireTime(t, now, rec.CreatedAt, "created at of the message's step")
	requireTime(t, now, rec.UpdatedAt, "updated at of the message's step")
	requireTime(t, now, rec.CompletedAt, "completed at of the message's step")
	requireJSON(t, []byte(`{"seen":1}`), loaded.Values, "values of the commit")
	require.Equal(t, "noted", loaded.LastError, "error record of the commit")
	requireTime(t, now, loaded.UpdatedAt, "updated at of the workflow")

	for i, wantMsg := range []storage.Message{m2, m3} {
		name := fmt.Sprintf("receive$%d", i+2)
		got, ok := f.consume(l, "orders", name, storage.Commit{}, at(time.Duration(11+i)*time.Second))
		require.True(t, ok, name)
		wantMsg.ConsumedBy, wantMsg.ConsumedAt = name, at(time.Duration(11+i)*time.Second)
		requireMessage(t, wantMsg, got, name)
		_, steps := f.load(w.ID)
		requireBytes(t, wantMsg.Payload, stepByName(steps, name).Result, "result of "+name)
	}

	// Empty: the commit is written alone and the step is not.
	_, ok = f.consume(l, "orders", "receive$4", storage.Commit{Steps: []storage.Step{step("after", nil)}, Values: []byte(`{"seen":3}`)}, at(20*time.Second))
	require.False(t, ok, "every message on orders was consumed")
	loaded, steps = f.load(w.ID)
	require.ElementsMatch(t, []string{"before", "receive$1", "receive$2", "receive$3", "after"}, stepNames(steps), "no step for an empty consume, the commit's step written")
	requireJSON(t, []byte(`{"seen":3}`), loaded.Values, "values of an empty consume's commit")
	requireTime(t, at(20*time.Second), loaded.UpdatedAt, "updated at after an empty consume")

	// The other topic still holds its message.
	got, ok = f.consume(l, "refunds", "receive$r", storage.Commit{}, at(21*time.Second))
	require.True(t, ok)
	u1.ConsumedBy, u1.ConsumedAt = "receive$r", at(21*time.Second)
	requireMessage(t, u1, got, "the message on refunds")
	_, ok = f.consume(l, "refunds", "receive$r2", storage.Commit{}, at(22*time.Second))
	require.False(t, ok)

	// Consumed messages stay consumed, as the stored key shows.
	m2.ConsumedBy, m2.ConsumedAt = "receive$2", at(11*time.Second)
	requireMessage(t, m2, f.peek(w.ID, "o2"), "a consumed message read back by its key")

	// A message consumed into a step that exists replaces it, keeping its ID and CreatedAt.
	f.save(l, storage.Commit{Steps: []storage.Step{{Name: "receive$5", State: storage.StepPending, Attempts: 3, Meta: []byte(`{"deadline":1}`), LastError: "timed out"}}, Now: at(30 * time.Second)})
	old := stepByName(f.mustSteps(w.ID), "receive$5")
	f.sent(w.ID, "orders", "", []byte("late"), at(31*time.Second))
	_, ok = f.consume(l, "orders", "receive$5", storage.Commit{}, at(32*time.Second))
	require.True(t, ok)
	rec = stepByName(f.mustSteps(w.ID), "receive$5")
	require.Equal(t, old.ID, rec.ID, "the replaced step keeps its ID")
	require.Equal(t, storage.StepCompleted, rec.State)
	require.Equal(t, 1, rec.Attempts)
	requireBytes(t, []byte("late"), rec.Result, "result of the replaced step")
	require.Empty(t, rec.Meta, "meta of the replaced step")
	require.Empty(t, rec.LastError, "last error of the replaced step")
	requireTime(t, at(30*time.Second), rec.CreatedAt, "created at of the replaced step")
	requireTime(t, at(32*time.Second), rec.CompletedAt, "completed at of the replaced step")

	// Another workflow's mailbox is its own.
	o, lo := f.start("mail.consume.other")
	f.sent(w.ID, "orders", "", []byte("w's"), at(40*time.Second))
	_, ok = f.consume(lo, "orders", "receive$1", storage.Commit{}, at(41*time.Second))
	require.False(t, ok, "a workflow consumed another's message")
	_, steps = f.load(o.ID)
	require.Empty(t, steps)
}

// mustSteps loads workflow id's steps.
func (f *fixture) mustSteps(id int64) []storage.Step {
	f.t.Helper()
	_, steps := f.load(id)
	return steps
}

// testMessageConsumeFenced: ConsumeMessage is fenced like SaveSteps: under a superseded,
// expired or released lease it returns ErrLeaseLost, on a cancelled workflow ErrCancelled,
// and then consumes nothing and writes neither the commit nor the step.
func testMessageConsumeFenced(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	stale := storage.Commit{Steps: []storage.Step{step("stale", []byte("stale"))}, Values: []byte(`{"stale":true}`), Errors: []storage.ErrorRecord{{Step: "stale", Message: "stale"}}}
	try := func(l storage.Lease, want error, what string) {
		t.Helper()
		c := stale
		c.Now = at(time.Minute)
		m, ok, err := f.s.ConsumeMessage(f.ctx, l, storage.ConsumeRequest{Commit: c, Topic: "t", Step: "receive$stale"})
		require.ErrorIs(t, err, want, what)
		require.False(t, ok, what)
		require.Zero(t, m.ID, what)
	}
	untouched := func(id int64, m storage.Message, what string) {
		t.Helper()
		requireNoStaleWrite(f, id)
		for _, s := range f.mustSteps(id) {
			require.NotEqual(t, "receive$stale", s.Name, "%s: a refused consume wrote its step", what)
		}
		requireMessage(t, m, f.peek(id, m.Key), what+": the message after a refused consume")
	}

	// Wrong token.
	w, l := f.start("mail.fence.token")
	m := f.sent(w.ID, "t", "m", []byte("x"), at(time.Second))
	before := f.get(w.ID)
	for _, token := range []int64{l.Token - 1, l.Token + 1} {
		bad := l
		bad.Token = token
		try(bad, storage.ErrLeaseLost, fmt.Sprintf("ConsumeMessage with token %d", token))
	}
	untouched(w.ID, m, "wrong token")
	requireLeaseUnchanged(t, before, f.get(w.ID))
	got, ok := f.consume(l, "t", "receive$t", storage.Commit{}, at(2*time.Second))
	require.True(t, ok, "the right token still consumes the message")
	require.Equal(t, m.ID, got.ID)

	// Superseded after expiry.
	e, le := f.start("mail.fence.expired")
	me := f.sent(e.ID, "t", "m", []byte("x"), at(time.Second))
	f.lapse(le, at(2*time.Second))
	try(le, storage.ErrLeaseLost, "ConsumeMessage under an expired lease")
	untouched(e.ID, me, "expired")
	lb := f.claimOne(e, "worker-b", at(3*time.Second))
	try(le, storage.ErrLeaseLost, "ConsumeMessage under a superseded lease")
	untouched(e.ID, me, "superseded")
	got, ok = f.consume(lb, "t", "receive$t", storage.Commit{}, at(4*time.Second))
	require.True(t, ok, "the new lease consumes the message")
	require.Equal(t, me.ID, got.ID)

	// Released by its run's end.
	r, lr := f.start("mail.fence.released")
	mr := f.sent(r.ID, "t", "m", []byte("x"), at(time.Second))
	f.park(lr, "t", at(time.Hour), at(2*time.Second))
	try(lr, storage.ErrLeaseLost, "ConsumeMessage under a lease whose run finished")
	untouched(r.ID, mr, "released")

	// Cancelled.
	c, lc := f.start("mail.fence.cancelled")
	mc := f.sent(c.ID, "t", "m", []byte("x"), at(time.Second))
	require.NoError(t, f.s.Cancel(f.ctx, c.ID, at(2*time.Second)))
	try(lc, storage.ErrCancelled, "ConsumeMessage on a cancelled workflow")
	untouched(c.ID, mc, "cancelled")
	require.Equal(t, storage.StateCancelled, f.get(c.ID).State)
}

// testMessageOrderConcurrent: messages sent by many goroutines at once to one workflow are
// each stored once; one consumer takes them all in ID order, each exactly once, with each
// sender's messages in the order it sent them; consumers racing under one lease never take a
// message twice.
func testMessageOrderConcurrent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("mail.order")
	const senders, each = 8, 20
	type sentMsg struct {
		m   storage.Message
		err error
	}
	sentBy := make([][]sentMsg, senders)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range senders {
		wg.Go(func() {
			<-start
			for i := range each {
				for _, topic := range []string{"seq", "race"} {
					key := ""
					if i%2 == 0 {
						key = fmt.Sprintf("%s-%d-%d", topic, g, i)
					}
					m, _, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: topic, Key: key, Payload: []byte(fmt.Sprintf("%d/%d", g, i)), Now: at(time.Second)})
					sentBy[g] = append(sentBy[g], sentMsg{m, err})
				}
			}
		})
	}
	close(start)
	wg.Wait()
	byID := map[int64]string{}
	for g := range senders {
		for _, s := range sentBy[g] {
			require.NoError(t, s.err, "sender %d", g)
			require.NotContains(t, byID, s.m.ID, "two sends answered with one message ID")
			byID[s.m.ID] = s.m.Topic + ":" + string(s.m.Payload)
		}
	}
	require.Len(t, byID, 2*senders*each)

	// One consumer: ID order, every message once, each sender's in its order.
	var prev int64
	next := make([]int, senders)
	for i := range senders * each {
		m, ok := f.consume(l, "seq", fmt.Sprint("seq$", i), storage.Commit{}, at(2*time.Second))
		require.True(t, ok, "consume %d of %d", i, senders*each)
		require.Greater(t, m.ID, prev, "messages are consumed in ID order")
		prev = m.ID
		require.Equal(t, "seq:"+string(m.Payload), byID[m.ID], "the message consumed is the one stored under its ID")
		var g, n int
		_, err := fmt.Sscanf(string(m.Payload), "%d/%d", &g, &n)
		require.NoError(t, err)
		require.Equal(t, next[g], n, "sender %d's messages are consumed in the order it sent them", g)
		next[g]++
	}
	_, ok := f.consume(l, "seq", "seq$end", storage.Commit{}, at(3*time.Second))
	require.False(t, ok, "every message on seq was consumed")

	// Racing consumers under one lease.
	const consumers = 4
	took := make([][]storage.Message, consumers)
	errs := make([]error, consumers)
	for c := range consumers {
		wg.Go(func() {
			for i := 0; ; i++ {
				m, ok, err := f.s.ConsumeMessage(f.ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(4 * time.Second)}, Topic: "race", Step: fmt.Sprintf("race$%d-%d", c, i)})
				if err != nil || !ok {
					errs[c] = err
					return
				}
				took[c] = append(took[c], m)
			}
		})
	}
	wg.Wait()
	seen := map[int64]int{}
	for c := range consumers {
		require.NoError(t, errs[c], "consumer %d", c)
		for i, m := range took[c] {
			if i > 0 {
				require.Greater(t, m.ID, took[c][i-1].ID, "consumer %d took messages out of ID order", c)
			}
			seen[m.ID]++
			require.Equal(t, "race:"+string(m.Payload), byID[m.ID])
		}
	}
	require.Len(t, seen, senders*each, "every message on race was consumed")
	for id, n := range seen {
		require.Equal(t, 1, n, "message %d was consumed %d times", id, n)
	}
	steps := f.mustSteps(w.ID)
	require.Len(t, steps, 2*senders*each, "one step per consumed message, none for the empty consumes")
	for c := range consumers {
		for i, m := range took[c] {
			requireBytes(t, m.Payload, stepByName(steps, fmt.Sprintf("race$%d-%d", c, i)).Result, "result of a raced consume")
		}
	}
}

// testMessageCleanup: DeleteFinished deletes a deleted workflow's messages with it: a new
// workflow of the same name and key starts with an empty mailbox and every key free, and a
// send to the deleted ID is ErrNotFound; a kept workflow keeps its messages.
func testMessageCleanup(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("mail.cleanup")
	kept, lk := f.start("mail.kept")
	for _, id := range []int64{w.ID, kept.ID} {
		f.sent(id, "t", "a", []byte("a"), at(time.Second))
		f.sent(id, "t", "b", []byte("b"), at(time.Second))
		f.sent(id, "u", "", []byte("c"), at(time.Second))
	}
	_, ok := f.consume(l, "t", "receive$a", storage.Commit{}, at(2*time.Second))
	require.True(t, ok)
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(3 * time.Second)}, State: storage.StateCompleted})
	f.finish(lk, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Hour)}, State: storage.StateCompleted})

	res, err := f.s.DeleteFinished(f.ctx, storage.CleanupRequest{Before: at(time.Hour), StepBudget: 1})
	require.NoError(t, err)
	require.Equal(t, 1, res.Deleted, "the workflow with one step and three messages is deleted within a step budget of one: messages are not counted")
	require.False(t, res.More)

	_, _, err = f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "a", Now: at(3 * time.Hour)})
	require.ErrorIs(t, err, storage.ErrNotFound, "SendMessage to a deleted workflow")

	again, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "mail.cleanup", Key: "k", Now: at(3 * time.Hour)})
	require.NoError(t, err)
	require.True(t, created)
	la := f.claimOne(again, "worker-a", at(3*time.Hour))
	for _, topic := range []string{"t", "u"} {
		_, ok := f.consume(la, topic, "receive$"+topic, storage.Commit{}, at(3*time.Hour))
		require.False(t, ok, "the new workflow inherited a message on %q", topic)
	}
	for _, key := range []string{"a", "b"} {
		m, created := f.send(again.ID, "t", key, []byte("new-"+key), at(3*time.Hour))
		require.True(t, created, "key %q of a deleted workflow's message is free in its successor", key)
		require.Equal(t, again.ID, m.WorkflowID)
	}
	got, ok := f.consume(la, "t", "receive$t2", storage.Commit{}, at(3*time.Hour))
	require.True(t, ok)
	requireBytes(t, []byte("new-a"), got.Payload, "the new workflow's first message")

	for _, key := range []string{"a", "b"} {
		m := f.peek(kept.ID, key)
		requireBytes(t, []byte(key), m.Payload, "a kept workflow keeps its message "+key)
	}
}

// testInvalidMessage: a send with no workflow ID, a bad topic or key, an oversize payload or
// no time is refused with ErrInvalid or ErrTooLarge, stores nothing and wakes nothing; a
// consume with a bad lease, commit, topic or step, or a step also in the commit, is refused
// and consumes and writes nothing. Values at the limits are accepted.
func testInvalidMessage(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("mail.invalid")
	f.park(l, "t", time.Time{}, at(time.Second))
	good := storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: "k", Payload: []byte("x"), Now: at(2 * time.Second)}
	for _, tc := range []struct {
		name   string
		modify func(m *storage.NewMessage)
		want   error
	}{
		{"zero workflow id", func(m *storage.NewMessage) { m.WorkflowID = 0 }, storage.ErrInvalid},
		{"negative workflow id", func(m *storage.NewMessage) { m.WorkflowID = -w.ID }, storage.ErrInvalid},
		{"empty topic", func(m *storage.NewMessage) { m.Topic = "" }, storage.ErrInvalid},
		{"overlong topic", func(m *storage.NewMessage) { m.Topic = strings.Repeat("t", storage.MaxTopicLen+1) }, storage.ErrInvalid},
		{"newline in topic", func(m *storage.NewMessage) { m.Topic = "t\n" }, storage.ErrInvalid},
		{"invalid UTF-8 topic", func(m *storage.NewMessage) { m.Topic = "t\xff" }, storage.ErrInvalid},
		{"overlong key", func(m *storage.NewMessage) { m.Key = strings.Repeat("k", storage.MaxMessageKeyLen+1) }, storage.ErrInvalid},
		{"NUL in key", func(m *storage.NewMessage) { m.Key = "k\x00" }, storage.ErrInvalid},
		{"oversize payload", func(m *storage.NewMessage) { m.Payload = make([]byte, storage.MaxMessage+1) }, storage.ErrTooLarge},
		{"zero now", func(m *storage.NewMessage) { m.Now = time.Time{} }, storage.ErrInvalid},
		{"now out of range", func(m *storage.NewMessage) { m.Now = storage.MinTime.Add(-time.Hour) }, storage.ErrInvalid},
	} {
		m := good
		tc.modify(&m)
		got, created, err := f.s.SendMessage(f.ctx, m)
		require.ErrorIs(t, err, tc.want, "SendMessage with %s", tc.name)
		require.False(t, created, "SendMessage with %s", tc.name)
		require.Zero(t, got.ID, "SendMessage with %s answered a message", tc.name)
	}
	got := f.get(w.ID)
	requireTime(t, time.Time{}, got.RunAt, "refused sends woke the workflow waiting on their topic")
	f.requireNoClaim(at(365*24*time.Hour), "refused sends woke the workflow", w.Name)

	// At the limits.
	big := payload(storage.MaxMessage, 5)
	topic := strings.Repeat("τ", storage.MaxTopicLen/2)
	key := strings.Repeat("κ", storage.MaxMessageKeyLen/2)
	m := f.sent(w.ID, topic, key, big, at(3*time.Second))
	require.Equal(t, topic, m.Topic)
	require.Equal(t, key, m.Key)
	requireBytes(t, big, m.Payload, "payload of MaxMessage bytes answered by SendMessage")
	requireTime(t, time.Time{}, f.get(w.ID).RunAt, "a message on another topic woke the workflow")
	f.sent(w.ID, "t", "k", []byte("x"), at(4*time.Second))
	requireTime(t, at(4*time.Second), f.get(w.ID).RunAt, "the valid send on the topic wakes the workflow")

	// Consumes.
	l2 := f.claimOne(w, "worker-a", at(4*time.Second))
	before, stepsBefore := f.load(w.ID)
	goodReq := storage.ConsumeRequest{Commit: storage.Commit{Steps: []storage.Step{step("with", nil)}, Values: []byte(`{"bad":true}`), Now: at(5 * time.Second)}, Topic: "t", Step: "receive$t"}
	for _, tc := range []struct {
		name   string
		lease  func(l *storage.Lease)
		modify func(r *storage.ConsumeRequest)
		want   error
	}{
		{"zero lease workflow", func(l *storage.Lease) { l.WorkflowID = 0 }, nil, storage.ErrInvalid},
		{"step also in the commit", nil, func(r *storage.ConsumeRequest) { r.Steps = []storage.Step{step("receive$t", nil)} }, storage.ErrInvalid},
		{"empty step", nil, func(r *storage.ConsumeRequest) { r.Step = "" }, storage.ErrInvalid},
		{"overlong step", nil, func(r *storage.ConsumeRequest) { r.Step = strings.Repeat("s", storage.MaxNameLen+1) }, storage.ErrInvalid},
		{"empty topic", nil, func(r *storage.ConsumeRequest) { r.Topic = "" }, storage.ErrInvalid},
		{"overlong topic", nil, func(r *storage.ConsumeRequest) { r.Topic = strings.Repeat("t", storage.MaxTopicLen+1) }, storage.ErrInvalid},
		{"control character in topic", nil, func(r *storage.ConsumeRequest) { r.Topic = "\tt" }, storage.ErrInvalid},
		{"zero now", nil, func(r *storage.ConsumeRequest) { r.Now = time.Time{} }, storage.ErrInvalid},
		{"bad commit step", nil, func(r *storage.ConsumeRequest) { r.Steps = []storage.Step{{Name: "x", State: "done"}} }, storage.ErrInvalid},
		{"oversize commit values", nil, func(r *storage.ConsumeRequest) { r.Values = make([]byte, storage.MaxValues+1) }, storage.ErrTooLarge},
	} {
		ll, r := l2, goodReq
		r.Steps = slices.Clone(goodReq.Steps)
		if tc.lease != nil {
			tc.lease(&ll)
		}
		if tc.modify != nil {
			tc.modify(&r)
		}
		m, ok, err := f.s.ConsumeMessage(f.ctx, ll, r)
		require.ErrorIs(t, err, tc.want, "ConsumeMessage with %s", tc.name)
		require.False(t, ok, "ConsumeMessage with %s", tc.name)
		require.Zero(t, m.ID, "ConsumeMessage with %s", tc.name)
	}
	after, stepsAfter := f.load(w.ID)
	requireLeaseUnchanged(t, before, after)
	require.Equal(t, stepsBefore, stepsAfter, "refused consumes wrote steps")
	requireJSON(t, before.Values, after.Values, "values after refused consumes")
	require.Empty(t, f.peek(w.ID, "k").ConsumedBy, "a refused consume consumed the message")

	c, ok := f.consume(l2, topic, "receive$big", storage.Commit{}, at(6*time.Second))
	require.True(t, ok)
	requireBytes(t, big, c.Payload, "payload of MaxMessage bytes consumed")
	requireBytes(t, big, stepByName(f.mustSteps(w.ID), "receive$big").Result, "result of MaxMessage bytes")
}

// testCloseRefusesMessages: after Close, CreateWorkflows, SendMessage and ConsumeMessage
// return ErrClosed.
func testCloseRefusesMessages(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("mail.closing")
	require.NoError(t, f.s.Close())
	_, _, err := f.s.CreateWorkflows(f.ctx, batch("mail.closing", "b", 2))
	require.ErrorIs(t, err, storage.ErrClosed, "CreateWorkflows after Close")
	_, _, err = f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Now: at(time.Second)})
	require.ErrorIs(t, err, storage.ErrClosed, "SendMessage after Close")
	_, _, err = f.s.ConsumeMessage(f.ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(time.Second)}, Topic: "t", Step: "receive$t"})
	require.ErrorIs(t, err, storage.ErrClosed, "ConsumeMessage after Close")
	require.NoError(t, f.s.Close(), "a second Close returns nil")
}

// testNotifySendMessage: a message that wakes a workflow waiting on its topic notifies the
// listener.
func testNotifySendMessage(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("notify.message")
	f.park(l, "orders", time.Time{}, at(time.Second))
	ch, _ := f.listen()
	drain(ch)
	notifiedBy(t, "SendMessage to a workflow waiting on its topic", func() error {
		_, created, err := f.s.SendMessage(f.ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "orders", Payload: []byte("x"), Now: at(2 * time.Second)})
		if err == nil && !created {
			err = fmt.Errorf("SendMessage without a key reports not created")
		}
		return err
	}, ch)
}
