package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// client drives a dashboard handler in tests.
type client struct {
	t testing.TB
	h http.Handler
	// set applies credentials to every request.
	set func(*http.Request)
}

func newClient(t testing.TB, s *seeded, opts ...Option) *client {
	t.Helper()
	all := append([]Option{withClock(s.env.Clock()), Logger(slog.New(slog.DiscardHandler))}, opts...)
	h, err := New(s.store, all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &client{t: t, h: h, set: func(*http.Request) {}}
}

func (c *client) do(r *http.Request) (int, string, http.Header) {
	c.t.Helper()
	c.set(r)
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, r)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body), rec.Result().Header
}

func (c *client) get(path string) (int, string) {
	c.t.Helper()
	code, body, _ := c.do(httptest.NewRequest(http.MethodGet, path, nil))
	return code, body
}

func (c *client) post(path string, form url.Values) (int, string) {
	c.t.Helper()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	code, body, _ := c.do(r)
	return code, body
}

func must(t testing.TB, code int, body string, want int, contains ...string) {
	t.Helper()
	if code != want {
		t.Fatalf("status %d, want %d; body:\n%s", code, want, body)
	}
	for _, s := range contains {
		if !strings.Contains(body, s) {
			t.Fatalf("body lacks %q:\n%s", s, body)
		}
	}
}

func lacks(t testing.TB, body string, not ...string) {
	t.Helper()
	for _, s := range not {
		if strings.Contains(body, s) {
			t.Fatalf("body has %q, which it must not:\n%s", s, body)
		}
	}
}

func ids(ids ...int64) url.Values {
	v := url.Values{}
	for _, id := range ids {
		v.Add("id", fmt.Sprint(id))
	}
	return v
}

func act(action string, v url.Values) url.Values {
	v.Set("action", action)
	return v
}

type bareStore struct{ storage.Storage }

func TestNewRefusesBadSetups(t *testing.T) {
	t.Parallel()
	st := memory.New()
	defer st.Close()
	cases := []struct {
		name  string
		store storage.Storage
		opts  []Option
		want  string
	}{
		{"no auth", st, nil, "no authenticator"},
		{"no inspector", bareStore{st}, []Option{InsecureNoAuth()}, "does not implement storage.Inspector"},
		{"nil store", nil, []Option{InsecureNoAuth()}, "needs a store"},
		{"empty basic", st, []Option{BasicAuth("", "")}, "non-empty user and password"},
		{"empty bearer", st, []Option{BearerToken("")}, "non-empty token"},
		{"nil auth func", st, []Option{AuthFunc(nil)}, "non-nil function"},
		{"two authenticators", st, []Option{BasicAuth("a", "b"), BearerToken("t")}, "more than one authenticator"},
		{"auth and insecure", st, []Option{BasicAuth("a", "b"), InsecureNoAuth()}, "together"},
		{"bad prefix", st, []Option{InsecureNoAuth(), Prefix("ops")}, "must be a path"},
		{"bad trace url", st, []Option{InsecureNoAuth(), TraceURL("https://x/")}, "{trace_id}"},
		{"bad threshold", st, []Option{InsecureNoAuth(), WaitThreshold(0)}, "positive"},
		{"bad sample", st, []Option{InsecureNoAuth(), CountSample(0)}, "count sample"},
		{"nil logger", st, []Option{InsecureNoAuth(), Logger(nil)}, "non-nil logger"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(tc.store, tc.opts...)
			if err == nil || h != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, %v; want an error with %q", h, err, tc.want)
			}
		})
	}
	// With no workflow registered, the engine it makes still serves and acts.
	h, err := New(st, InsecureNoAuth())
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, h: h, set: func(*http.Request) {}}
	code, body := c.get("/")
	must(t, code, body, 200, "All 0 workflows counted")
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, BasicAuth("ops", "s3cret"))
	code, body, hdr := c.do(httptest.NewRequest("GET", "/", nil))
	must(t, code, body, 401)
	if got := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth("ops", "wrong")
	code, body, _ = c.do(r)
	must(t, code, body, 401)
	r = httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth("other", "s3cret")
	code, body, _ = c.do(r)
	must(t, code, body, 401)
	c.set = func(r *http.Request) { r.SetBasicAuth("ops", "s3cret") }
	code, body = c.get("/")
	must(t, code, body, 200, "payments")
	// An action names the principal in the log.
	var logs bytes.Buffer
	c2 := newClient(t, s, BasicAuth("ops", "s3cret"), Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	c2.set = c.set
	code, body = c2.post("/actions", act("retry", ids(s.stalled)))
	must(t, code, body, 200, "1 done, 0 failed")
	line := logs.String()
	for _, want := range []string{"dashboard action", "principal=ops", "action=retry", fmt.Sprintf("ids=[%d]", s.stalled)} {
		if !strings.Contains(line, want) {
			t.Fatalf("log line lacks %q: %s", want, line)
		}
	}
	if n := strings.Count(line, "dashboard action"); n != 1 {
		t.Fatalf("%d action log lines, want 1: %s", n, line)
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, BearerToken("tok-123"))
	code, body, hdr := c.do(httptest.NewRequest("GET", "/workflows", nil))
	must(t, code, body, 401)
	if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("WWW-Authenticate = %q", hdr.Get("WWW-Authenticate"))
	}
	c.set = func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }
	code, body = c.get("/workflows")
	must(t, code, body, 401)
	c.set = func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-123") }
	code, body = c.get("/workflows")
	must(t, code, body, 200, "pay-1")
}

