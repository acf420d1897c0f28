package bolt

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// send stores a message and requires that it was stored anew.
func send(t testing.TB, s *Store, id int64, topic, key string, body []byte) storage.Message {
	t.Helper()
	m, created, err := s.SendMessage(context.Background(), storage.NewMessage{WorkflowID: id, Topic: topic, Key: key, Payload: body, Now: base})
	require.NoError(t, err)
	require.True(t, created)
	return m
}

// consume takes the next message on topic into step under l.
func consume(t testing.TB, s *Store, l storage.Lease, topic, step string) (storage.Message, bool) {
	t.Helper()
	m, ok, err := s.ConsumeMessage(context.Background(), l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(time.Second)}, Topic: topic, Step: step})
	require.NoError(t, err)
	return m, ok
}

// checkMailbox rebuilds the mailbox and msgkeys indexes from the message records and
// compares them with the stored ones, and requires that every message belongs to a stored
// workflow.
func checkMailbox(t testing.TB, s *Store) {
	t.Helper()
	want := map[string]map[string]string{"mailbox": {}, "msgkeys": {}}
	got := map[string]map[string]string{"mailbox": {}, "msgkeys": {}}
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		err := tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			require.Equal(t, messageKey(m.WorkflowID, m.ID), k, "message %d is stored under its key", m.ID)
			require.NotNil(t, tx.Bucket(bucketWorkflows).Get(idKey(m.WorkflowID)), "message %d of a deleted workflow %d", m.ID, m.WorkflowID)
			if m.ConsumedBy == "" {
				want["mailbox"][string(mailboxKey(m.WorkflowID, m.Topic, m.ID))] = ""
			}
			if m.Key != "" {
				want["msgkeys"][string(childKey(m.WorkflowID, []byte(m.Key)))] = string(idKey(m.ID))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for name := range got {
			err := tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
				got[name][string(k)] = string(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}))
	require.Equal(t, want, got)
}

// TestConsumeIsASeek: consuming 10,000 messages of one topic, in a mailbox that also holds
// thousands on topics sorting just before and after it, reads one key of the mailbox index
// per consume, however many messages wait or were consumed before: the next message is a
// Seek, not a scan. Messages come in ID order, each once.
func TestConsumeIsASeek(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	s.db.MaxBatchDelay = 0 // one caller: waiting for others to share a commit only slows the test
	w := create(t, s, "wf", "k", base)
	l := leaseOf(claimOne(t, s, base, time.Hour))
	const n = 10_000
	var want []int64
	for i := range n {
		m := send(t, s, w.ID, "orders", fmt.Sprint("key-", i), []byte(fmt.Sprint(i)))
		want = append(want, m.ID)
		if i%4 == 0 {
			send(t, s, w.ID, "order", "", nil)   // a prefix of the topic
			send(t, s, w.ID, "orders2", "", nil) // the topic is a prefix of it
		}
	}
	before := s.stats.mailboxKeys.Load()
	for i := range n {
		m, ok := consume(t, s, l, "orders", fmt.Sprint("receive$", i))
		require.True(t, ok, "consume %d", i)
		require.Equal(t, want[i], m.ID, "consume %d takes the message with the next ID", i)
		require.Equal(t, []byte(fmt.Sprint(i)), m.Payload)
	}
	_, ok := consume(t, s, l, "orders", "receive$last")
	require.False(t, ok)
	require.Equal(t, int64(n+1), s.stats.mailboxKeys.Load()-before, "mailbox keys read by %d consumes", n+1)

	// The other topics are untouched and the index holds exactly the waiting messages.
	checkMailbox(t, s)
	for _, topic := range []string{"order", "orders2"} {
		_, ok := consume(t, s, l, topic, "receive$"+topic)
		require.True(t, ok, topic)
	}
	checkMailbox(t, s)
}

