// Package dashboard is chronoforge's embedded web dashboard for operators: an http.Handler,
// server-rendered from embedded templates and one CSS file, that shows the workflows of a
// store (overview, filtered listings, a workflow's detail, a branch's progress, waiting and
// failing workflows, flow control) and acts on them (Retry, Resume, Cancel, Cancel with
// children) through an sdk.Engine; on a store that implements storage.FlowController it
// also changes the flows' priorities and limits.
//
// Every page reads the store through bounded queries (storage.Inspector and keyset pages of
// ListWorkflows), so a page costs the same with a hundred or a million workflows. The handler
// refuses to start without an authenticator unless InsecureNoAuth is given; every action is a
// POST behind net/http's cross-origin protection, and every response carries a strict
// Content-Security-Policy.
package dashboard

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Option configures New.
type Option func(*config) error

type authFunc func(*http.Request) (principal string, canWrite bool, ok bool)

type config struct {
	auth          authFunc
	authScheme    string // the WWW-Authenticate challenge on 401
	insecure      bool
	readOnly      bool
	showPayloads  bool
	prefix        string
	logger        *slog.Logger
	traceURL      string
	waitThreshold time.Duration
	sample        int
	pageSize      int
	now           func() time.Time
	clock         sdk.Clock // nil: the engine's default clock
	branchCap     int
}

// ReadOnly hides every action and refuses action requests with 403, whoever asks.
func ReadOnly() Option {
	return func(c *config) error { c.readOnly = true; return nil }
}

// ShowPayloads shows inputs, outputs, step results and durable values, which are hidden by
// default as they may hold personal data. With it, a page hides them again when asked with
// the query parameter payloads=0 (its "hide payloads" link); without it, no request can
// show them.
func ShowPayloads() Option {
	return func(c *config) error { c.showPayloads = true; return nil }
}

// Prefix tells the dashboard the path it is mounted at (e.g. "/ops"): the handler strips it
// from requests and puts it in front of every link. Without it the dashboard serves from "/";
// mounting it with http.StripPrefix then breaks its links, so give the prefix here instead.
func Prefix(p string) Option {
	return func(c *config) error {
		p = strings.TrimRight(p, "/")
		if p != "" && (!strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#\"'<> ")) {
			return fmt.Errorf("dashboard: prefix %q must be a path starting with /", p)
		}
		c.prefix = p
		return nil
	}
}

// Logger sets the logger that records one line per action (principal, action, ids);
// slog.Default() when not given.
func Logger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("dashboard: Logger needs a non-nil logger")
		}
		c.logger = l
		return nil
	}
}

// TraceURL links a workflow's detail page to its trace: tmpl is a URL in which {trace_id} is
// replaced by the trace ID of the workflow's TraceContext (W3C traceparent).
func TraceURL(tmpl string) Option {
	return func(c *config) error {
		if !strings.Contains(tmpl, "{trace_id}") {
			return fmt.Errorf("dashboard: trace URL template %q lacks {trace_id}", tmpl)
		}
		if !strings.HasPrefix(tmpl, "https://") && !strings.HasPrefix(tmpl, "http://") {
			return fmt.Errorf("dashboard: trace URL template %q must be an http(s) URL", tmpl)
		}
		c.traceURL = tmpl
		return nil
	}
}

// WaitThreshold is the age past which the waiting page flags a signal or message wait
// (default 24h).
func WaitThreshold(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("dashboard: wait threshold %v must be positive", d)
		}
		c.waitThreshold = d
		return nil
	}
}

// CountSample is how many of the newest workflows the overview counts (default
// storage.DefaultCountSample, at most storage.MaxCountSample).
func CountSample(n int) Option {
	return func(c *config) error {
		if n <= 0 || n > storage.MaxCountSample {
			return fmt.Errorf("dashboard: count sample %d must be within 1..%d", n, storage.MaxCountSample)
		}
		c.sample = n
		return nil
	}
}

// withClock sets the clock of the pages and of the engine's actions (tests).
func withClock(clk sdk.Clock) Option {
	return func(c *config) error { c.clock = clk; c.now = clk.Now; return nil }
}

// withBranchCap sets the cap of the branch page's counts (tests).
func withBranchCap(n int) Option {
	return func(c *config) error { c.branchCap = n; return nil }
}

// withPageSize sets the page size of the workflow listing (tests).
func withPageSize(n int) Option {
	return func(c *config) error { c.pageSize = n; return nil }
}

// dash is the dashboard's handler state.
type dash struct {
	cfg   config
	store storage.Storage
	insp  storage.Inspector
	flows storage.FlowController // nil: the store has no flow control
	eng   *sdk.Engine
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the dashboard over store as an http.Handler. The store must implement
// storage.Inspector. It returns an error unless an authenticator (BasicAuth, BearerToken or
// AuthFunc) or InsecureNoAuth is given, and for a bad option.
func New(store storage.Storage, opts ...Option) (http.Handler, error) {
	if store == nil {
		return nil, errors.New("dashboard: New needs a store")
	}
	insp, ok := store.(storage.Inspector)
	if !ok {
		return nil, fmt.Errorf("dashboard: the store %T does not implement storage.Inspector (operator queries)", store)
	}
	cfg := config{
		logger: slog.Default(), waitThreshold: 24 * time.Hour,
		sample: storage.DefaultCountSample, pageSize: 50, now: time.Now,
		branchCap: storage.DefaultBranchCap,
	}
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("dashboard: nil option")
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.auth == nil && !cfg.insecure {
		return nil, errors.New("dashboard: no authenticator: give BasicAuth, BearerToken or AuthFunc, or InsecureNoAuth explicitly")
	}
	if cfg.auth != nil && cfg.insecure {
		return nil, errors.New("dashboard: InsecureNoAuth given together with an authenticator")
	}
	engOpts := []sdk.Option{sdk.WithLogger(cfg.logger)}
	if cfg.clock != nil {
		engOpts = append(engOpts, sdk.WithClock(cfg.clock))
	}
	eng, err := sdk.NewEngine(store, engOpts...)
	if err != nil {
		return nil, fmt.Errorf("dashboard: engine: %w", err)
	}
	d := &dash{cfg: cfg, store: store, insp: insp, eng: eng}
	d.flows, _ = store.(storage.FlowController)
	if err := d.parseTemplates(); err != nil {
		return nil, err
	}
	d.routes()
	var h http.Handler = d.mux
	h = d.authenticate(h)
	if cfg.prefix != "" {
		h = http.StripPrefix(cfg.prefix, h)
	}
	return securityHeaders(h), nil
}

func (d *dash) parseTemplates() error {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return err
	}
	d.pages = map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("dashboard: template %s: %w", n, err)
		}
		d.pages[base] = t
	}
	return nil
}

func (d *dash) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", d.overview)
	m.HandleFunc("GET /workflows", d.workflows)
	m.HandleFunc("GET /workflows/{id}", d.detail)
	m.HandleFunc("GET /workflows/{id}/branches/{step}", d.branch)
	m.HandleFunc("GET /waiting", d.waiting)
	m.HandleFunc("GET /failures", d.failures)
	m.HandleFunc("GET /flows", d.flowsPage)
	m.Handle("POST /actions", http.NewCrossOriginProtection().Handler(http.HandlerFunc(d.action)))
	m.Handle("POST /flows", http.NewCrossOriginProtection().Handler(http.HandlerFunc(d.flowAction)))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, http.StatusNotFound, fmt.Sprintf("no page at %s", r.URL.Path))
	})
	d.mux = m
}

// securityHeaders sets the headers every response carries.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}
