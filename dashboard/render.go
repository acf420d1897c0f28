package dashboard

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

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
	// PayloadsAllowed: ShowPayloads was given, so the page offers the toggle.
	PayloadsAllowed bool
	// Flows: the store has flow control, so the page links to the flows page.
	Flows bool
	Now   time.Time
	Data  any
}

func (d *dash) newPage(r *http.Request, title, nav string, data any) page {
	return page{
		Title: title, Base: d.cfg.prefix, Nav: nav, CanWrite: userOf(r).canWrite,
		Payloads: d.payloads(r), PayloadsAllowed: d.cfg.showPayloads, Flows: d.flows != nil, Now: d.cfg.now(), Data: data,
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
