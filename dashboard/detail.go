package dashboard

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/telemetry"
)

type stepRow struct {
	storage.Step
	Duration time.Duration
	Branch   bool
	Label    string
}

type detailData struct {
	W        storage.Workflow
	Steps    []stepRow
	Errors   []storage.ErrorRecord
	TraceID  string
	TraceURL string
	Actions  []actionButton
	Return   string
}

type actionButton struct {
	Action, Label string
	Danger        bool
}

// actionsFor lists the actions a workflow's state allows.
func actionsFor(s storage.State) []actionButton {
	var out []actionButton
	switch s {
	case storage.StateStalled, storage.StateFailed:
		out = append(out, actionButton{"retry", "Retry", false})
	case storage.StateIdle:
		out = append(out, actionButton{"resume", "Resume", false})
	}
	if !s.Final() {
		out = append(out, actionButton{"cancel", "Cancel", true}, actionButton{"cancel-children", "Cancel with children", true})
	}
	return out
}

func (d *dash) detail(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(r.PathValue("id"), "workflow ID")
	if err != nil {
		d.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	wf, steps, err := d.store.Load(r.Context(), id)
	if err != nil {
		d.storeFail(w, r, fmt.Sprintf("workflow %d", id), err)
		return
	}
	errs, err := d.store.ListErrors(r.Context(), id, 100)
	if err != nil {
		d.storeFail(w, r, fmt.Sprintf("errors of workflow %d", id), err)
		return
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i].ID < steps[j].ID })
	dd := detailData{W: wf, Errors: errs, Return: fmt.Sprintf("/workflows/%d", id)}
	for _, s := range steps {
		end := s.CompletedAt
		if end.IsZero() {
			end = s.UpdatedAt
		}
		row := stepRow{Step: s, Duration: end.Sub(s.CreatedAt), Label: s.Name}
		if b, ok := strings.CutPrefix(s.Name, storage.BranchStepPrefix); ok {
			row.Branch, row.Label = true, "branch "+b
		}
		dd.Steps = append(dd.Steps, row)
	}
	dd.TraceID = telemetry.TraceID(wf.TraceContext)
	if dd.TraceID != "" && d.cfg.traceURL != "" {
		dd.TraceURL = strings.ReplaceAll(d.cfg.traceURL, "{trace_id}", dd.TraceID)
	}
	dd.Actions = actionsFor(wf.State)
	d.render(w, http.StatusOK, "detail", d.newPage(r, fmt.Sprintf("%s %s", wf.Name, wf.Key), "workflows", dd))
}
