package sdk

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// receiveRecord is the step record a Receive keeps its message (or its timeout) in.
func receiveRecord(name string) string { return "receive$" + name }

// Target names the workflow a message is sent to: a *Handle of any output type, or
// WorkflowID.
type Target interface {
	// ID returns the workflow's storage id.
	ID() int64
}

// WorkflowID is a Target given by storage id.
type WorkflowID int64

// ID returns the id itself.
func (id WorkflowID) ID() int64 { return int64(id) }

// SendOption configures Send.
type SendOption interface{ applySend(*sendConfig) }

type sendConfig struct{ key string }

type sendOption func(*sendConfig)

func (f sendOption) applySend(c *sendConfig) { f(c) }

// MessageKey makes a Send idempotent: the workflow keeps at most one message with the key,
// so sending it again (a retried request, a redelivered event) stores nothing and returns
// nil, even once the first was received or the workflow has finished.
func MessageKey(key string) SendOption { return sendOption(func(c *sendConfig) { c.key = key }) }

// Send delivers v to the durable mailbox of the target workflow under topic, where
// Receive takes it: messages on one topic are received one at a time, in the order they were
// stored. A workflow waiting in Receive on that topic is woken at once. Sending to a
// completed, failed or cancelled workflow stores nothing and returns an error matching
// ErrWrongState; a stalled workflow keeps the message for when it is retried. Send is one
// storage call. From workflow code, call it inside a Step.
func Send[T any](ctx context.Context, e *Engine, target Target, topic string, v T, opts ...SendOption) (err error) {
	var cfg sendConfig
	for _, o := range opts {
		o.applySend(&cfg)
	}
	id := target.ID()
	ctx, span := e.tel.StartProducer(ctx, telemetry.OpSend, telemetry.Workflow{ID: id})
	defer func() { telemetry.EndProducer(span, telemetry.OpSend, telemetry.Workflow{}, err, "") }()
	if err := validateUserName("topic", topic); err != nil {
		return fmt.Errorf("send to workflow %d: %w", id, err)
	}
	payload, err := e.codec.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: send to workflow %d topic %q: encode %s: %w", ErrInvalid, id, topic, reflect.TypeFor[T](), err)
	}
	_, created, err := e.store.SendMessage(ctx, storage.NewMessage{WorkflowID: id, Topic: topic, Key: cfg.key, Payload: payload, Now: e.clock.Now()})
	if err != nil {
		return fmt.Errorf("send to workflow %d topic %q: %w", id, topic, err)
	}
	if created {
		e.notify()
		e.changedWorkflow(id)
	}
	return nil
}

// WaitTimeout bounds a wait: how long Receive waits for a message, or WaitUntil for its
// condition (default 1 hour there; Receive waits without limit by default). The deadline is
// fixed when the wait is first recorded.
func WaitTimeout(d time.Duration) WaitOption {
	return waitOption(func(c *waitConfig) { c.timeout = d })
}

// Receive returns the next message on topic from the workflow's mailbox, decoded into T.
// When none is waiting, the workflow suspends (no timer, unless WaitTimeout bounds the
// wait) until Send delivers one; with WaitTimeout, once the deadline passes with no message
// Receive returns an error matching ErrWaitTimeout, which the workflow may handle (it does
// not halt the run, and a replay returns the same error).
//
// Receipt is exactly once: the message leaves the mailbox in the same write that records it
// under name, so a replay returns the same message and no message is received twice or lost,
// whatever crashes. Each Receive (each name) takes one message; loop with distinct names to
// take several. Each call that finds no recorded message costs one storage call.
func Receive[T any](c *Context, name, topic string, opts ...WaitOption) (T, error) {
	var zero T
	r := c.run
	if err := r.check(); err != nil {
		return zero, err
	}
	recName := receiveRecord(name)
	if err := r.use("receive", name, recName); err != nil {
		return zero, err
	}
	if err := validateUserName("topic", topic); err != nil {
		return zero, r.halt(haltFail, fmt.Errorf("workflow %q receive %q: %w", r.wf.Name, name, err))
	}
	var cfg waitConfig
	for _, o := range opts {
		o.applyWait(&cfg)
	}
	if cfg.timeout < 0 {
		return zero, r.halt(haltFail, fmt.Errorf("%w: receive %q has a negative timeout", ErrInvalid, name))
	}
	rec, _ := r.record(recName)
	if rec.State == storage.StepCompleted {
		r.tel.run.Replayed++
		if meta := readMeta(rec); meta.TimedOut {
			return zero, receiveTimeout(name, topic, meta.Deadline)
		}
		return decodeMessage[T](r, name, rec.Result)
	}
	now := r.eng.clock.Now()
	meta := readMeta(rec)
	if cfg.timeout > 0 && meta.Deadline.IsZero() {
		meta.Deadline = now.Add(cfg.timeout)
	}
	// One unit: the run's queued records go with it, and a waiting message is consumed into
	// the record.
	commit := storage.Commit{Steps: r.pending, Errors: r.errs, Now: now}
	if r.valuesDirty {
		commit.Values = r.encodeValues()
	}
	wctx, cancel := r.eng.detached(r.ctx)
	msg, ok, err := r.eng.store.ConsumeMessage(wctx, r.lease, storage.ConsumeRequest{Commit: commit, Topic: topic, Step: recName})
	cancel()
	if err != nil {
		return zero, r.halt(haltAbort, fmt.Errorf("workflow %q key %q: receive %q: %w", r.wf.Name, r.wf.Key, name, err))
	}
	r.pending, r.errs, r.valuesDirty = nil, nil, false
	if ok {
		r.live()
		got := storage.Step{WorkflowID: r.wf.ID, Name: recName, State: storage.StepCompleted, Attempts: 1,
			Result: msg.Payload, CreatedAt: rec.CreatedAt, UpdatedAt: now, CompletedAt: now}
		r.steps[recName] = &got
		return decodeMessage[T](r, name, msg.Payload)
	}
	if !meta.Deadline.IsZero() && !now.Before(meta.Deadline) {
		meta.TimedOut = true
		rec.State, rec.CompletedAt, rec.Attempts, rec.Meta = storage.StepCompleted, now, rec.Attempts+1, meta.bytes()
		r.queue(rec)
		return zero, receiveTimeout(name, topic, meta.Deadline)
	}
	if r.steps[recName] == nil || !meta.Deadline.Equal(readMeta(*r.steps[recName]).Deadline) {
		rec.Meta = meta.bytes()
		r.queue(rec)
	}
	return zero, r.suspend(meta.Deadline, storage.Wait{Kind: storage.WaitMessage, Step: recName, Data: []byte(topic)})
}

func receiveTimeout(name, topic string, deadline time.Time) error {
	return fmt.Errorf("%w: receive %q: no message on topic %q by %s", ErrWaitTimeout, name, topic, deadline.Format(time.RFC3339Nano))
}

func decodeMessage[T any](r *run, name string, payload []byte) (T, error) {
	var v T
	if err := r.eng.codec.Unmarshal(payload, &v); err != nil {
		var zero T
		return zero, r.halt(haltFail, decodeError(r, receiveRecord(name), reflect.TypeFor[T](), err))
	}
	return v, nil
}
