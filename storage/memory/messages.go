package memory

import (
	"context"
	"fmt"

	"github.com/chronoforge/chronoforge/storage"
)

// SendMessage appends m to the workflow's mailbox, or returns the message already stored
// under m.Key, and wakes the workflow if it waits on m.Topic or is running.
func (s *Store) SendMessage(ctx context.Context, m storage.NewMessage) (storage.Message, bool, error) {
	if err := storage.ValidateMessage(m); err != nil {
		return storage.Message{}, false, err
	}
	if err := s.begin(ctx, "send message"); err != nil {
		return storage.Message{}, false, err
	}
	defer s.mu.Unlock()
	r, err := s.lookup("send message", m.WorkflowID)
	if err != nil {
		return storage.Message{}, false, err
	}
	if m.Key != "" {
		for _, old := range r.msgs {
			if old.Key == m.Key {
				return copyMessage(old), false, nil
			}
		}
	}
	if r.w.State.Final() {
		return storage.Message{}, false, fmt.Errorf("memory: send message on topic %q to workflow %d (%q key %q): it is %s: %w",
			m.Topic, r.w.ID, r.w.Name, r.w.Key, r.w.State, storage.ErrWrongState)
	}
	s.lastMessage++
	msg := &storage.Message{
		ID: s.lastMessage, WorkflowID: r.w.ID, Topic: m.Topic, Key: m.Key,
		Payload: clone(m.Payload), CreatedAt: stamp(m.Now),
	}
	r.msgs = append(r.msgs, msg)
	switch {
	case r.w.State == storage.StateRunning,
		r.w.State == storage.StateIdle && r.w.Wait.Kind == storage.WaitMessage && string(r.w.Wait.Data) == m.Topic:
		s.wake(r, stamp(m.Now))
	}
	return copyMessage(msg), true, nil
}

// ConsumeMessage writes r.Commit under l and moves the next message on r.Topic, if any, into
// the step record r.Step.
func (s *Store) ConsumeMessage(ctx context.Context, l storage.Lease, r storage.ConsumeRequest) (storage.Message, bool, error) {
	if err := storage.ValidateConsume(l, r); err != nil {
		return storage.Message{}, false, err
	}
	if err := s.begin(ctx, "consume message"); err != nil {
		return storage.Message{}, false, err
	}
	defer s.mu.Unlock()
	rec, err := s.fenced("consume message", l)
	if err != nil {
		return storage.Message{}, false, err
	}
	s.commit(rec, r.Commit)
	for _, msg := range rec.msgs {
		if msg.Topic != r.Topic || msg.ConsumedBy != "" {
			continue
		}
		now := stamp(r.Now)
		msg.ConsumedBy, msg.ConsumedAt = r.Step, now
		s.putSteps(rec, []storage.Step{{Name: r.Step, State: storage.StepCompleted, Attempts: 1, Result: msg.Payload}}, now)
		return copyMessage(msg), true, nil
	}
	return storage.Message{}, false, nil
}

func copyMessage(m *storage.Message) storage.Message {
	c := *m
	c.Payload = clone(c.Payload)
	return c
}