// TestMailboxIndexes: sends, consumes, a refused send and cleanup keep the mailbox and key
// indexes exactly what the message records say; a deleted workflow leaves nothing behind in
// any of the three buckets.
func TestMailboxIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	a := create(t, s, "wf", "a", base)
	b := create(t, s, "wf", "b", base)
	la := leaseOf(claimOne(t, s, base, time.Hour))
	require.Equal(t, a.ID, la.WorkflowID)
	for _, id := range []int64{a.ID, b.ID} {
		send(t, s, id, "t", "k1", []byte("1"))
		send(t, s, id, "t", "", []byte("2"))
		send(t, s, id, "u", "k3", []byte("3"))
	}
	checkMailbox(t, s)
	_, ok := consume(t, s, la, "t", "receive$1")
	require.True(t, ok)
	checkMailbox(t, s)
	require.NoError(t, s.FinishRun(ctx, la, storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateCompleted}))
	_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: a.ID, Topic: "t", Key: "new", Now: at(2 * time.Second)})
	require.ErrorIs(t, err, storage.ErrWrongState)
	checkMailbox(t, s)

	res, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 1, res.Deleted)
	checkMailbox(t, s)
	checkIndexes(t, s)
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketMessages, bucketMailbox, bucketMsgKeys} {
			c := tx.Bucket(name).Cursor()
			k, _ := c.Seek(idKey(a.ID))
			require.False(t, k != nil && bytes.HasPrefix(k, idKey(a.ID)), "bucket %s keeps entries of the deleted workflow", name)
		}
		return nil
	}))
	_, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: b.ID, Topic: "t", Key: "k1", Now: at(time.Hour)})
	require.NoError(t, err)
	require.False(t, created, "the kept workflow keeps its keys")
}

// TestMessageRefusalsWriteNothing: a send refused by input, state or an unknown workflow, and
// a consume refused by input or the fence, leave every bucket of the file as it was.
func TestMessageRefusalsWriteNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	w := create(t, s, "wf", "k", base)
	l := leaseOf(claimOne(t, s, base, time.Hour))
	send(t, s, w.ID, "t", "k", []byte("x"))
	done := create(t, s, "done", "k", base)
	require.NoError(t, s.Cancel(ctx, done.ID, base))
	before := dump(t, s)
	for _, tc := range []struct {
		name string
		want error
		call func() error
	}{
		{"send to a cancelled workflow", storage.ErrWrongState, func() error {
			_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: done.ID, Topic: "t", Key: "k2", Now: base})
			return err
		}},
		{"send to an unknown workflow", storage.ErrNotFound, func() error {
			_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: done.ID + 100, Topic: "t", Now: base})
			return err
		}},
		{"send oversize", storage.ErrTooLarge, func() error {
			_, _, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Payload: make([]byte, storage.MaxMessage+1), Now: base})
			return err
		}},
		{"consume with a stale token", storage.ErrLeaseLost, func() error {
			stale := l
			stale.Token--
			_, _, err := s.ConsumeMessage(ctx, stale, storage.ConsumeRequest{Commit: storage.Commit{Steps: []storage.Step{{Name: "s", State: storage.StepPending}}, Now: base}, Topic: "t", Step: "receive$t"})
			return err
		}},
		{"consume into a step of the commit", storage.ErrInvalid, func() error {
			_, _, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Steps: []storage.Step{{Name: "receive$t", State: storage.StepPending}}, Now: base}, Topic: "t", Step: "receive$t"})
			return err
		}},
		{"create batch with a bad workflow", storage.ErrInvalid, func() error {
			_, _, err := s.CreateWorkflows(ctx, []storage.NewWorkflow{{Name: "new", Key: "1", Now: base}, {Name: "new", Key: "2"}})
			return err
		}},
	} {
		require.ErrorIs(t, tc.call(), tc.want, tc.name)
		require.Equal(t, before, dump(t, s), "%s wrote to the file", tc.name)
	}
}

