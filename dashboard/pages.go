package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

func withUser(ctx context.Context, u user) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

func userOf(r *http.Request) user {
	u, _ := r.Context().Value(userKey{}).(user)
	return u
}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"dur":      fmtDur,
	"payload":  func(b []byte) string { return string(b) },
	"finalSt":  func(s storage.State) bool { return s.Final() },
	"stateCls": func(s any) string { return "st-" + fmt.Sprint(s) },
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Microsecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// page is what every template receives.
type page struct {
	Title    string
	Base     string // the prefix links start with
	Nav      string
	CanWrite bool
	Payloads bool
	Now      time.Time
	Data     any
}

func (d *dash) newPage(r *http.Request, title, nav string, data any) page {
	return page{
		Title: title, Base: d.cfg.prefix, Nav: nav, CanWrite: userOf(r).canWrite,
		Payloads: d.payloads(r), Now: d.cfg.now(), Data: data,
	}
}

// payloads reports whether this response shows payloads: only with ShowPayloads, and not when
// the request asks payloads=0.
func (d *dash) payloads(r *http.Request) bool {
	return d.cfg.showPayloads && r.URL.Query().Get("payloads") != "0"
}

func (d *dash) render(w http.ResponseWriter, status int, name string, p page) {
	var buf bytes.Buffer
	if err := d.pages[name].Execute(&buf, p); err != nil {
		d.cfg.logger.Error("dashboard: render", "page", name, "error", err)
		http.Error(w, "500 internal error: rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail renders the error page with status and message.
func (d *dash) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	d.render(w, status, "error", d.newPage(r, http.StatusText(status), "", struct {
		Status int
		Text   string
		Msg    string
	}{status, http.StatusText(status), msg}))
}

// storeFail maps a store error to a page: not found 404, invalid 400, else 500.
func (d *dash) storeFail(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		d.fail(w, r, http.StatusNotFound, what+": not found")
	case errors.Is(err, storage.ErrInvalid):
		d.fail(w, r, http.StatusBadRequest, what+": "+err.Error())
	default:
		d.cfg.logger.Error("dashboard: store", "what", what, "error", err)
		d.fail(w, r, http.StatusInternalServerError, what+": the store failed: "+err.Error())
	}
}

// ---- overview ----

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
	d.render(w, http.StatusOK, "overview", d.newPage(r, "Overview", "overview", od))
}

// ---- workflows ----

type listData struct {
	Filter   listForm
	States   []storage.State
	Rows     []storage.Workflow
	Newer    template.URL // query of the newer page, empty when none (built by url.Values)
	Older    template.URL
	Return   string
	Checked  map[storage.State]bool
	PageSize int
	// SelectAll ticks every row (select=all): "select all" without a script.
	SelectAll bool
	SelectURL template.URL // this page with select=all (or without it, to clear)
}

type listForm struct {
	Name, KeyPrefix, Parent string
	States                  []storage.State
}

func (f listForm) query() url.Values {
	q := url.Values{}
	if f.Name != "" {
		q.Set("name", f.Name)
	}
	if f.KeyPrefix != "" {
		q.Set("key", f.KeyPrefix)
	}
	if f.Parent != "" {
		q.Set("parent", f.Parent)
	}
	for _, s := range f.States {
		q.Add("state", string(s))
	}
	return q
}

func parseID(s, what string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%s %q is not a positive integer", what, s)
	}
	return id, nil
}

