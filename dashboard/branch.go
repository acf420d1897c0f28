package dashboard

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

type branchData struct {
	Parent    storage.Workflow
	Step      storage.Step
	Cells     []branchCell
	Total     int
	Capped    bool
	Done      int
	Remaining int
	Rate      float64 // children finished per second over RecentFinished
	ETA       time.Duration
	Attention []storage.Workflow
	Active    []storage.Workflow
	Cap       int
	Return    string
	ListQuery template.URL
}

type branchCell struct {
	State  storage.State
	Count  int
	Capped bool
}

// branchList is how many children of each group the branch page lists.
const branchList = 50

func (d *dash) branch(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(r.PathValue("id"), "workflow ID")
	if err != nil {
		d.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	stepID, err := parseID(r.PathValue("step"), "branch step ID")
	if err != nil {
		d.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	parent, steps, err := d.store.Load(ctx, id)
	if err != nil {
		d.storeFail(w, r, fmt.Sprintf("workflow %d", id), err)
		return
	}
	bd := branchData{Parent: parent, Cap: d.cfg.branchCap}
	found := false
	for _, s := range steps {
		if s.ID == stepID && strings.HasPrefix(s.Name, storage.BranchStepPrefix) {
			bd.Step, found = s, true
		}
	}
	if !found {
		d.fail(w, r, http.StatusNotFound, fmt.Sprintf("workflow %d has no branch step %d", id, stepID))
		return
	}
	st, err := d.insp.BranchCounts(ctx, storage.BranchQuery{StepID: stepID, Cap: bd.Cap})
	if err != nil {
		d.storeFail(w, r, "branch counts", err)
		return
	}
	for _, s := range storage.States {
		c := branchCell{State: s, Count: st.Count(s), Capped: slices.Contains(st.Capped, s)}
		bd.Cells = append(bd.Cells, c)
		bd.Total += c.Count
		bd.Capped = bd.Capped || c.Capped
		if s.Final() {
			bd.Done += c.Count
		} else {
			bd.Remaining += c.Count
		}
	}
	if bd.Rate = st.DrainRate(); bd.Rate > 0 && bd.Remaining > 0 {
		bd.ETA = time.Duration(float64(bd.Remaining) / bd.Rate * float64(time.Second))
	}
	attn, err := d.store.ListWorkflows(ctx, storage.ListFilter{ParentStepID: stepID, States: []storage.State{storage.StateStalled, storage.StateFailed}, Desc: true, Limit: branchList})
	if err != nil {
		d.storeFail(w, r, "branch children", err)
		return
	}
	// Stalled first, then failed, newest first within each.
	slices.SortStableFunc(attn, func(a, b storage.Workflow) int {
		if a.State != b.State {
			if a.State == storage.StateStalled {
				return -1
			}
			return 1
		}
		return 0
	})
	bd.Attention = attn
	active, err := d.store.ListWorkflows(ctx, storage.ListFilter{ParentStepID: stepID, States: []storage.State{storage.StateIdle, storage.StateRunning}, Desc: true, Limit: branchList})
	if err != nil {
		d.storeFail(w, r, "branch children", err)
		return
	}
	bd.Active = active
	bd.Return = fmt.Sprintf("/workflows/%d/branches/%d", id, stepID)
	bd.ListQuery = template.URL(url.Values{"parent": {strconv.FormatInt(stepID, 10)}}.Encode())
	d.render(w, http.StatusOK, "branch", d.newPage(r, "Branch "+strings.TrimPrefix(bd.Step.Name, storage.BranchStepPrefix), "workflows", bd))
}
