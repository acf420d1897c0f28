package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// execute runs one claimed workflow with a heartbeat alongside, once it has one of slots, and
// returns when both ended. While it waits for a slot (claimed ahead, see Prefetch) the
// heartbeat keeps its lease; if stop ends first, the lease is given back and nothing runs.
func (w *Worker) execute(parent, stop context.Context, slots chan struct{}, wf storage.Workflow) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)

	// The heartbeat lives exactly as long as Execute, even when the run's context was
	// cancelled: a step that is slow to notice must not lose its lease to another worker.
	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(parent))
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeat(hbCtx, wf, cancel)
	}()

	select {
	case slots <- struct{}{}:
	case <-stop.Done():
		select {
		case slots <- struct{}{}: // a slot was free as well: run, the graceful wait covers it
		default:
			stopHeartbeat()
			<-hbDone
			w.release(ctx, wf) // never started: give it back at once
			return
		}
	}
	w.stats.running.Add(1)
	err := w.eng.Execute(ctx, wf)
	w.stats.running.Add(-1)
	<-slots
	stopHeartbeat()
	<-hbDone
	if errors.Is(context.Cause(ctx), sdk.ErrShutdown) {
		w.release(ctx, wf)
	}

	if err != nil {
		w.log.Error("workflow run failed", "workflow", wf.Name, "key", wf.Key, "id", wf.ID, "error", err)
		w.stats.runErrors.Add(1)
	}
	w.stats.finished.Add(1)
}

// release gives back the lease of a run cancelled by shutdown, so another worker takes the
// workflow over at once instead of after the TTL. Execute normally did so already and this
// finds the lease gone (ignored); it matters when the run ended some other way after the
// cancellation, for example a step that ignored its context and then failed to save.
func (w *Worker) release(ctx context.Context, wf storage.Workflow) {
	// Detached from the shut-down context, but bounded: past the TTL the lease is gone anyway.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.ttl)
	defer cancel()
	err := w.store.Release(rctx, wf.Lease(), w.clock.Now())
	if err != nil && !errors.Is(err, storage.ErrLeaseLost) && !errors.Is(err, storage.ErrCancelled) {
		w.log.Warn("release on shutdown failed; the workflow runs again when its lease expires",
			"workflow", wf.Name, "key", wf.Key, "id", wf.ID, "error", err)
	}
}

// heartbeat extends wf's lease every HeartbeatEvery of real time until ctx is done. When the
// store reports the lease lost or the workflow cancelled it cancels the run with that error
// as the cause and stops. Other errors (a database blip) are logged and tried again at the
// next beat: the lease may well outlive them, and if it does not, the next beat says so.
//
// The beat is paced by real time, not the engine's clock: a lease expires by the store's
// clock, which a fake or skewed engine clock does not move. The engine's time only sets the
// RunAt the heartbeat stores (when the row is due again if the lease lapses).
func (w *Worker) heartbeat(ctx context.Context, wf storage.Workflow, cancelRun context.CancelCauseFunc) {
	lease := wf.Lease()
	tick := time.NewTicker(w.cfg.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// A beat that outlasts the TTL is pointless: the lease is gone by then.
		bctx, cancel := context.WithTimeout(ctx, w.cfg.ttl)
		err := w.store.Heartbeat(bctx, lease, w.cfg.ttl, w.clock.Now())
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, storage.ErrLeaseLost) || errors.Is(err, storage.ErrCancelled):
			if ctx.Err() != nil || errors.Is(err, storage.ErrLeaseReleased) {
				// The run already ended (or is ending): its own final write released the
				// lease, so nothing was lost.
				return
			}
			w.stats.heartbeatsLost.Add(1)
			w.log.Warn("heartbeat: stopping the run", "workflow", wf.Name, "key", wf.Key, "id", wf.ID, "error", err)
			cancelRun(err)
			return
		case ctx.Err() != nil:
			return
		default:
			w.log.Warn("heartbeat failed; will try again", "workflow", wf.Name, "key", wf.Key, "id", wf.ID, "error", err)
		}
	}
}