func (d *dash) workflows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	form := listForm{Name: q.Get("name"), KeyPrefix: q.Get("key"), Parent: q.Get("parent")}
	f := storage.ListFilter{Name: form.Name, KeyPrefix: form.KeyPrefix, Limit: d.cfg.pageSize, Desc: true}
	checked := map[storage.State]bool{}
	for _, s := range q["state"] {
		st := storage.State(s)
		if !st.Valid() {
			d.fail(w, r, http.StatusBadRequest, fmt.Sprintf("unknown state %q in the filter: the states are %v", s, storage.States))
			return
		}
		if !checked[st] {
			form.States = append(form.States, st)
			checked[st] = true
		}
	}
	f.States = form.States
	if form.Parent != "" {
		id, err := parseID(form.Parent, "parent step ID")
		if err != nil {
			d.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		f.ParentStepID = id
	}
	var before, after int64
	var err error
	if s := q.Get("before"); s != "" {
		if before, err = parseID(s, "page bound before"); err != nil {
			d.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	if s := q.Get("after"); s != "" {
		if after, err = parseID(s, "page bound after"); err != nil {
			d.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	if form.KeyPrefix != "" && form.Name == "" {
		d.fail(w, r, http.StatusBadRequest, "a key prefix needs a workflow name: filter by name too")
		return
	}
	if err := storage.ValidateList(f); err != nil {
		d.fail(w, r, http.StatusBadRequest, "bad filter: "+err.Error())
		return
	}
	// One more than a page tells whether another page follows in the direction of travel.
	f.Limit = d.cfg.pageSize + 1
	backward := after > 0 && before == 0
	if backward {
		f.AfterID, f.Desc = after, false
	} else {
		f.BeforeID = before
	}
	rows, err := d.store.ListWorkflows(r.Context(), f)
	if err != nil {
		d.storeFail(w, r, "list workflows", err)
		return
	}
	more := len(rows) > d.cfg.pageSize
	if more {
		rows = rows[:d.cfg.pageSize]
	}
	if backward {
		slices.Reverse(rows)
	}
	ld := listData{Filter: form, States: storage.States, Rows: rows, Checked: checked, PageSize: d.cfg.pageSize}
	if len(rows) > 0 {
		base := form.query()
		hasNewer := (backward && more) || (!backward && before > 0)
		hasOlder := (!backward && more) || backward
		if hasNewer {
			v := cloneValues(base)
			v.Set("after", strconv.FormatInt(rows[0].ID, 10))
			ld.Newer = template.URL(v.Encode())
		}
		if hasOlder {
			v := cloneValues(base)
			v.Set("before", strconv.FormatInt(rows[len(rows)-1].ID, 10))
			ld.Older = template.URL(v.Encode())
		}
	}
	ld.Return = "/workflows?" + r.URL.RawQuery
	ld.SelectAll = q.Get("select") == "all"
	sel := cloneValues(q)
	if ld.SelectAll {
		sel.Del("select")
	} else {
		sel.Set("select", "all")
	}
	ld.SelectURL = template.URL(sel.Encode())
	d.render(w, http.StatusOK, "workflows", d.newPage(r, "Workflows", "workflows", ld))
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// ---- detail ----

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

// traceID returns the trace ID of a W3C traceparent in a JSON carrier, or "".
func traceID(tc []byte) string {
	if len(tc) == 0 {
		return ""
	}
	var m map[string]string
	if json.Unmarshal(tc, &m) != nil {
		return ""
	}
	parts := strings.Split(m["traceparent"], "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	for _, c := range parts[1] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return ""
		}
	}
	if parts[1] == strings.Repeat("0", 32) {
		return ""
	}
	return parts[1]
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
	dd.TraceID = traceID(wf.TraceContext)
	if dd.TraceID != "" && d.cfg.traceURL != "" {
		dd.TraceURL = strings.ReplaceAll(d.cfg.traceURL, "{trace_id}", dd.TraceID)
	}
	dd.Actions = actionsFor(wf.State)
	d.render(w, http.StatusOK, "detail", d.newPage(r, fmt.Sprintf("%s %s", wf.Name, wf.Key), "workflows", dd))
}

// ---- branch ----

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
	if n := len(st.RecentFinished); n >= 2 {
		span := st.RecentFinished[0].Sub(st.RecentFinished[n-1])
		if span > 0 {
			bd.Rate = float64(n-1) / span.Seconds()
			if bd.Remaining > 0 {
				bd.ETA = time.Duration(float64(bd.Remaining) / bd.Rate * float64(time.Second))
			}
		}
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

// ---- waiting ----

// waitingPages bounds the waiting page: at most this many pages of idle workflows are read.
const (
	waitingPages = 5
	waitingShown = 50
)

type waitGroup struct {
	Kind    string
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
			kind := string(wf.Wait.Kind)
			if kind == "" {
				kind = "due (no wait)"
			}
			g := groups[kind]
			if g == nil {
				g = &waitGroup{Kind: kind}
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

// ---- failures ----

// failureSample is how many failed and stalled workflows the failures page reads, each with
// its newest error record.
const failureSample = 200

type failureGroup struct {
	Name, Step, Type string
	Example          string
	Count            int
	IDs              []int64
}

type failuresData struct {
	Groups  []failureGroup
	Sampled int
	Full    bool
	Return  string
}

func (d *dash) failures(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rows, err := d.store.ListWorkflows(ctx, storage.ListFilter{States: []storage.State{storage.StateFailed, storage.StateStalled}, Desc: true, Limit: failureSample})
	if err != nil {
		d.storeFail(w, r, "list failed workflows", err)
		return
	}
	type key struct{ name, step, typ string }
	groups := map[key]*failureGroup{}
	for _, wf := range rows {
		errs, err := d.store.ListErrors(ctx, wf.ID, storage.MaxListLimit)
		if err != nil {
			d.storeFail(w, r, fmt.Sprintf("errors of workflow %d", wf.ID), err)
			return
		}
		k := key{name: wf.Name, typ: "(no error record)"}
		msg := wf.LastError
		if len(errs) > 0 {
			last := errs[len(errs)-1]
			for _, e := range errs {
				if e.ID > last.ID {
					last = e
				}
			}
			k = key{wf.Name, last.Step, last.Type}
			msg = last.Message
		}
		g := groups[k]
		if g == nil {
			g = &failureGroup{Name: k.name, Step: k.step, Type: k.typ, Example: msg}
			groups[k] = g
		}
		g.Count++
		g.IDs = append(g.IDs, wf.ID)
	}
	fd := failuresData{Sampled: len(rows), Full: len(rows) == failureSample, Return: "/failures"}
	for _, g := range groups {
		fd.Groups = append(fd.Groups, *g)
	}
	sort.Slice(fd.Groups, func(i, j int) bool {
		a, b := fd.Groups[i], fd.Groups[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Name+a.Step+a.Type < b.Name+b.Step+b.Type
	})
	d.render(w, http.StatusOK, "failures", d.newPage(r, "Failures", "failures", fd))
}