func TestAuthFuncReadOnlyPrincipal(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, AuthFunc(func(r *http.Request) (string, bool, bool) {
		switch r.Header.Get("X-User") {
		case "admin":
			return "admin", true, true
		case "viewer":
			return "viewer", false, true
		}
		return "", false, false
	}))
	code, body := c.get("/")
	must(t, code, body, 401)
	c.set = func(r *http.Request) { r.Header.Set("X-User", "viewer") }
	code, body = c.get(fmt.Sprintf("/workflows/%d", s.stalled))
	must(t, code, body, 200, "read-only")
	lacks(t, body, `value="retry"`)
	code, body = c.post("/actions", act("retry", ids(s.stalled)))
	must(t, code, body, 403, "read-only")
	if s.state(t, s.stalled) != storage.StateStalled {
		t.Fatal("a refused retry changed the workflow")
	}
	c.set = func(r *http.Request) { r.Header.Set("X-User", "admin") }
	code, body = c.get(fmt.Sprintf("/workflows/%d", s.stalled))
	must(t, code, body, 200, `value="retry"`)
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth(), ReadOnly())
	pages := []string{"/", "/workflows", fmt.Sprintf("/workflows/%d", s.stalled), fmt.Sprintf("/workflows/%d/branches/%d", s.parent, s.branch), "/waiting", "/failures", "/flows"}
	for _, p := range pages {
		code, body := c.get(p)
		must(t, code, body, 200, "read-only")
		lacks(t, body, `method="post"`, `name="action"`, `type="checkbox" name="id"`)
	}
	for _, a := range []string{"retry", "resume", "cancel", "cancel-children"} {
		code, body := c.post("/actions", act(a, ids(s.stalled, s.waiting)))
		must(t, code, body, 403, "read-only")
	}
	if s.state(t, s.stalled) != storage.StateStalled || s.state(t, s.waiting) != storage.StateIdle {
		t.Fatal("a refused action changed a workflow")
	}
}