// TestCreateWorkflowsOneTransaction: a batch is one write transaction, however many
// workflows it creates.
func TestCreateWorkflowsOneTransaction(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	create(t, s, "wf", "k3", base)
	var ws []storage.NewWorkflow
	for i := range 500 {
		ws = append(ws, storage.NewWorkflow{Name: "wf", Key: fmt.Sprint("k", i), Tags: map[string]string{"i": fmt.Sprint(i)}, Now: base})
	}
	tx := lastTx(t, s)
	out, created, err := s.CreateWorkflows(context.Background(), ws)
	require.NoError(t, err)
	require.Equal(t, tx+1, lastTx(t, s), "one write transaction for the batch")
	require.Len(t, out, 500)
	require.False(t, created[3], "k3 was stored")
	require.Nil(t, out[3].Tags, "the stored k3 has no tags")
	require.Equal(t, map[string]string{"i": "4"}, out[4].Tags)
	checkIndexes(t, s)
}

// goldenWorkflowV2 is a workflow record of codec version 2 (wait data, no tags), kept as
// bytes: this build must read it as written, with no tags.
const goldenWorkflowV2 = "020e027766016b03696e000469646c65037b7d01aafce7bcedb4a0c734076d65737361676509726563656976652474027402773100060254037463016501aafce7bcedb4a0c73401aaa4bef6f4b4a0c7340001aadca2c1acb8a0c734"

func TestCodecReadsVersion2(t *testing.T) {
	t.Parallel()
	r, err := decodeWorkflow(golden(t, goldenWorkflowV2))
	require.NoError(t, err)
	want := goldenRecord()
	want.Wait = storage.Wait{Kind: storage.WaitMessage, Step: "receive$t", Data: []byte("t")}
	want.Wake = base.Add(time.Minute)
	require.Equal(t, want, r)
	require.Nil(t, r.Tags, "a record written before tags has none")

	// Written again, it takes this build's version; tags round-trip, none stays nil.
	for _, tags := range []map[string]string{nil, {"tenant": "acme", "env": "", "é": "ü"}} {
		r.Tags = tags
		b := encodeWorkflow(r)
		require.Equal(t, byte(codecVersion), b[0])
		again, err := decodeWorkflow(b)
		require.NoError(t, err)
		require.Equal(t, r, again)
	}

	// A tag count beyond the record is corrupt, not a huge allocation.
	b := encodeWorkflow(r)
	b = append(b[:len(b)-len(encodeTags(r.Tags))], 0xff, 0xff, 0xff, 0x0f)
	_, err = decodeWorkflow(b)
	require.ErrorIs(t, err, errCorrupt)

	m := storage.Message{ID: 3, WorkflowID: 7, Topic: "t", Key: "k", Payload: []byte{}, CreatedAt: base, ConsumedBy: "receive$t", ConsumedAt: base.Add(time.Second)}
	back, err := decodeMessage(encodeMessage(&m))
	require.NoError(t, err)
	require.Equal(t, m, back)
	old := encodeMessage(&m)
	old[0] = 2
	_, err = decodeMessage(old)
	require.ErrorIs(t, err, errCorrupt, "no build wrote message records before codec version 3")
}

// encodeTags is what encodeWorkflow appends for tags.
func encodeTags(tags map[string]string) []byte {
	var e encoder
	e.tags(tags)
	return e.b
}

// TestOpenUpgradesSchema3: a file of schema version 3 opens as version 4 with empty
// mailboxes; its old workflow records read with no tags and take messages.
func TestOpenUpgradesSchema3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := writeV1File(t, 3)
	s, err := Open(path, WithNoSync())
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		require.Equal(t, idKey(schemaVersion), tx.Bucket(bucketMeta).Get(metaVersion))
		for _, name := range [][]byte{bucketMessages, bucketMailbox, bucketMsgKeys} {
			require.NotNil(t, tx.Bucket(name), "bucket %s", name)
		}
		return nil
	}))
	w, err := s.GetWorkflow(ctx, 7)
	require.NoError(t, err)
	require.Nil(t, w.Tags)
	m := send(t, s, 7, "t", "k", []byte("x"))
	l := claimOne(t, s, base, time.Minute)
	require.Equal(t, int64(7), l.ID)
	got, ok := consume(t, s, l.Lease(), "t", "receive$t")
	require.True(t, ok)
	require.Equal(t, m.ID, got.ID)
	checkMailbox(t, s)
}
