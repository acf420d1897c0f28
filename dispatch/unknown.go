package dispatch

import (
	"context"

	"github.com/chronoforge/chronoforge/storage"
)

// unknownPage is how many unknown-named workflows one check looks at.
const unknownPage = 100

// watchUnknown reports due workflows whose names the engine does not know, once at the start and
// then every UnknownCheckEvery, until ctx is done.
func (w *Worker) watchUnknown(ctx context.Context) {
	for ctx.Err() == nil {
		w.checkUnknown(ctx)
		select {
		case <-ctx.Done():
		case <-w.clock.After(w.cfg.unknownEvery):
		}
	}
}

// checkUnknown lists one page of due idle or running workflows with names outside the
// engine's registry and logs a warning per name. It only reads: those workflows belong to
// some other engine (or to code since removed) and are left exactly as they are.
func (w *Worker) checkUnknown(ctx context.Context) {
	found, err := w.store.ListWorkflows(ctx, storage.ListFilter{
		NotNames: w.names,
		States:   []storage.State{storage.StateIdle, storage.StateRunning},
		DueBy:    w.clock.Now(),
		Limit:    unknownPage,
	})
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("checking for workflows with unknown names failed", "error", err)
		}
		return
	}
	w.stats.unknown.Store(int64(len(found)))
	type group struct {
		count   int
		example string
	}
	var order []string
	groups := map[string]*group{}
	for _, wf := range found {
		g := groups[wf.Name]
		if g == nil {
			g = &group{example: wf.Key}
			groups[wf.Name] = g
			order = append(order, wf.Name)
		}
		g.count++
	}
	for _, name := range order {
		g := groups[name]
		w.log.Warn("due workflows have a name this engine does not know; no worker here will run them",
			"workflow", name, "count", g.count, "example_key", g.example, "page_full", len(found) == unknownPage)
	}
}
