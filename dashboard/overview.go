package dashboard

import (
	"net/http"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

type overviewData struct {
	Counts   storage.StateCounts
	Rows     []overviewRow
	States   []storage.State
	Totals   []int
	Backlog  storage.Backlog
	DueAge   time.Duration
	Stalled  int
	Failed   int
	Sample   int
	Expired  []storage.Workflow
	Complete bool
	// Held lists the flows whose limits hold back due workflows, HeldTotal counts those
	// (HeldCapped: a count stopped at storage.FlowProbe).
	Held       []flowRow
	HeldTotal  int
	HeldCapped bool
}

type overviewRow struct {
	Name   string
	Counts []int
}

func (d *dash) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	counts, err := d.insp.CountStates(ctx, storage.CountStatesQuery{Sample: d.cfg.sample})
	if err != nil {
		d.storeFail(w, r, "count states", err)
		return
	}
	now := d.cfg.now()
	bl, err := d.insp.Backlog(ctx, now, 20)
	if err != nil {
		d.storeFail(w, r, "backlog", err)
		return
	}
	od := overviewData{Counts: counts, States: storage.States, Backlog: bl, Sample: d.cfg.sample, Totals: make([]int, len(storage.States))}
	if !bl.OldestDue.IsZero() {
		od.DueAge = now.Sub(bl.OldestDue)
	}
	for _, c := range counts.Counts {
		if len(od.Rows) == 0 || od.Rows[len(od.Rows)-1].Name != c.Name {
			od.Rows = append(od.Rows, overviewRow{Name: c.Name, Counts: make([]int, len(storage.States))})
		}
		i := slices.Index(storage.States, c.State)
		od.Rows[len(od.Rows)-1].Counts[i] += c.Count
		od.Totals[i] += c.Count
		switch c.State {
		case storage.StateStalled:
			od.Stalled += c.Count
		case storage.StateFailed:
			od.Failed += c.Count
		}
	}
	if d.flows != nil {
		states, err := d.flows.ListFlows(ctx, now)
		if err != nil {
			d.storeFail(w, r, "list flows", err)
			return
		}
		for _, fr := range flowRows(states) {
			if fr.Held > 0 {
				od.Held = append(od.Held, fr)
				od.HeldTotal += fr.Held
				od.HeldCapped = od.HeldCapped || fr.Capped
			}
		}
	}
	d.render(w, http.StatusOK, "overview", d.newPage(r, "Overview", "overview", od))
}
