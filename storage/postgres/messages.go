package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// Mailboxes: a workflow's messages, each on a topic, consumed in ID order into step records.

// messageRow receives the columns of messageColumns; every column is nullable because the
// statements return them through outer joins.
type messageRow struct {
	id, workflowID       pgtype.Int8
	topic, key, consumer pgtype.Text
	payload              []byte
	created, consumed    pgtype.Timestamptz
}

func (r *messageRow) dest() []any {
	return []any{&r.id, &r.workflowID, &r.topic, &r.key, &r.payload, &r.created, &r.consumer, &r.consumed}
}

// valid reports whether the row holds a message (not the NULLs of an outer join).
func (r *messageRow) valid() bool { return r.id.Valid }

func (r *messageRow) message() storage.Message {
	return storage.Message{
		ID: r.id.Int64, WorkflowID: r.workflowID.Int64, Topic: r.topic.String, Key: r.key.String,
		Payload: r.payload, CreatedAt: fromTS(r.created), ConsumedBy: r.consumer.String, ConsumedAt: fromTS(r.consumed),
	}
}

// sendAttempts bounds how often SendMessage runs its statement again after its snapshot
// missed a message committed while it waited for the workflow's lock (see sendMessage).
const sendAttempts = 5

// SendMessage stores m in the workflow's mailbox, or returns the message already stored under
// m.Key with created == false, in one statement that locks the workflow row (so a concurrent
// Cancel or FinishRun is ordered before or after it, never across it). A final workflow
// refuses a new message with an error wrapping storage.ErrWrongState; an unknown one gives
// storage.ErrNotFound. A stored message wakes the workflow as Wake would at m.Now when it is
// idle waiting on m.Topic (RunAt becomes the earlier of RunAt and m.Now, and listeners are
// told) or running (the wake is kept for FinishRun). A second statement runs only when the
// first one's snapshot missed a message committed while it waited for the lock.
func (s *Store) SendMessage(ctx context.Context, m storage.NewMessage) (storage.Message, bool, error) {
	if err := storage.ValidateMessage(m); err != nil {
		return storage.Message{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Message{}, false, err
	}
	args := pgx.StrictNamedArgs{
		"id": m.WorkflowID, "topic": m.Topic, "key": pgtype.Text{String: m.Key, Valid: m.Key != ""},
		"payload": m.Payload, "now": ts(m.Now),
		"wait_kind": string(storage.WaitMessage), "topic_data": []byte(m.Topic),
	}
	fail := func(err error) (storage.Message, bool, error) {
		return storage.Message{}, false, fmt.Errorf("postgres: send message on topic %q to workflow %d: %w", m.Topic, m.WorkflowID, err)
	}
	for range sendAttempts {
		var (
			state           pgtype.Text
			moved           pgtype.Bool
			created         pgtype.Bool
			row             messageRow
			woken, notified int64
		)
		err := retry(ctx, once, func(ctx context.Context) error {
			row = messageRow{}
			dest := append([]any{&state, &moved, &created}, row.dest()...)
			dest = append(dest, &woken, &notified)
			return s.pool.QueryRow(ctx, s.q.sendMessage, args).Scan(dest...)
		})
		switch {
		case err != nil:
			return fail(err)
		case row.valid():
			return row.message(), created.Bool, nil
		case !state.Valid:
			return fail(storage.ErrNotFound)
		case storage.State(state.String).Final():
			if m.Key != "" && moved.Bool {
				continue // the key may have been stored before the workflow ended: look again
			}
			return fail(fmt.Errorf("the workflow is %s: %w", state.String, storage.ErrWrongState))
		}
		// Neither stored nor found: the key was taken by a send that committed after this
		// statement's snapshot. The next statement sees it.
	}
	return fail(fmt.Errorf("the message under key %q kept changing during %d attempts", m.Key, sendAttempts))
}

// ConsumeMessage writes r.Commit under the lease l as SaveSteps does and, in the same
// statement, takes the oldest unconsumed message on r.Topic: it is marked consumed by r.Step
// at r.Now and the step record r.Step is upserted as completed with the payload as result.
// With no message waiting only the commit is written and ok is false. A refused fence writes
// nothing and reports why, like SaveSteps.
func (s *Store) ConsumeMessage(ctx context.Context, l storage.Lease, r storage.ConsumeRequest) (storage.Message, bool, error) {
	if err := storage.ValidateConsume(l, r); err != nil {
		return storage.Message{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Message{}, false, err
	}
	args := commitArgs(l, r.Commit)
	args["topic"], args["step"] = r.Topic, r.Step
	var row messageRow
	err := s.fenced(ctx, l, func(ctx context.Context) (bool, error) {
		var n, steps int64
		row = messageRow{}
		dest := append([]any{&n, &steps}, row.dest()...)
		err := s.pool.QueryRow(ctx, s.q.consumeMessage, args).Scan(dest...)
		if err == nil && row.valid() != (steps == 1) {
			err = errors.New("the consumed message and its step record disagree")
		}
		return n == 1, err
	})
	if err != nil {
		return storage.Message{}, false, fmt.Errorf("postgres: consume message on topic %q into step %q: %w", r.Topic, r.Step, err)
	}
	if !row.valid() {
		return storage.Message{}, false, nil
	}
	return row.message(), true, nil
}