func TestCrossOriginPost(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "https://evil.example"},
	} {
		r := httptest.NewRequest("POST", "http://dash.local/actions", strings.NewReader(act("retry", ids(s.stalled)).Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		code, body, h := c.do(r)
		must(t, code, body, 403)
		if h.Get("X-Frame-Options") != "DENY" {
			t.Fatalf("a 403 lacks the security headers: %v", h)
		}
	}
	if s.state(t, s.stalled) != storage.StateStalled {
		t.Fatal("a cross-origin POST retried the workflow")
	}
	// Same origin passes.
	r := httptest.NewRequest("POST", "http://dash.local/actions", strings.NewReader(act("retry", ids(s.stalled)).Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.Header.Set("Origin", "http://dash.local")
	code, body, _ := c.do(r)
	must(t, code, body, 200, "1 done")
	// Actions are POST only.
	code, body = c.get("/actions?action=retry&id=1")
	if code != http.StatusMethodNotAllowed && code != http.StatusNotFound {
		t.Fatalf("GET /actions = %d, want 405 or 404: %s", code, body)
	}
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, BasicAuth("u", "p"))
	check := func(path string, h http.Header) {
		t.Helper()
		want := map[string]string{
			"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
			"X-Frame-Options":         "DENY",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "same-origin",
		}
		for k, v := range want {
			if !strings.HasPrefix(h.Get(k), v) {
				t.Fatalf("%s: header %s = %q, want %q", path, k, h.Get(k), v)
			}
		}
		if strings.Contains(h.Get("Content-Security-Policy"), "script-src") {
			t.Fatalf("%s: CSP allows scripts: %s", path, h.Get("Content-Security-Policy"))
		}
	}
	_, _, h := c.do(httptest.NewRequest("GET", "/", nil)) // 401
	check("401", h)
	c.set = func(r *http.Request) { r.SetBasicAuth("u", "p") }
	for _, p := range []string{"/", "/static/style.css", "/workflows/999999", "/nope"} {
		_, _, h := c.do(httptest.NewRequest("GET", p, nil))
		check(p, h)
	}
	code, body, h := c.do(httptest.NewRequest("GET", "/static/style.css", nil))
	must(t, code, body, 200, "body{")
	if !strings.HasPrefix(h.Get("Content-Type"), "text/css") {
		t.Fatalf("style.css served as %q", h.Get("Content-Type"))
	}
}

func TestOverview(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	code, body := c.get("/")
	must(t, code, body, 200, "All 19 workflows counted", `id="stalled">4<`, `id="failed">1<`, "payments", "orders", "child")
	lacks(t, body, "sampled")
	// A smaller sample says so.
	c = newClient(t, s, InsecureNoAuth(), CountSample(5))
	code, body = c.get("/")
	must(t, code, body, 200, "newest 5 sampled")
	lacks(t, body, "orders") // the oldest ones fall outside the sample
	// An expired lease shows: claim a workflow with a short TTL and let it expire.
	ctx := context.Background()
	now := s.env.Now()
	wf, _, err := s.store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "orphan", Key: "o-1", Input: []byte(`"x"`), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Claim(ctx, storage.ClaimRequest{Owner: "dead-worker", Limit: 1, Names: []string{"orphan"}, TTL: time.Second, Now: now}); err != nil {
		t.Fatal(err)
	}
	s.env.Clock().Advance(time.Minute) // the lease expires by the store's clock, the Env's

	c = newClient(t, s, InsecureNoAuth())
	code, body = c.get("/")
	must(t, code, body, 200, `id="expired">1<`, "dead-worker", fmt.Sprintf(`/workflows/%d"`, wf.ID))
}

func TestWorkflowsFilters(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	code, body := c.get("/workflows?name=payments")
	must(t, code, body, 200, "pay-1", "pay-2")
	lacks(t, body, "order-1")
	code, body = c.get("/workflows?state=stalled&state=failed")
	must(t, code, body, 200, "pay-1", "report-1", "batch-1$items$5")
	lacks(t, body, "order-1", "approval-1")
	code, body = c.get("/workflows?name=orders&key=order-1")
	must(t, code, body, 200, "order-1")
	lacks(t, body, "order-0", "order-2")
	code, body = c.get(fmt.Sprintf("/workflows?parent=%d&state=stalled", s.branch))
	must(t, code, body, 200, "batch-1$items$5", "batch-1$items$10")
	lacks(t, body, "batch-1$items$1<", "pay-1")
	// Newest first.
	code, body = c.get("/workflows?name=orders")
	must(t, code, body, 200)
	if strings.Index(body, "order-2") > strings.Index(body, "order-0") {
		t.Fatal("the listing is not newest first")
	}
	// Bad input: 400 with a message naming what was wrong.
	for path, want := range map[string]string{
		"/workflows?state=broken":      `unknown state &#34;broken&#34;`,
		"/workflows?key=order":         "a key prefix needs a workflow name",
		"/workflows?parent=x":          `parent step ID &#34;x&#34; is not a positive integer`,
		"/workflows?before=-1":         "page bound before",
		"/workflows?name=bad%00name":   "bad filter",
		"/workflows/abc":               `workflow ID &#34;abc&#34;`,
		"/workflows/1/branches/0":      "branch step ID",
		"/workflows?after=1&before=zz": "page bound before",
	} {
		code, body := c.get(path)
		must(t, code, body, 400, want)
	}
}

var idRe = regexp.MustCompile(`<td><a href="/workflows/(\d+)">`)

func listedIDs(body string) []string {
	var out []string
	for _, m := range idRe.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

var linkRe = regexp.MustCompile(`id="(newer|older)" href="([^"]+)"`)

func pagerLinks(body string) map[string]string {
	out := map[string]string{}
	for _, m := range linkRe.FindAllStringSubmatch(body, -1) {
		out[m[1]] = strings.ReplaceAll(m[2], "&amp;", "&")
	}
	return out
}

func TestWorkflowsPaging(t *testing.T) {
	t.Parallel()
	s := seed(t) // 19 workflows
	c := newClient(t, s, InsecureNoAuth(), withPageSize(7))
	code, body := c.get("/workflows")
	must(t, code, body, 200)
	p1 := listedIDs(body)
	if len(p1) != 7 || p1[0] != "19" || p1[6] != "13" {
		t.Fatalf("page 1 = %v", p1)
	}
	links := pagerLinks(body)
	if _, ok := links["newer"]; ok || links["older"] == "" {
		t.Fatalf("page 1 links = %v", links)
	}
	_, body = c.get(links["older"])
	p2 := listedIDs(body)
	if len(p2) != 7 || p2[0] != "12" || p2[6] != "6" {
		t.Fatalf("page 2 = %v", p2)
	}
	links = pagerLinks(body)
	_, body = c.get(links["older"])
	p3 := listedIDs(body)
	if len(p3) != 5 || p3[0] != "5" || p3[4] != "1" {
		t.Fatalf("page 3 = %v", p3)
	}
	links = pagerLinks(body)
	if _, ok := links["older"]; ok {
		t.Fatalf("last page has an older link: %v", links)
	}
	// And back.
	_, body = c.get(links["newer"])
	if got := listedIDs(body); fmt.Sprint(got) != fmt.Sprint(p2) {
		t.Fatalf("back to page 2 = %v, want %v", got, p2)
	}
	links = pagerLinks(body)
	_, body = c.get(links["newer"])
	if got := listedIDs(body); fmt.Sprint(got) != fmt.Sprint(p1) {
		t.Fatalf("back to page 1 = %v, want %v", got, p1)
	}
	if _, ok := pagerLinks(body)["newer"]; ok {
		t.Fatal("page 1 reached backwards has a newer link")
	}
	// "select all" ticks every row of the page, without a script.
	_, body = c.get("/workflows?name=child")
	lacks(t, body, " checked>")
	m := regexp.MustCompile(`id="select-all" href="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no select-all link:\n%s", body)
	}
	_, body = c.get(strings.ReplaceAll(m[1], "&amp;", "&"))
	if n := strings.Count(body, `type="checkbox" name="id"`); n != 7 || strings.Count(body, `aria-label="select`) != strings.Count(body, "checked>") {
		t.Fatalf("select all ticked %d of %d rows:\n%s", strings.Count(body, "checked>"), n, body)
	}
	must(t, 200, body, 200, "clear the selection")
	// Filters are kept across pages.
	_, body = c.get("/workflows?name=child")
	links = pagerLinks(body)
	if !strings.Contains(links["older"], "name=child") {
		t.Fatalf("older link drops the filter: %v", links)
	}
}

func TestDetail(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	code, body := c.get(fmt.Sprintf("/workflows/%d", s.stalled))
	must(t, code, body, 200, "pay-1", `id="state" class="st-stalled">stalled<`, "charge", "payment declined (code 51)", "paymentError", `id="act-retry"`, `id="act-cancel"`, `id="act-cancel-children"`, "Payloads (input, output, step results, durable values) are hidden")
	lacks(t, body, `id="act-resume"`, "&#34;bad&#34;")
	// Three attempts of the step shown in the timeline.
	if !regexp.MustCompile(`charge</td><td><span class="st-failed">failed</span></td><td class="n">3</td>`).MatchString(body) {
		t.Fatalf("step timeline lacks the 3 failed attempts:\n%s", body)
	}
	code, body = c.get(fmt.Sprintf("/workflows/%d", s.done))
	must(t, code, body, 200, "completed", "No error recorded.")
	lacks(t, body, `id="act-`)
	code, body = c.get(fmt.Sprintf("/workflows/%d", s.waiting))
	must(t, code, body, 200, "message in receive$approval", `id="act-resume"`, `id="act-cancel"`)
	lacks(t, body, `id="act-retry"`)
	code, body = c.get(fmt.Sprintf("/workflows/%d", s.parent))
	must(t, code, body, 200, fmt.Sprintf(`href="/workflows/%d/branches/%d">branch items</a>`, s.parent, s.branch))
	code, body = c.get("/workflows/424242")
	must(t, code, body, 404, "workflow 424242: not found")
}

func TestTraceLink(t *testing.T) {
	t.Parallel()
	s := seed(t)
	ctx := context.Background()
	tc := []byte(`{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`)
	wf, _, err := s.store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "traced", Key: "t-1", Input: []byte(`1`), TraceContext: tc, Now: s.env.Now()})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s, InsecureNoAuth(), TraceURL("https://traces.example/trace/{trace_id}"))
	code, body := c.get(fmt.Sprintf("/workflows/%d", wf.ID))
	must(t, code, body, 200, `id="trace" href="https://traces.example/trace/4bf92f3577b34da6a3ce929d0e0e4736"`)
	c = newClient(t, s, InsecureNoAuth())
	code, body = c.get(fmt.Sprintf("/workflows/%d", wf.ID))
	must(t, code, body, 200, "4bf92f3577b34da6a3ce929d0e0e4736")
	lacks(t, body, `id="trace"`)
}

