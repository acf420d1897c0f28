// Package dashboard is chronoforge's embedded web dashboard for operators: an http.Handler,
// server-rendered from embedded templates and one CSS file, that shows the workflows of a
// store (overview, filtered listings, a workflow's detail, a branch's progress, waiting and
// failing workflows) and acts on them (Retry, Resume, Cancel, Cancel with children) through
// an sdk.Engine.
//
// Every page reads the store through bounded queries (storage.Inspector and keyset pages of
// ListWorkflows), so a page costs the same with a hundred or a million workflows. The handler
// refuses to start without an authenticator unless InsecureNoAuth is given; every action is a
// POST behind net/http's cross-origin protection, and every response carries a strict
// Content-Security-Policy.
package dashboard

import (
	"crypto/subtle"
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

// BasicAuth protects the dashboard with HTTP basic authentication: one user and password,
// compared in constant time. The principal logged for actions is the user.
func BasicAuth(user, password string) Option {
	return func(c *config) error {
		if user == "" || password == "" {
			return errors.New("dashboard: BasicAuth needs a non-empty user and password")
		}
		c.setAuth(`Basic realm="chronoforge", charset="UTF-8"`, func(r *http.Request) (string, bool, bool) {
			u, p, ok := r.BasicAuth()
			if !ok {
				return "", false, false
			}
			uok := subtle.ConstantTimeCompare([]byte(u), []byte(user))
			pok := subtle.ConstantTimeCompare([]byte(p), []byte(password))
			if uok&pok != 1 {
				return "", false, false
			}
			return u, true, true
		})
		return nil
	}
}

// BearerToken protects the dashboard with a static bearer token (Authorization: Bearer
// TOKEN), compared in constant time. The principal logged for actions is "bearer".
func BearerToken(token string) Option {
	return func(c *config) error {
		if token == "" {
			return errors.New("dashboard: BearerToken needs a non-empty token")
		}
		c.setAuth(`Bearer realm="chronoforge"`, func(r *http.Request) (string, bool, bool) {
			h := r.Header.Get("Authorization")
			got, ok := strings.CutPrefix(h, "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				return "", false, false
			}
			return "bearer", true, true
		})
		return nil
	}
}

// AuthFunc authenticates each request with f, which returns the principal (logged with every
// action), whether it may act (canWrite false shows the dashboard read-only to it) and ok
// false to refuse the request with 401.
func AuthFunc(f func(*http.Request) (principal string, canWrite bool, ok bool)) Option {
	return func(c *config) error {
		if f == nil {
			return errors.New("dashboard: AuthFunc needs a non-nil function")
		}
		c.setAuth("", f)
		return nil
	}
}

// InsecureNoAuth serves the dashboard to anyone who reaches it, for a handler mounted behind
// an authenticating proxy or on a private listener. It must be given explicitly: New refuses
// to start without an authenticator otherwise.
func InsecureNoAuth() Option {
	return func(c *config) error { c.insecure = true; return nil }
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

func (c *config) setAuth(scheme string, f authFunc) {
	c.auth = f
	c.authScheme = scheme
}

// dash is the dashboard's handler state.
type dash struct {
	cfg   config
	store storage.Storage
	insp  storage.Inspector
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
	m.Handle("POST /actions", http.NewCrossOriginProtection().Handler(http.HandlerFunc(d.action)))
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

type userKey struct{}

// user is who asks, as the authenticator said.
type user struct {
	principal string
	canWrite  bool
}

func (d *dash) authenticate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := user{principal: "anonymous", canWrite: true}
		if d.cfg.auth != nil {
			p, cw, ok := d.cfg.auth(r)
			if !ok {
				if d.cfg.authScheme != "" {
					w.Header().Set("WWW-Authenticate", d.cfg.authScheme)
				}
				http.Error(w, "401 unauthorized: credentials missing or wrong", http.StatusUnauthorized)
				return
			}
			u = user{principal: p, canWrite: cw}
		}
		if d.cfg.readOnly {
			u.canWrite = false
		}
		h.ServeHTTP(w, r.WithContext(withUser(r.Context(), u)))
	})
}
