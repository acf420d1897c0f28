package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/chronoforge/chronoforge/sdk"
)

// maxActionIDs bounds the workflows one action request names.
const maxActionIDs = 1000

type actionResult struct {
	ID  int64
	Err string
	err error
}

type actionData struct {
	Action  string
	Results []actionResult
	OK      int
	Failed  int
	Return  string
}

var actionNames = map[string]string{
	"retry": "Retry", "resume": "Resume", "cancel": "Cancel", "cancel-children": "Cancel with children",
}

// safeReturn accepts a path inside the dashboard to go back to, else "/".
func safeReturn(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.HasPrefix(s, "/\\") || strings.ContainsAny(s, "\r\n") {
		return "/"
	}
	return s
}

// action runs one action (form field action) on the workflows named by the id fields.
func (d *dash) action(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	if !u.canWrite {
		d.fail(w, r, http.StatusForbidden, "this dashboard is read-only for you: actions are refused")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		d.fail(w, r, http.StatusBadRequest, "bad form: "+err.Error())
		return
	}
	act := r.PostForm.Get("action")
	label, ok := actionNames[act]
	if !ok {
		d.fail(w, r, http.StatusBadRequest, fmt.Sprintf("unknown action %q: it is one of retry, resume, cancel, cancel-children", act))
		return
	}
	raw := r.PostForm["id"]
	if len(raw) == 0 {
		d.fail(w, r, http.StatusBadRequest, "no workflow selected: tick at least one")
		return
	}
	if len(raw) > maxActionIDs {
		d.fail(w, r, http.StatusBadRequest, fmt.Sprintf("%d workflows selected: at most %d per action", len(raw), maxActionIDs))
		return
	}
	ids := make([]int64, 0, len(raw))
	seen := map[int64]bool{}
	for _, s := range raw {
		id, err := parseID(s, "workflow ID")
		if err != nil {
			d.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	ad := actionData{Action: label, Return: safeReturn(r.PostForm.Get("return"))}
	ctx := r.Context()
	for _, id := range ids {
		var err error
		switch act {
		case "retry":
			err = d.eng.Retry(ctx, id)
		case "resume":
			err = d.eng.Signal(ctx, id)
		case "cancel":
			err = d.eng.Cancel(ctx, id)
		case "cancel-children":
			err = d.eng.Cancel(ctx, id, sdk.WithChildren())
		}
		res := actionResult{ID: id}
		if err != nil {
			res.Err, res.err = err.Error(), err
			ad.Failed++
		} else {
			ad.OK++
		}
		ad.Results = append(ad.Results, res)
	}
	d.cfg.logger.Info("dashboard action", "principal", u.principal, "action", act, "ids", ids, "ok", ad.OK, "failed", ad.Failed)
	status := http.StatusOK
	if ad.Failed > 0 {
		status = http.StatusConflict
		if ad.OK == 0 && allNotFound(ad.Results) {
			status = http.StatusNotFound
		}
	}
	d.render(w, status, "action", d.newPage(r, label, "", ad))
}

func allNotFound(rs []actionResult) bool {
	for _, r := range rs {
		if !errors.Is(r.err, sdk.ErrNotFound) {
			return false
		}
	}
	return true
}
