package dashboard

import (
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// waitingPages bounds the waiting page: at most this many pages of idle workflows are read.
const (
	waitingPages = 5
	waitingShown = 50
)

type waitGroup struct {
	Kind    string // the wait kind, "none" for a workflow that waits for nothing (due)
	Label   string
	Count   int
	Flagged int
	Rows    []waitRow
}

type waitRow struct {
	W       storage.Workflow
	Age     time.Duration
	Flagged bool
}

type waitingData struct {
	Groups    []waitGroup
	Read      int
	Truncated bool
	Threshold time.Duration
	Return    string
}

func (d *dash) waiting(w http.ResponseWriter, r *http.Request) {
	now := d.cfg.now()
	groups := map[string]*waitGroup{}
	wd := waitingData{Threshold: d.cfg.waitThreshold, Return: "/waiting"}
	var before int64
	for range waitingPages {
		rows, err := d.store.ListWorkflows(r.Context(), storage.ListFilter{States: []storage.State{storage.StateIdle}, Desc: true, BeforeID: before, Limit: storage.MaxListLimit})
		if err != nil {
			d.storeFail(w, r, "list idle workflows", err)
			return
		}
		for _, wf := range rows {
			kind, label := string(wf.Wait.Kind), string(wf.Wait.Kind)
			if kind == "" {
				kind, label = "none", "due (no wait)"
			}
			g := groups[kind]
			if g == nil {
				g = &waitGroup{Kind: kind, Label: label}
				groups[kind] = g
			}
			g.Count++
			age := now.Sub(wf.UpdatedAt)
			flag := (wf.Wait.Kind == storage.WaitSignal || wf.Wait.Kind == storage.WaitMessage) && age > d.cfg.waitThreshold
			if flag {
				g.Flagged++
			}
			if len(g.Rows) < waitingShown {
				g.Rows = append(g.Rows, waitRow{W: wf, Age: age, Flagged: flag})
			}
		}
		wd.Read += len(rows)
		// A full last page may have older idle workflows behind it, which are not read.
		wd.Truncated = len(rows) == storage.MaxListLimit
		if !wd.Truncated {
			break
		}
		before = rows[len(rows)-1].ID
	}
	for _, g := range groups {
		// Flagged ones first, oldest first among them.
		slices.SortStableFunc(g.Rows, func(a, b waitRow) int {
			if a.Flagged != b.Flagged {
				if a.Flagged {
					return -1
				}
				return 1
			}
			return 0
		})
		wd.Groups = append(wd.Groups, *g)
	}
	sort.Slice(wd.Groups, func(i, j int) bool { return wd.Groups[i].Kind < wd.Groups[j].Kind })
	d.render(w, http.StatusOK, "waiting", d.newPage(r, "Waiting", "waiting", wd))
}
