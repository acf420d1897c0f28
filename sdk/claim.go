package sdk

import (
	"context"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Claim takes up to r.Limit runnable workflows for a worker: it is the store's Claim
// (storage.Storage.Claim), instrumented. A claim that took at least one workflow gets a
// claim span and its batch size is recorded; one that took none (an idle poll) records
// nothing, so polling does not flood a tracing backend. Workers (package dispatch) claim
// through it and pass each workflow to Execute.
func (e *Engine) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	start := time.Now() // real time: the span's, not the engine's clock
	claimed, err := e.store.Claim(ctx, r)
	e.tel.Claimed(ctx, start, r.Owner, r.Limit, len(claimed))
	return claimed, err
}
