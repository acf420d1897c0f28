package sdk

import (
	"context"
	"fmt"
	"time"
)

// CleanupPolicy is the input of CleanupWorkflow: how often to clean up and how long to keep
// final workflows of each state. A zero Keep duration keeps that state forever.
type CleanupPolicy struct {
	// Every is the period between cleanups (default one hour): under a day, or whole days.
	Every time.Duration `json:"every,omitempty"`
	// KeepCompleted, KeepFailed and KeepCancelled: a workflow in that state is deleted once it
	// finished longer ago than this, measured from the tick's scheduled time.
	KeepCompleted time.Duration `json:"keep_completed,omitempty"`
	KeepFailed    time.Duration `json:"keep_failed,omitempty"`
	KeepCancelled time.Duration `json:"keep_cancelled,omitempty"`
	// BatchSize is CleanupOptions.BatchSize (0: 1,000 workflows per storage call).
	BatchSize int `json:"batch_size,omitempty"`
}

// CleanupWorkflow is a system workflow that runs Engine.Cleanup on a schedule, so an
// application keeps its database small without a cron job: register it with the engine
// (WithWorkflows(sdk.CleanupWorkflow)) and start it once under a key of your choice, for
// example:
//
//	sdk.CleanupWorkflow.Start(ctx, eng, "retention", sdk.CleanupPolicy{
//		Every: time.Hour, KeepCompleted: 7 * 24 * time.Hour, KeepFailed: 30 * 24 * time.Hour,
//	})
//
// Starting it again with the same key is a no-op (the stored policy wins); to change the
// policy, cancel it and start it under another key. Each tick is one Repeat tick: its cutoffs
// are the tick's scheduled time minus the Keep durations, so a retried tick deletes what the
// first attempt would have, and after downtime the missed ticks are skipped in one summary
// rather than run one by one. It never completes: it is idle between ticks, and cleanup never
// deletes it (only final workflows go).
var CleanupWorkflow = New("chronoforge.cleanup", func(c *Context, p CleanupPolicy) (struct{}, error) {
	every := p.Every
	if every == 0 {
		every = time.Hour
	}
	if every < 0 || p.KeepCompleted < 0 || p.KeepFailed < 0 || p.KeepCancelled < 0 || p.BatchSize < 0 {
		return struct{}{}, Permanent(fmt.Errorf("%w: cleanup policy %+v has a negative field", ErrInvalid, p))
	}
	eng := c.run.eng
	err := Repeat(c, "cleanup", Every(every), nil, func(ctx context.Context, tick time.Time) error {
		cutoff := func(keep time.Duration) time.Time {
			if keep == 0 {
				return time.Time{}
			}
			return tick.Add(-keep)
		}
		res, err := eng.Cleanup(ctx, CleanupOptions{
			CompletedBefore: cutoff(p.KeepCompleted),
			FailedBefore:    cutoff(p.KeepFailed),
			CancelledBefore: cutoff(p.KeepCancelled),
			BatchSize:       p.BatchSize,
		})
		eng.logger.Info("cleanup", "tick", tick, "completed", res.Completed, "failed", res.Failed, "cancelled", res.Cancelled, "error", err)
		return err
	})
	return struct{}{}, err
})
