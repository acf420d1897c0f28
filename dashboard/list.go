package dashboard

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/chronoforge/chronoforge/storage"
)

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
