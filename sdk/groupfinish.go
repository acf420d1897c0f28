package sdk

import (
	"context"
	"sync"

	"github.com/chronoforge/chronoforge/storage"
)

// maxGroupFinish bounds how many runs' final writes one FinishRuns call carries.
const maxGroupFinish = 64

// groupFinish writes the final writes of runs that end close together with one FinishRuns
// call (group commit), on stores that implement storage.GroupFinisher. It adds no wait: a
// run whose final write finds no call in flight writes at once, alone, with FinishRun (so a
// lone run costs what it did). Final writes that arrive while a call is in flight queue;
// when it returns, the first of them takes the flusher's role and writes the whole queue
// with the next call. The role moves from run to run, so no run writes for others for long.
type groupFinish struct {
	store storage.GroupFinisher
	mu    sync.Mutex
	queue []*finishReq
	busy  bool // a flusher is writing
}

type finishReq struct {
	ctx  context.Context
	end  storage.RunEnd
	done chan error
	lead chan struct{} // the flusher's role, handed to this run
}

// finishRun writes the final write of the run holding l, alone or grouped with others.
func (e *Engine) finishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	g := e.group
	if g == nil {
		return e.store.FinishRun(ctx, l, f)
	}
	req := &finishReq{ctx: ctx, end: storage.RunEnd{Lease: l, Finish: f}, done: make(chan error, 1), lead: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, req)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if lead {
		e.flushGroup()
	}
	for {
		select {
		case err := <-req.done:
			return err
		case <-req.lead:
			e.flushGroup()
		}
	}
}

// flushGroup writes the queued final writes (up to maxGroupFinish) with one call, then hands
// the flusher's role to the first run still waiting, or gives it up.
func (e *Engine) flushGroup() {
	g := e.group
	g.mu.Lock()
	batch := g.queue[:min(len(g.queue), maxGroupFinish)]
	g.queue = g.queue[len(batch):]
	g.mu.Unlock()
	e.writeGroup(batch)
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.busy = false
	} else {
		g.queue[0].lead <- struct{}{}
	}
	g.mu.Unlock()
}

// writeGroup writes one group of final writes and answers each run. The call runs under the
// context of the group's first run; a run whose own context ended meanwhile still gets its
// write (its context is a detached, bounded one, see Engine.detached).
func (e *Engine) writeGroup(batch []*finishReq) {
	if len(batch) == 1 {
		batch[0].done <- e.store.FinishRun(batch[0].ctx, batch[0].end.Lease, batch[0].end.Finish)
		return
	}
	ends := make([]storage.RunEnd, len(batch))
	for i, r := range batch {
		ends[i] = r.end
	}
	errs, err := e.group.store.FinishRuns(batch[0].ctx, ends)
	for i, r := range batch {
		if err != nil {
			r.done <- err
			continue
		}
		r.done <- errs[i]
	}
}
