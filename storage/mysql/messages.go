package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Mailboxes: SendMessage appends to a workflow's mailbox (the messages table), and
// ConsumeMessage moves the next message of a topic into a step record under the lease.
// Both first lock the workflow row, so sends to one workflow, and the consumptions of its
// lease holder, are serialised on it: message IDs grow in the order of the sends, and a
// consumption sees every send committed before it.

// messageColumns are the columns read into a storage.Message by scanMessage.
const messageColumns = "id, workflow_id, topic, msg_key, payload, created_at, consumed_by, consumed_at"

// SendMessage stores m in the workflow's mailbox, or returns the message the workflow holds
// under m.Key already, in one transaction: one SELECT ... FOR UPDATE of the workflow row
// (its state and wait), one INSERT IGNORE of the message (the unique (workflow_id, msg_key)
// index skips a key that is taken), and one statement more, only when needed: the wake
// UPDATE, as Wake makes it, when the message is stored for a running workflow or for an idle
// one waiting for a message on m.Topic; or the SELECT of the stored message when the key was
// taken. A final workflow stores nothing: for a taken key the stored message is returned
// (one SELECT), otherwise an error wrapping storage.ErrWrongState. An unknown workflow gives
// an error wrapping storage.ErrNotFound.
func (s *Store) SendMessage(ctx context.Context, m storage.NewMessage) (storage.Message, bool, error) {
	if err := storage.ValidateMessage(m); err != nil {
		return storage.Message{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Message{}, false, err
	}
	now := micro(m.Now)
	var (
		out     storage.Message
		created bool
	)
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out, created = storage.Message{}, false
		var state, kind, data []byte
		err := tx.QueryRowContext(ctx, s.q.lockForMessage, m.WorkflowID).Scan(&state, &kind, &data)
		if errors.Is(err, sql.ErrNoRows) {
			return storage.ErrNotFound
		}
		if err != nil {
			return err
		}
		st := storage.State(state)
		if st.Final() {
			if m.Key != "" {
				msg, err := s.messageByKey(ctx, tx, m.WorkflowID, m.Key)
				if err == nil {
					out = msg
					return nil
				}
				if !errors.Is(err, storage.ErrNotFound) {
					return err
				}
			}
			return fmt.Errorf("the workflow is %s: %w", st, storage.ErrWrongState)
		}
		var key any // NULL: no key, which never collides
		if m.Key != "" {
			key = bstr(m.Key)
		}
		res, err := tx.ExecContext(ctx, s.q.insertMessage, m.WorkflowID, bstr(m.Topic), key, m.Payload, dbTime(now))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			// The key is taken (IGNORE skips nothing else: every value was validated and the
			// locked workflow row exists).
			out, err = s.messageByKey(ctx, tx, m.WorkflowID, m.Key)
			return err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		out = storage.Message{ID: id, WorkflowID: m.WorkflowID, Topic: m.Topic, Key: m.Key, Payload: slices.Clone(m.Payload), CreatedAt: now}
		created = true
		if st == storage.StateRunning ||
			st == storage.StateIdle && storage.WaitKind(kind) == storage.WaitMessage && bytes.Equal(data, []byte(m.Topic)) {
			t := dbTime(now)
			if _, err := tx.ExecContext(ctx, s.q.wake, t, t, t, t, m.WorkflowID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return storage.Message{}, false, fmt.Errorf("mysql: send message on topic %q to workflow %d: %w", m.Topic, m.WorkflowID, err)
	}
	return out, created, nil
}

// messageByKey reads the message a workflow holds under key, with a shared lock (the latest
// committed row), or returns storage.ErrNotFound.
func (s *Store) messageByKey(ctx context.Context, tx *sql.Tx, workflowID int64, key string) (storage.Message, error) {
	msg, err := scanMessage(tx.QueryRowContext(ctx, s.q.messageByKey, workflowID, bstr(key)))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Message{}, storage.ErrNotFound
	}
	return msg, err
}

// scanMessage reads one row of messageColumns.
func scanMessage(row *sql.Row) (storage.Message, error) {
	var (
		m                      storage.Message
		topic, key, consumedBy []byte
	)
	err := row.Scan(&m.ID, &m.WorkflowID, &topic, &key, &m.Payload, nt(&m.CreatedAt), &consumedBy, nt(&m.ConsumedAt))
	if err != nil {
		return storage.Message{}, err
	}
	m.Topic, m.Key, m.ConsumedBy = string(topic), string(key), string(consumedBy)
	return m, nil
}

// ConsumeMessage writes r.Commit under the lease l and moves the next unconsumed message on
// r.Topic, if there is one, into the step record r.Step, in one transaction fenced like
// SaveSteps: the fence, one SELECT ... FOR UPDATE of the next message (a seek of the
// (workflow_id, topic, consumed, id) index, reading the stored completion time of r.Step
// with it), one multi-row upsert of the commit's steps and the consuming step, one INSERT of
// the error records (when there are any), one UPDATE marking the message consumed (when
// there is one) and one UPDATE of the workflow row. The step is completed with Attempts 1
// and the payload as its Result; a step of that name that was completed before keeps its
// earlier CompletedAt, as SaveSteps would keep it.
func (s *Store) ConsumeMessage(ctx context.Context, l storage.Lease, r storage.ConsumeRequest) (storage.Message, bool, error) {
	if err := storage.ValidateConsume(l, r); err != nil {
		return storage.Message{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Message{}, false, err
	}
	now := micro(r.Now)
	var (
		out storage.Message
		ok  bool
	)
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out, ok = storage.Message{}, false
		if _, err := s.fence(ctx, tx, l, ""); err != nil {
			return err
		}
		var (
			msg       storage.Message
			key       []byte
			completed time.Time
		)
		err := tx.QueryRowContext(ctx, s.q.nextMessage, bstr(r.Step), l.WorkflowID, bstr(r.Topic)).
			Scan(&msg.ID, &key, &msg.Payload, nt(&msg.CreatedAt), nt(&completed))
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		c := r.Commit
		if found {
			c.Steps = append(slices.Clip(c.Steps), storage.Step{
				Name: r.Step, State: storage.StepCompleted, Attempts: 1, Result: msg.Payload,
				CompletedAt: storage.Earliest(completed, now),
			})
		}
		set, args, err := s.writeCommit(ctx, tx, l.WorkflowID, c)
		if err != nil {
			return err
		}
		if found {
			if _, err := tx.ExecContext(ctx, s.q.consumeMessage, bstr(r.Step), dbTime(now), l.WorkflowID, msg.ID); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.workflows+" SET "+strings.Join(set, ", ")+" WHERE id = ?", append(args, l.WorkflowID)...); err != nil {
			return err
		}
		if found {
			msg.WorkflowID, msg.Topic, msg.Key = l.WorkflowID, r.Topic, string(key)
			msg.ConsumedBy, msg.ConsumedAt = r.Step, now
			out, ok = msg, true
		}
		return nil
	})
	if err != nil {
		return storage.Message{}, false, fmt.Errorf("mysql: consume message on topic %q: %w", r.Topic, err)
	}
	return out, ok, nil
}
