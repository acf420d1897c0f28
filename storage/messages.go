package storage

import (
	"fmt"
	"time"
)

// Limits of messages and tags.
const (
	// MaxTopicLen is the longest message topic, in bytes.
	MaxTopicLen = MaxNameLen
	// MaxMessageKeyLen is the longest message key, in bytes.
	MaxMessageKeyLen = MaxKeyLen
	// MaxMessage is the largest message payload, in bytes.
	MaxMessage = MaxPayload
	// MaxTags is the most tags one workflow carries (and one ListFilter asks for).
	MaxTags = 16
	// MaxTagKeyLen is the longest tag key, in bytes.
	MaxTagKeyLen = 64
	// MaxTagValueLen is the longest tag value, in bytes.
	MaxTagValueLen = 256
	// MaxCreateBatch is the most workflows one CreateWorkflows call creates.
	MaxCreateBatch = MaxSpawnBatch
)

// Message is one message in a workflow's mailbox.
type Message struct {
	// ID is assigned by the store; a workflow's messages on one topic are consumed in ID
	// order, which is the order SendMessage stored them in.
	ID         int64
	WorkflowID int64
	Topic      string
	// Key is the idempotency key it was sent with; empty for none.
	Key     string
	Payload []byte
	// CreatedAt is the Now of the send that stored it.
	CreatedAt time.Time
	// ConsumedBy is the name of the step record the message was consumed into, and
	// ConsumedAt the Now of that ConsumeMessage; both unset while it waits in the mailbox.
	ConsumedBy string
	ConsumedAt time.Time
}

// NewMessage is the input of SendMessage.
type NewMessage struct {
	WorkflowID int64
	// Topic names the queue within the workflow's mailbox: 1..MaxTopicLen bytes of text.
	Topic string
	// Key, when not empty, makes the send idempotent: the workflow keeps at most one message
	// with that key, whatever its topic.
	Key     string
	Payload []byte
	Now     time.Time
}

// ConsumeRequest is the input of ConsumeMessage: a commit written in any case, the topic
// to take the next message from, and the step record to consume it into.
type ConsumeRequest struct {
	Commit
	Topic string
	// Step names the step record the message is written to (completed, its Result the
	// message's payload). It must not be among Commit.Steps.
	Step string
}

// ValidateTags checks tags given to CreateWorkflow or asked for by a ListFilter: at most
// MaxTags, keys of 1..MaxTagKeyLen bytes and values of 0..MaxTagValueLen bytes, valid UTF-8
// without control characters.
func ValidateTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return fmt.Errorf("%w: %d tags, more than %d", ErrInvalid, len(tags), MaxTags)
	}
	for k, v := range tags {
		if err := validateText("tag key", k, MaxTagKeyLen); err != nil {
			return err
		}
		if v == "" {
			continue
		}
		if err := validateText(fmt.Sprintf("value of tag %q", k), v, MaxTagValueLen); err != nil {
			return err
		}
	}
	return nil
}

// ValidateMessage checks the input of SendMessage: a workflow ID, the topic, the key (empty
// or a valid key), the payload size and Now.
func ValidateMessage(m NewMessage) error {
	if m.WorkflowID <= 0 {
		return fmt.Errorf("%w: message to workflow id %d", ErrInvalid, m.WorkflowID)
	}
	if err := validateText("message topic", m.Topic, MaxTopicLen); err != nil {
		return err
	}
	if m.Key != "" {
		if err := validateText("message key", m.Key, MaxMessageKeyLen); err != nil {
			return err
		}
	}
	if len(m.Payload) > MaxMessage {
		return fmt.Errorf("%w: message on topic %q is %d bytes, more than %d", ErrTooLarge, m.Topic, len(m.Payload), MaxMessage)
	}
	return validateNow("now", m.Now)
}

// ValidateConsume checks the input of ConsumeMessage: the lease, the commit (as SaveSteps
// checks it), the topic, and a step name not among the commit's steps.
func ValidateConsume(l Lease, r ConsumeRequest) error {
	if err := ValidateLease(l); err != nil {
		return err
	}
	if err := ValidateCommit(r.Commit); err != nil {
		return err
	}
	if err := validateText("message topic", r.Topic, MaxTopicLen); err != nil {
		return err
	}
	if err := ValidateStepName(r.Step); err != nil {
		return err
	}
	for _, s := range r.Steps {
		if s.Name == r.Step {
			return fmt.Errorf("%w: step %q is both in the commit and the step a message is consumed into", ErrInvalid, r.Step)
		}
	}
	return nil
}

// ValidateCreateBatch checks the input of CreateWorkflows: 1..MaxCreateBatch workflows, each
// as CreateWorkflow checks it, no name and key twice.
func ValidateCreateBatch(ws []NewWorkflow) error {
	if len(ws) == 0 || len(ws) > MaxCreateBatch {
		return fmt.Errorf("%w: %d workflows in one create batch, want 1..%d", ErrInvalid, len(ws), MaxCreateBatch)
	}
	seen := make(map[[2]string]int, len(ws))
	for i, w := range ws {
		if err := ValidateNew(w); err != nil {
			return fmt.Errorf("workflow %d (%q key %.32q): %w", i, w.Name, w.Key, err)
		}
		k := [2]string{w.Name, w.Key}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("%w: workflows %d and %d are both %q key %q", ErrInvalid, j, i, w.Name, w.Key)
		}
		seen[k] = i
	}
	return nil
}
