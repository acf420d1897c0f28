package dashboard

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/chronoforge/chronoforge/storage"
)

// browser starts headless Chromium for a test, or skips it when Chromium is missing, except
// under CI=true, where a missing browser fails the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found (CI=true requires it; .ci/run installs Debian's chromium): %v", err)
		}
		t.Skipf("chromium not found, the browser test needs it: %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1100, 760),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 45*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// artifacts is where screenshots go: CHRONOFORGE_ARTIFACTS, else a temporary directory.
func artifacts(t *testing.T) string {
	dir := os.Getenv("CHRONOFORGE_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	return dir
}

func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, "dashboard-"+name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot %s: %s (%d bytes)", name, p, len(png))
}

func status(t *testing.T, ctx context.Context, url string) int {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(url))
	if err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
	return int(resp.Status)
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func TestBrowser(t *testing.T) {
	ctx := browser(t)
	s := seed(t)
	flowSeed(t, s) // a flow at its concurrency limit: the overview shows what it holds back
	dir := artifacts(t)
	h, err := New(s.store, BasicAuth("ops", "s3cret"), Logger(slog.New(slog.DiscardHandler)), withClock(s.env.Clock()), TraceURL("https://traces.example/{trace_id}"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	// No credentials: 401. Headless Chromium has no login prompt: it ends the navigation with
	// net::ERR_INVALID_AUTH_CREDENTIALS once it meets the challenge, so the status is read
	// from the network events.
	var mu sync.Mutex
	var seen []int64
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	lctx, stopListen := context.WithCancel(ctx)
	if err := chromedp.Listen(lctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventResponseReceived:
			seen = append(seen, int64(e.Response.Status))
		case *network.EventResponseReceivedExtraInfo:
			seen = append(seen, int64(e.StatusCode))
		}
	}); err != nil {
		t.Fatal(err)
	}
	resp0, err := chromedp.RunResponse(ctx, chromedp.Navigate(srv.URL+"/"))
	stopListen()
	mu.Lock()
	got401 := slices.Contains(seen, http.StatusUnauthorized)
	statuses := slices.Clone(seen)
	mu.Unlock()
	switch {
	case err == nil && resp0.Status != http.StatusUnauthorized:
		t.Fatalf("without credentials: %d, want 401", resp0.Status)
	case err != nil && !(strings.Contains(err.Error(), "ERR_INVALID_AUTH_CREDENTIALS") && got401):
		t.Fatalf("without credentials: %v (statuses seen %v), want a 401", err, statuses)
	}
	// Log in: basic auth on every request of the tab.
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:s3cret"))
	setAuth := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	})
	if err := chromedp.Do(ctx, setAuth); err != nil {
		t.Fatal(err)
	}
	if code := status(t, ctx, srv.URL+"/"); code != http.StatusOK {
		t.Fatalf("overview with credentials: %d", code)
	}
	if got := text(t, ctx, "#stalled"); got != "4" {
		t.Fatalf("overview shows %q stalled, want 4", got)
	}
	if got := text(t, ctx, "#held"); got != "3" {
		t.Fatalf("overview shows %q held back by flows, want 3", got)
	}
	shoot(t, ctx, dir, "overview")

	// Filter the list: payments, stalled.
	if code := status(t, ctx, srv.URL+"/workflows"); code != 200 {
		t.Fatalf("workflows: %d", code)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "payments"),
		chromedp.Click(chromedp.CSS(`input[name="state"][value="stalled"]`)),
	); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("apply"))); err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(loc, "name=payments") || !strings.Contains(loc, "state=stalled") {
		t.Fatalf("filter did not apply: %s", loc)
	}
	list := text(t, ctx, "#list")
	if !strings.Contains(list, "pay-1") || !strings.Contains(list, "pay-2") || strings.Contains(list, "order-") || strings.Contains(list, "report-") {
		t.Fatalf("filtered list:\n%s", list)
	}
	shoot(t, ctx, dir, "workflows")

	// Open the stalled workflow from the list and retry it.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#list a[href="/workflows/%d"]`, s.stalled)))); err != nil {
		t.Fatal(err)
	}
	if got := text(t, ctx, "#state"); got != "stalled" {
		t.Fatalf("detail state %q", got)
	}
	shoot(t, ctx, dir, "detail")
	if resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("act-retry"))); err != nil || resp.Status != 200 {
		t.Fatalf("retry: %v %v", resp, err)
	}
	if got := text(t, ctx, "#outcome"); !strings.Contains(got, "1 done, 0 failed") {
		t.Fatalf("retry outcome %q", got)
	}
	if st := s.state(t, s.stalled); st != storage.StateIdle {
		t.Fatalf("retried workflow is %s in the store, want idle", st)
	}

	// The flows page: raise mail's concurrency in its row, then add a flow.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`nav a[href="/flows"]`))); err != nil {
		t.Fatal(err)
	}
	if got := text(t, ctx, "#row-1 td.held"); !strings.Contains(got, "2 concurrency 2 reached") {
		t.Fatalf("flows page: mail holds back %q", got)
	}
	shoot(t, ctx, dir, "flows")
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS(`input[form="flow-1"][name="concurrency"]`), "5")); err != nil {
		t.Fatal(err)
	}
	if resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("save-1"))); err != nil || resp.Status != 200 {
		t.Fatalf("save flow: %v %v", resp, err)
	}
	if got := text(t, ctx, "#notice"); got != "Flow mail saved." {
		t.Fatalf("save flow notice %q", got)
	}
	if got := storedFlow(t, s, "mail"); got != (storage.Flow{Key: "mail", Priority: 5, Concurrency: 5}) {
		t.Fatalf("after the save the store holds %+v", got)
	}
	if got := text(t, ctx, "#row-1 td.held"); got != "·" {
		t.Fatalf("mail still holds back %q below its new limit", got)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`#add-flow input[name="key"]`), "exports"),
		chromedp.SendKeys(chromedp.CSS(`#add-flow input[name="rate"]`), "10"),
		chromedp.SendKeys(chromedp.CSS(`#add-flow input[name="per"]`), "1s"),
	); err != nil {
		t.Fatal(err)
	}
	if resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("add"))); err != nil || resp.Status != 200 {
		t.Fatalf("add flow: %v %v", resp, err)
	}
	if got := text(t, ctx, "#notice"); got != "Flow exports added." {
		t.Fatalf("add flow notice %q", got)
	}
	if got := storedFlow(t, s, "exports"); got != (storage.Flow{Key: "exports", Rate: 10, Per: time.Second}) {
		t.Fatalf("the added flow is stored as %+v", got)
	}
	shoot(t, ctx, dir, "flows-saved")

	// The other pages render.
	for name, path := range map[string]string{
		"branch":   fmt.Sprintf("/workflows/%d/branches/%d", s.parent, s.branch),
		"waiting":  "/waiting",
		"failures": "/failures",
	} {
		if code := status(t, ctx, srv.URL+path); code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		shoot(t, ctx, dir, name)
	}

	// A cross-origin POST (a form on another origin posting to the dashboard) gets 403.
	pay2, err := s.store.FindWorkflow(context.Background(), "payments", "pay-2")
	if err != nil {
		t.Fatal(err)
	}
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%s/actions"><input type="hidden" name="action" value="retry"><input type="hidden" name="id" value="%d"><button id="go">win a prize</button></form>`, srv.URL, pay2.ID)
	}))
	defer evil.Close()
	if code := status(t, ctx, evil.URL+"/"); code != 200 {
		t.Fatalf("evil page: %d", code)
	}
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("go")))
	if err != nil {
		t.Fatalf("cross-origin submit: %v", err)
	}
	if resp.Status != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d, want 403", resp.Status)
	}
	if st := s.state(t, pay2.ID); st != storage.StateStalled {
		t.Fatalf("a cross-origin POST changed the workflow to %s", st)
	}

	// Read-only: no actions in the page, and a same-origin POST is refused.
	ro, err := New(s.store, BasicAuth("ops", "s3cret"), ReadOnly(), withClock(s.env.Clock()))
	if err != nil {
		t.Fatal(err)
	}
	rsrv := httptest.NewServer(ro)
	defer rsrv.Close()
	if code := status(t, ctx, fmt.Sprintf("%s/workflows/%d", rsrv.URL, pay2.ID)); code != 200 {
		t.Fatalf("read-only detail: %d", code)
	}
	buttons, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('button[name="action"], form[method="post"]').length`))
	if err != nil {
		t.Fatal(err)
	}
	// A same-origin form POST made up in the page (the page itself offers none): the CSP
	// allows no fetch, so a form is built and submitted.
	submit := fmt.Sprintf(`(() => {
		const f = document.createElement('form');
		f.method = 'post'; f.action = '/actions';
		for (const [k, v] of [['action', 'retry'], ['id', '%d']]) {
			const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.append(i);
		}
		document.body.append(f); f.submit(); return true;
	})()`, pay2.ID)
	presp, err := chromedp.RunResponse(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](submit)(ctx, tg)
		return err
	}))
	if err != nil {
		t.Fatal(err)
	}
	postStatus := int(presp.Status)
	if buttons != 0 {
		t.Fatalf("read-only page shows %d action controls", buttons)
	}
	if postStatus != http.StatusForbidden {
		t.Fatalf("read-only POST: %d, want 403", postStatus)
	}
	if msg := text(t, ctx, "#error"); !strings.Contains(msg, "read-only") {
		t.Fatalf("read-only refusal says %q", msg)
	}
	shoot(t, ctx, dir, "readonly")
	if st := s.state(t, pay2.ID); st != storage.StateStalled {
		t.Fatalf("a read-only POST changed the workflow to %s", st)
	}
}
