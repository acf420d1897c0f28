package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// flowRow is one stored flow on the flows page and the overview.
type flowRow struct {
	storage.FlowState
	// PerText is Per as the form shows it: empty when there is no rate.
	PerText string
	// Held counts the due workflows the flow's limits hold back, Reason says which limit.
	Held   int
	Reason string
}

// heldBack reports how many of a flow's due workflows its limits hold back, and why. With
// its concurrency reached, every due workflow waits for a run to end. With a rate, due
// workflows that are left are those the window does not allow yet (ListFlows does not say
// how many claims the window holds, so a rate-limited flow with due workflows is shown as
// held back; they may also be waiting for a worker).
func heldBack(st storage.FlowState) (int, string) {
	switch {
	case st.Due == 0:
		return 0, ""
	case st.Concurrency > 0 && st.Running >= st.Concurrency:
		return st.Due, fmt.Sprintf("concurrency %d reached", st.Concurrency)
	case st.Rate > 0:
		return st.Due, fmt.Sprintf("rate %d per %v", st.Rate, st.Per)
	}
	return 0, ""
}

// flowRows converts ListFlows' answer.
func flowRows(states []storage.FlowState) []flowRow {
	out := make([]flowRow, 0, len(states))
	for _, st := range states {
		r := flowRow{FlowState: st}
		if st.Per > 0 {
			r.PerText = st.Per.String()
		}
		r.Held, r.Reason = heldBack(st)
		out = append(out, r)
	}
	return out
}

type flowsData struct {
	Rows   []flowRow
	Notice string
	Probe  int
	Min    int
	Max    int
}

// flowsPage lists the stored flows with their running and due counts, and, for a user who
// may write, a form per flow and one to add a flow.
func (d *dash) flowsPage(w http.ResponseWriter, r *http.Request) {
	if d.flows == nil {
		d.fail(w, r, http.StatusNotFound, fmt.Sprintf("the store %T does not implement flow control (storage.FlowController)", d.store))
		return
	}
	states, err := d.flows.ListFlows(r.Context(), d.cfg.now())
	if err != nil {
		d.storeFail(w, r, "list flows", err)
		return
	}
	fd := flowsData{Rows: flowRows(states), Probe: storage.FlowProbe, Min: storage.MinPriority, Max: storage.MaxPriority}
	q := r.URL.Query()
	if key := q.Get("key"); key != "" {
		switch q.Get("done") {
		case "saved":
			fd.Notice = fmt.Sprintf("Flow %s saved.", key)
		case "added":
			fd.Notice = fmt.Sprintf("Flow %s added.", key)
		case "deleted":
			fd.Notice = fmt.Sprintf("Flow %s deleted: its workflows run with priority 0 and no limits.", key)
		}
	}
	d.render(w, http.StatusOK, "flows", d.newPage(r, "Flows", "flows", fd))
}

// formInt reads an integer field of the flow form; empty is 0 (no limit).
func formInt(form url.Values, name string) (int, error) {
	s := strings.TrimSpace(form.Get(name))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not an integer", name, s)
	}
	return n, nil
}

// flowFromForm reads a flow from the form and checks it with storage.ValidateFlow.
func flowFromForm(form url.Values, now time.Time) (storage.Flow, error) {
	f := storage.Flow{Key: form.Get("key")}
	var err error
	if f.Priority, err = formInt(form, "priority"); err != nil {
		return f, err
	}
	if f.Concurrency, err = formInt(form, "concurrency"); err != nil {
		return f, err
	}
	if f.Rate, err = formInt(form, "rate"); err != nil {
		return f, err
	}
	if s := strings.TrimSpace(form.Get("per")); s != "" {
		if f.Per, err = time.ParseDuration(s); err != nil {
			return f, fmt.Errorf("per %q is not a duration such as 1s, 500ms or 1m", s)
		}
	}
	if f.Rate > 0 && f.Per == 0 {
		// ValidateFlow's message would name a period of 0s the operator never typed.
		return f, fmt.Errorf("flow %q: a rate of %d needs a period (per), such as 1s or 1m", f.Key, f.Rate)
	}
	return f, storage.ValidateFlow(f, now)
}

// flowAction changes one flow (form field op): save replaces the flow of the key with the
// form's numbers, add stores a new one (refusing a key that has one), delete removes it.
// A change logs one line naming the principal, then redirects to the flows page.
func (d *dash) flowAction(w http.ResponseWriter, r *http.Request) {
	u := userOf(r)
	if !u.canWrite {
		d.fail(w, r, http.StatusForbidden, "this dashboard is read-only for you: flow changes are refused")
		return
	}
	if d.flows == nil {
		d.fail(w, r, http.StatusNotFound, fmt.Sprintf("the store %T does not implement flow control (storage.FlowController)", d.store))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		d.fail(w, r, http.StatusBadRequest, "bad form: "+err.Error())
		return
	}
	ctx, now := r.Context(), d.cfg.now()
	op := r.PostForm.Get("op")
	var done string
	switch op {
	case "save", "add":
		f, err := flowFromForm(r.PostForm, now)
		if err != nil {
			d.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		stored, wrote, err := d.flows.PutFlow(ctx, f, op == "add", now)
		switch {
		case errors.Is(err, storage.ErrTooLarge):
			d.fail(w, r, http.StatusConflict, fmt.Sprintf("flow %q: the store holds %d flows, its most: delete one first", f.Key, storage.MaxFlows))
			return
		case err != nil:
			d.storeFail(w, r, "put flow", err)
			return
		case !wrote:
			d.fail(w, r, http.StatusConflict, fmt.Sprintf("flow %q exists already: change it in its row of the flows page", f.Key))
			return
		}
		d.cfg.logger.Info("dashboard flow", "principal", u.principal, "op", op, "key", stored.Key, "priority", stored.Priority,
			"concurrency", stored.Concurrency, "rate", stored.Rate, "per", stored.Per)
		done = map[string]string{"save": "saved", "add": "added"}[op]
		r.PostForm.Set("key", stored.Key)
	case "delete":
		key := r.PostForm.Get("key")
		if err := storage.ValidateFlowKey(key); err != nil {
			d.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		deleted, err := d.flows.DeleteFlow(ctx, key)
		if err != nil {
			d.storeFail(w, r, "delete flow", err)
			return
		}
		if !deleted {
			d.fail(w, r, http.StatusNotFound, fmt.Sprintf("flow %q: no flow is stored under that key", key))
			return
		}
		d.cfg.logger.Info("dashboard flow", "principal", u.principal, "op", op, "key", key)
		done = "deleted"
	default:
		d.fail(w, r, http.StatusBadRequest, fmt.Sprintf("unknown flow operation %q: it is one of save, add, delete", op))
		return
	}
	q := url.Values{"done": {done}, "key": {r.PostForm.Get("key")}}
	http.Redirect(w, r, d.cfg.prefix+"/flows?"+q.Encode(), http.StatusSeeOther)
}