func TestPayloads(t *testing.T) {
	t.Parallel()
	s := seed(t)
	path := fmt.Sprintf("/workflows/%d", s.done)
	c := newClient(t, s, InsecureNoAuth())
	for _, p := range []string{path, path + "?payloads=1"} {
		code, body := c.get(p)
		must(t, code, body, 200, "are hidden")
		lacks(t, body, "charged 0", "show payloads")
	}
	c = newClient(t, s, InsecureNoAuth(), ShowPayloads())
	code, body := c.get(path)
	must(t, code, body, 200, "charged 0", "hide payloads")
	code, body = c.get(path + "?payloads=0")
	must(t, code, body, 200, "are hidden", `id="show-payloads" href="?payloads=1"`)
	lacks(t, body, "charged 0")
	code, body = c.get(path + "?payloads=1")
	must(t, code, body, 200, "charged 0")
}

func TestBranchPage(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	code, body := c.get(fmt.Sprintf("/workflows/%d/branches/%d", s.parent, s.branch))
	must(t, code, body, 200, "Branch items", "8 finished, 2 to go", "batch-1$items$5", "batch-1$items$10", `id="retry-children"`)
	lacks(t, body, "≥")
	code, body = c.get(fmt.Sprintf("/workflows/%d/branches/%d", s.parent, 999999))
	must(t, code, body, 404, "has no branch step 999999")
	code, body = c.get(fmt.Sprintf("/workflows/%d/branches/%d", 999999, s.branch))
	must(t, code, body, 404, "not found")
	// Retry the stalled children from the branch page.
	var stalled []int64
	for _, d := range s.children(t) {
		if d.State == storage.StateStalled {
			stalled = append(stalled, d.ID)
		}
	}
	if len(stalled) != 2 {
		t.Fatalf("stalled children = %v", stalled)
	}
	code, body = c.post("/actions", act("retry", ids(stalled...)))
	must(t, code, body, 200, "2 done, 0 failed")
	for _, id := range stalled {
		if st := s.state(t, id); st != storage.StateIdle {
			t.Fatalf("retried child %d is %s", id, st)
		}
	}
}

