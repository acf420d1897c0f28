package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Mailboxes. A message is stored under its workflow (messages), listed while it waits under
// its workflow and topic (mailbox), and found by its key (msgkeys): sending is a few puts,
// taking the next message of a topic one Seek, and deleting a workflow's mailbox three prefix
// walks.

// messageKey is the key of a message record: its workflow, then its id.
func messageKey(workflowID, id int64) []byte {
	return binary8(idKey(workflowID), id)
}

// topicPrefix is the prefix of a workflow's waiting messages on topic in the mailbox index.
func topicPrefix(workflowID int64, topic string) []byte {
	b := make([]byte, 0, 8+len(topic)+1+8)
	b = append(b, idKey(workflowID)...)
	b = append(b, topic...)
	return append(b, 0)
}

// mailboxKey is the mailbox index entry of a waiting message.
func mailboxKey(workflowID int64, topic string, id int64) []byte {
	return binary8(topicPrefix(workflowID, topic), id)
}

// binary8 appends id, 8 bytes big-endian, to prefix.
func binary8(prefix []byte, id int64) []byte {
	return append(prefix, idKey(id)...)
}

// SendMessage stores m in its workflow's mailbox, or answers the message stored under m.Key,
// in one write transaction. An idle workflow waiting on m.Topic becomes runnable no later
// than m.Now; a running one keeps the wake for FinishRun, as Wake does.
func (s *Store) SendMessage(ctx context.Context, m storage.NewMessage) (storage.Message, bool, error) {
	if err := storage.ValidateMessage(m); err != nil {
		return storage.Message{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Message{}, false, err
	}
	now := m.Now.UTC()
	var (
		out     storage.Message
		created bool
	)
	err := s.update(func(t *txn) error {
		old, err := t.get(m.WorkflowID)
		if err != nil {
			return err
		}
		if m.Key != "" {
			if v := t.msgKeys.Get(childKey(old.ID, []byte(m.Key))); v != nil {
				out, err = t.message(old.ID, int64(beUint(v)))
				return err
			}
		}
		if old.State.Final() {
			return fmt.Errorf("workflow %d (%q key %q) is %s: %w", old.ID, old.Name, old.Key, old.State, storage.ErrWrongState)
		}
		seq, err := t.messages.NextSequence()
		if err != nil {
			return err
		}
		out = storage.Message{ID: int64(seq), WorkflowID: old.ID, Topic: m.Topic, Key: m.Key, Payload: m.Payload, CreatedAt: now}
		if err := t.messages.Put(messageKey(old.ID, out.ID), encodeMessage(&out)); err != nil {
			return err
		}
		if err := t.mailbox.Put(mailboxKey(old.ID, m.Topic, out.ID), nil); err != nil {
			return err
		}
		if m.Key != "" {
			if err := t.msgKeys.Put(childKey(old.ID, []byte(m.Key)), idKey(out.ID)); err != nil {
				return err
			}
		}
		created = true
		return t.wakeForMessage(old, m.Topic, now)
	})
	if err != nil {
		return storage.Message{}, false, fmt.Errorf("bolt: send message on topic %q to workflow %d: %w", m.Topic, m.WorkflowID, err)
	}
	if created {
		out.Payload = bytes.Clone(out.Payload) // not the caller's buffer
	}
	return out, created, nil
}

// wakeForMessage wakes old at now, as Wake would, if it is idle and waiting for a message on
// topic or running; any other workflow is left alone.
func (t *txn) wakeForMessage(old *record, topic string, now time.Time) error {
	w := *old
	switch {
	case old.State == storage.StateIdle && old.Wait.Kind == storage.WaitMessage && string(old.Wait.Data) == topic:
		w.RunAt = storage.Earliest(old.RunAt, now)
	case old.State == storage.StateRunning:
		w.Wake = storage.Earliest(old.Wake, now)
	default:
		return nil
	}
	if w.RunAt.Equal(old.RunAt) && w.Wake.Equal(old.Wake) {
		return nil
	}
	return t.put(old, &w)
}

// message reads the message id of workflow workflowID.
func (t *txn) message(workflowID, id int64) (storage.Message, error) {
	v := t.messages.Get(messageKey(workflowID, id))
	if v == nil {
		return storage.Message{}, fmt.Errorf("workflow %d: message %d is indexed but not stored: %w", workflowID, id, errCorrupt)
	}
	m, err := decodeMessage(v)
	if err != nil {
		return storage.Message{}, fmt.Errorf("workflow %d message %d: %w", workflowID, id, err)
	}
	return m, nil
}

// ConsumeMessage writes r.Commit under l and, if a message waits on r.Topic, takes the one with
// the lowest ID into the step record r.Step, in one write transaction fenced like SaveSteps
// (shared with concurrent runs' writes, like SaveSteps). The message is found with one Seek
// of the mailbox index, which holds waiting messages only.
func (s *Store) ConsumeMessage(ctx context.Context, l storage.Lease, r storage.ConsumeRequest) (storage.Message, bool, error) {
	if err := storage.ValidateConsume(l, r); err != nil {
		return storage.Message{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Message{}, false, err
	}
	now := r.Now.UTC()
	var (
		out storage.Message
		ok  bool
	)
	err := s.batch(func(t *txn) error {
		out, ok = storage.Message{}, false // bbolt may run a batched function twice
		old, err := t.fence(l, s.clock())
		if err != nil {
			return err
		}
		w := *old
		if err := t.commit(&w, r.Commit); err != nil {
			return err
		}
		id, found := t.nextMessage(w.ID, r.Topic)
		if found {
			m, err := t.message(w.ID, id)
			if err != nil {
				return err
			}
			m.ConsumedBy, m.ConsumedAt = r.Step, now
			if err := t.messages.Put(messageKey(w.ID, id), encodeMessage(&m)); err != nil {
				return err
			}
			if err := t.mailbox.Delete(mailboxKey(w.ID, r.Topic, id)); err != nil {
				return err
			}
			st := storage.Step{Name: r.Step, State: storage.StepCompleted, Attempts: 1, Result: m.Payload}
			if err := t.upsertSteps(w.ID, []storage.Step{st}, now); err != nil {
				return err
			}
			out, ok = m, true
		}
		return t.put(old, &w)
	})
	if err != nil {
		return storage.Message{}, false, fmt.Errorf("bolt: consume message on topic %q: %w", r.Topic, err)
	}
	return out, ok, nil
}

// nextMessage returns the ID of the waiting message of workflowID on topic with the lowest
// ID: the first key under the topic's prefix of the mailbox index, read with one Seek.
func (t *txn) nextMessage(workflowID int64, topic string) (int64, bool) {
	prefix := topicPrefix(workflowID, topic)
	k, _ := t.mailbox.Cursor().Seek(prefix)
	if t.stats != nil {
		t.stats.mailboxKeys.Add(1)
	}
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
		return 0, false
	}
	return int64(beUint(k[len(prefix):])), true
}
