package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

// retryPrefix names the step records that Retry writes: "$retry$<n>", one per retry.
const retryPrefix = "$retry$"

// retryRecord is the result stored in a retry step record.
type retryRecord struct {
	From  storage.State `json:"from"`
	Reset []string      `json:"reset,omitempty"`
}

// Retry moves a stalled or failed workflow back to work: its failed steps (and timed-out
// waits) get a fresh attempt budget, its workflow-level attempts restart, and the retry is
// recorded as its own step record. Retrying a workflow in any other state returns an error
// matching ErrWrongState and changes nothing.
func (e *Engine) Retry(ctx context.Context, id int64) (err error) {
	ctx, span := e.tel.StartProducer(ctx, telemetry.OpRetry, telemetry.Workflow{ID: id})
	var target telemetry.Workflow // named once loaded
	defer func() { telemetry.EndProducer(span, telemetry.OpRetry, target, err, "") }()
	wf, steps, err := e.store.Load(ctx, id)
	if err != nil {
		return fmt.Errorf("retry workflow %d: %w", id, err)
	}
	target = telemetry.Workflow{Name: wf.Name, Key: wf.Key}
	if wf.State != storage.StateStalled && wf.State != storage.StateFailed {
		return fmt.Errorf("retry workflow %q key %q: %w: it is %s; only stalled or failed workflows can be retried", wf.Name, wf.Key, ErrWrongState, wf.State)
	}
	now := e.clock.Now()
	var writes []storage.Step
	rec := retryRecord{From: wf.State}
	n := 1
	for _, s := range steps {
		if strings.HasPrefix(s.Name, retryPrefix) {
			n++
			continue
		}
		if s.Name == budgetRecord && len(s.Meta) > 0 {
			s.Meta = nil // the workflow's own budgets restart with its attempt count
			writes = append(writes, s)
			continue
		}
		if s.State == storage.StepFailed {
			s.State = storage.StepPending
			s.Meta = nil // a fresh budget and, for waits, a fresh deadline
			writes = append(writes, s)
			rec.Reset = append(rec.Reset, s.Name)
		}
	}
	result, _ := json.Marshal(rec)
	writes = append(writes, storage.Step{
		WorkflowID: id, Name: fmt.Sprintf("%s%d", retryPrefix, n), State: storage.StepCompleted,
		Attempts: 1, Result: result, CreatedAt: now, UpdatedAt: now, CompletedAt: now,
	})
	if _, err := e.store.Retry(ctx, id, storage.RetryRequest{Steps: writes, Now: now}); err != nil {
		return fmt.Errorf("retry workflow %q key %q: %w", wf.Name, wf.Key, err)
	}
	e.notify()
	e.changedWorkflow(id)
	return nil
}