func TestBranchCapped(t *testing.T) {
	t.Parallel()
	s := seed(t)
	// A cap below the branch's counts: the page marks the capped counts with "≥".
	c := newClient(t, s, InsecureNoAuth(), withBranchCap(3))
	code, body := c.get(fmt.Sprintf("/workflows/%d/branches/%d", s.parent, s.branch))
	must(t, code, body, 200, "≥3", "counts stop at 3 per state")
}

func TestWaiting(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth(), WaitThreshold(time.Hour))
	code, body := c.get("/waiting")
	must(t, code, body, 200, `href="#k-message"`, `href="#k-signal"`, `href="#k-merge"`, "approval-1", "gate-1", "batch-1")
	lacks(t, body, `<span class="flag">old</span>`)
	s.env.Clock().Advance(2 * time.Hour)
	code, body = c.get("/waiting")
	must(t, code, body, 200, `<span class="flag">old</span>`)
	if n := strings.Count(body, `<span class="flag">old</span>`); n != 2 {
		t.Fatalf("%d waits flagged, want 2 (the signal and the message wait):\n%s", n, body)
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	code, body := c.get("/failures")
	must(t, code, body, 200, "payments", "report template missing", "Retry 2")
	// The children's stalls group apart from the payments ones.
	if !regexp.MustCompile(`<td class="n">2</td><td>child</td><td>work</td><td><code>\*dashboard.paymentError</code>`).MatchString(body) {
		t.Fatalf("failures page lacks the child group:\n%s", body)
	}
	code, body = c.post("/actions", act("retry", ids(s.stalled, s.failed)))
	must(t, code, body, 200, "2 done")
	if s.state(t, s.stalled) != storage.StateIdle || s.state(t, s.failed) != storage.StateIdle {
		t.Fatal("bulk retry did not move the workflows back to work")
	}
}

