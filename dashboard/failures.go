package dashboard

import (
	"fmt"
	"net/http"
	"sort"

	"github.com/chronoforge/chronoforge/storage"
)

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