func TestActions(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	// Resume wakes the signal wait.
	code, body := c.post("/actions", act("resume", ids(s.signal)))
	must(t, code, body, 200, "Resume: 1 done")
	w, _ := s.store.GetWorkflow(context.Background(), s.signal)
	if w.RunAt.IsZero() {
		t.Fatal("resume did not wake the workflow")
	}
	// Retry of a completed workflow is refused with the reason, and changes nothing.
	code, body = c.post("/actions", act("retry", ids(s.done)))
	must(t, code, body, 409, "only stalled or failed workflows can be retried")
	// Cancel.
	code, body = c.post("/actions", act("cancel", ids(s.waiting)))
	must(t, code, body, 200, "Cancel: 1 done")
	if s.state(t, s.waiting) != storage.StateCancelled {
		t.Fatal("cancel did not cancel")
	}
	// Cancel with children cancels the unfinished children too.
	code, body = c.post("/actions", act("cancel-children", ids(s.parent)))
	must(t, code, body, 200, "1 done")
	for _, ch := range s.children(t) {
		if !ch.State.Final() {
			t.Fatalf("child %d is %s after cancel with children", ch.ID, ch.State)
		}
	}
	// Bad input.
	for _, tc := range []struct {
		form url.Values
		code int
		want string
	}{
		{act("explode", ids(1)), 400, "unknown action &#34;explode&#34;"},
		{act("retry", url.Values{}), 400, "no workflow selected"},
		{act("retry", url.Values{"id": {"x"}}), 400, "workflow ID &#34;x&#34;"},
		{act("retry", ids(987654)), 404, "not found"},
	} {
		code, body := c.post("/actions", tc.form)
		must(t, code, body, tc.code, tc.want)
	}
	many := url.Values{}
	for i := range maxActionIDs + 1 {
		many.Add("id", fmt.Sprint(i+1))
	}
	code, body = c.post("/actions", act("cancel", many))
	must(t, code, body, 400, "at most 1000")
	// The return link stays inside the dashboard.
	for in, want := range map[string]string{"/workflows?x=1": "/workflows?x=1", "//evil.example": "/", "https://evil": "/", "/\\evil": "/"} {
		if got := safeReturn(in); got != want {
			t.Fatalf("safeReturn(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrefix(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth(), Prefix("/ops/"))
	code, body := c.get("/ops/")
	must(t, code, body, 200, `href="/ops/static/style.css"`, `href="/ops/workflows"`, `href="/ops/failures"`)
	code, body = c.get(fmt.Sprintf("/ops/workflows/%d", s.stalled))
	must(t, code, body, 200, `action="/ops/actions"`, `href="/ops/`)
	code, body = c.get("/ops/static/style.css")
	must(t, code, body, 200)
	code, body = c.post("/ops/actions", act("retry", url.Values{"id": {fmt.Sprint(s.stalled)}, "return": {fmt.Sprintf("/workflows/%d", s.stalled)}}))
	must(t, code, body, 200, fmt.Sprintf(`id="back" href="/ops/workflows/%d"`, s.stalled))
	code, _ = c.get("/workflows")
	if code != 404 {
		t.Fatalf("a path outside the prefix = %d, want 404", code)
	}
	// Mounted in a mux, as an application does.
	mux := http.NewServeMux()
	mux.Handle("/ops/", c.h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/ops/workflows?name=payments")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, resp.StatusCode, string(b), 200, "pay-1", `href="/ops/workflows/`)
}

func TestUnknownPage(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	code, body := c.get("/nope")
	must(t, code, body, 404, "no page at /nope")
}

// brokenStore is a memory store whose reads fail, for the error pages.
type brokenStore struct{ *memory.Store }

var errBroken = fmt.Errorf("disk on fire")

func (brokenStore) ListWorkflows(context.Context, storage.ListFilter) ([]storage.Workflow, error) {
	return nil, errBroken
}

func (brokenStore) CountStates(context.Context, storage.CountStatesQuery) (storage.StateCounts, error) {
	return storage.StateCounts{}, errBroken
}

func (brokenStore) ListFlows(context.Context, time.Time) ([]storage.FlowState, error) {
	return nil, errBroken
}

func (brokenStore) Load(context.Context, int64) (storage.Workflow, []storage.Step, error) {
	return storage.Workflow{}, nil, errBroken
}

func TestStoreFailures(t *testing.T) {
	t.Parallel()
	st := memory.New()
	defer st.Close()
	var logs bytes.Buffer
	h, err := New(brokenStore{st}, InsecureNoAuth(), Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, h: h, set: func(*http.Request) {}}
	for path, want := range map[string]string{
		"/":                       "count states: the store failed: disk on fire",
		"/workflows":              "list workflows: the store failed: disk on fire",
		"/workflows/1":            "workflow 1: the store failed: disk on fire",
		"/workflows/1/branches/2": "workflow 1: the store failed",
		"/waiting":                "list idle workflows: the store failed",
		"/failures":               "list failed workflows: the store failed",
		"/flows":                  "list flows: the store failed: disk on fire",
	} {
		code, body := c.get(path)
		must(t, code, body, 500, want)
	}
	if !strings.Contains(logs.String(), "disk on fire") {
		t.Fatalf("store failures are not logged: %s", logs.String())
	}
}
