package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// flowSeed adds to s two flows and workflows they govern: "mail" (priority 5, concurrency
// 2) with four due workflows, two of them claimed, so two are held back; and "bulk" (a rate
// of 3 per minute) with one due workflow. It returns the IDs of mail's workflows.
func flowSeed(t testing.TB, s *seeded) []int64 {
	t.Helper()
	ctx := context.Background()
	fc := s.store.(storage.FlowController)
	now := s.env.Now()
	for _, f := range []storage.Flow{{Key: "mail", Priority: 5, Concurrency: 2}, {Key: "bulk", Rate: 3, Per: time.Minute}} {
		if _, _, err := fc.PutFlow(ctx, f, false, now); err != nil {
			t.Fatalf("put flow %s: %v", f.Key, err)
		}
	}
	var mail []int64
	for i := range 4 {
		w, _, err := s.store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "mailer", Key: fmt.Sprintf("m-%d", i), Flow: "mail", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		mail = append(mail, w.ID)
	}
	if _, _, err := s.store.CreateWorkflow(ctx, storage.NewWorkflow{Name: "exporter", Key: "e-1", Flow: "bulk", Now: now}); err != nil {
		t.Fatal(err)
	}
	ws, err := s.store.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 4, Names: []string{"mailer"}, TTL: time.Hour, Now: now})
	if err != nil || len(ws) != 2 {
		t.Fatalf("claim: %d workflows, %v; want the 2 concurrency allows", len(ws), err)
	}
	return mail
}

// listFlows reads the store's flows.
func listFlows(t testing.TB, s *seeded) []storage.FlowState {
	t.Helper()
	out, err := s.store.(storage.FlowController).ListFlows(context.Background(), s.env.Now())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// storedFlow returns the flow stored under key, failing the test when there is none.
func storedFlow(t testing.TB, s *seeded, key string) storage.Flow {
	t.Helper()
	for _, st := range listFlows(t, s) {
		if st.Key == key {
			st.UpdatedAt = time.Time{}
			return st.Flow
		}
	}
	t.Fatalf("no flow %q stored", key)
	return storage.Flow{}
}

func TestFlowsPage(t *testing.T) {
	t.Parallel()
	s := seed(t)
	c := newClient(t, s, InsecureNoAuth())
	code, body := c.get("/flows")
	must(t, code, body, 200, "No flow is stored", `href="/flows" class="on">Flows<`, `id="add-flow"`)
	mail := flowSeed(t, s)
	code, body = c.get("/flows")
	// Rows in key order: bulk, then mail.
	must(t, code, body, 200,
		`<tr id="row-0" class="flagged"><td class="key">bulk</td>`,
		`<input form="flow-0" name="rate" type="number" min="0" value="3"`, `<input form="flow-0" name="per" value="1m0s"`,
		`<span class="flag">1</span> rate 3 per 1m0s`,
		`<tr id="row-1" class="flagged"><td class="key">mail</td>`,
		`<input form="flow-1" name="priority" type="number" min="-1000" max="1000" value="5"`,
		`<input form="flow-1" name="concurrency" type="number" min="0" value="2"`,
		`<td class="n running">2</td><td class="n due">2</td>`,
		`<span class="flag">2</span> concurrency 2 reached`,
		`<form method="post" action="/flows" id="flow-1"><input type="hidden" name="key" value="mail">`,
	)
	lacks(t, body, `">≥`, "No flow is stored")
	// The overview shows what the limits hold back.
	code, body = c.get("/")
	must(t, code, body, 200, `id="held">3<`, "Held back by flow limits",
		`<td><a href="/flows">mail</a></td><td class="n">2</td><td class="n">2</td><td>concurrency 2 reached</td>`,
		`<td><a href="/flows">bulk</a></td><td class="n">0</td><td class="n">1</td><td>rate 3 per 1m0s</td>`)
	// A workflow's detail links to its flow.
	code, body = c.get(fmt.Sprintf("/workflows/%d", mail[0]))
	must(t, code, body, 200, `<dt>Flow</dt><dd><a id="flow" href="/flows">mail</a></dd>`)
	// Once runs end, nothing is held back: the overview says nothing of flows.
	s.env.Clock().Advance(2 * time.Hour)
	ws, err := s.store.Claim(context.Background(), storage.ClaimRequest{Owner: "w2", Limit: 10, Names: []string{"mailer", "exporter"}, TTL: time.Hour, Now: s.env.Now()})
	if err != nil || len(ws) != 3 {
		t.Fatalf("claim after the leases expired: %d, %v; want 2 of mail and 1 of bulk", len(ws), err)
	}
	for _, w := range ws {
		if err := s.store.FinishRun(context.Background(), w.Lease(), storage.Finish{State: storage.StateCompleted, Commit: storage.Commit{Now: s.env.Now()}}); err != nil {
			t.Fatal(err)
		}
	}
	code, body = c.get("/")
	must(t, code, body, 200)
	lacks(t, body, `id="held"`, "Held back by flow limits")
}

func TestFlowsCapped(t *testing.T) {
	t.Parallel()
	// A held-back backlog above storage.FlowProbe: the counts say "≥".
	st := memory.New()
	defer st.Close()
	ctx := context.Background()
	now := time.Now()
	if _, _, err := st.PutFlow(ctx, storage.Flow{Key: "big", Concurrency: 1}, false, now); err != nil {
		t.Fatal(err)
	}
	batch := make([]storage.NewWorkflow, 0, storage.MaxCreateBatch)
	for i := range storage.FlowProbe + 1 {
		batch = append(batch, storage.NewWorkflow{Name: "big", Key: fmt.Sprint(i), Flow: "big", Now: now})
		if len(batch) == cap(batch) || i == storage.FlowProbe {
			if _, _, err := st.CreateWorkflows(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := st.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 5, Names: []string{"big"}, TTL: time.Hour, Now: now}); err != nil {
		t.Fatal(err)
	}
	h, err := New(st, InsecureNoAuth(), Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, h: h, set: func(*http.Request) {}}
	code, body := c.get("/flows")
	must(t, code, body, 200, `<td class="n running">1</td><td class="n due">≥10000</td>`, `<span class="flag">≥10000</span> concurrency 1 reached`)
	code, body = c.get("/")
	must(t, code, body, 200, `id="held">10000+<`)
}

func TestFlowActions(t *testing.T) {
	t.Parallel()
	s := seed(t)
	flowSeed(t, s)
	var logs bytes.Buffer
	c := newClient(t, s, BasicAuth("ops", "s3cret"), Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	c.set = func(r *http.Request) { r.SetBasicAuth("ops", "s3cret") }
	post := func(form url.Values) (int, string, http.Header) {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, "/flows", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return c.do(r)
	}
	flowForm := func(op, key, priority, concurrency, rate, per string) url.Values {
		return url.Values{"op": {op}, "key": {key}, "priority": {priority}, "concurrency": {concurrency}, "rate": {rate}, "per": {per}}
	}

	// Save a row's form: every number of the form is stored.
	code, body, hdr := post(flowForm("save", "mail", "7", "3", "100", "1s"))
	must(t, code, body, http.StatusSeeOther)
	if got := hdr.Get("Location"); got != "/flows?done=saved&key=mail" {
		t.Fatalf("redirect to %q", got)
	}
	if got := storedFlow(t, s, "mail"); got != (storage.Flow{Key: "mail", Priority: 7, Concurrency: 3, Rate: 100, Per: time.Second}) {
		t.Fatalf("stored %+v", got)
	}
	code, body = c.get("/flows?done=saved&key=mail")
	must(t, code, body, 200, `id="notice">Flow mail saved.<`, `name="concurrency" type="number" min="0" value="3"`)
	line := logs.String()
	for _, want := range []string{"dashboard flow", "principal=ops", "op=save", "key=mail", "priority=7", "concurrency=3", "rate=100", "per=1s"} {
		if !strings.Contains(line, want) {
			t.Fatalf("log line lacks %q: %s", want, line)
		}
	}
	if n := strings.Count(line, "dashboard flow"); n != 1 {
		t.Fatalf("%d flow log lines, want 1: %s", n, line)
	}
	// Empty fields are no limits.
	code, body, _ = post(flowForm("save", "mail", "7", "", "", ""))
	must(t, code, body, http.StatusSeeOther)
	if got := storedFlow(t, s, "mail"); got != (storage.Flow{Key: "mail", Priority: 7}) {
		t.Fatalf("stored %+v", got)
	}

	// Add a flow; adding it again is refused and changes nothing.
	code, body, hdr = post(flowForm("add", "reports", "-3", "1", "", ""))
	must(t, code, body, http.StatusSeeOther)
	if got := hdr.Get("Location"); got != "/flows?done=added&key=reports" {
		t.Fatalf("redirect to %q", got)
	}
	if got := storedFlow(t, s, "reports"); got != (storage.Flow{Key: "reports", Priority: -3, Concurrency: 1}) {
		t.Fatalf("stored %+v", got)
	}
	code, body, _ = post(flowForm("add", "reports", "9", "9", "", ""))
	must(t, code, body, http.StatusConflict, "flow &#34;reports&#34; exists already")
	if got := storedFlow(t, s, "reports"); got.Priority != -3 {
		t.Fatalf("a refused add changed the flow: %+v", got)
	}

	// Bad input: 400 with a message naming what was wrong, and nothing written.
	logs.Reset()
	before := listFlows(t, s)
	for _, tc := range []struct {
		form url.Values
		want string
	}{
		{flowForm("save", "mail", "5000", "", "", ""), "priority 5000 must be -1000..1000"},
		{flowForm("save", "mail", "1", "-1", "", ""), "concurrency -1 must be 0 (no limit)"},
		{flowForm("save", "mail", "1", "", "20000", "1s"), "rate 20000 must be 0 (no limit)..10000"},
		{flowForm("save", "mail", "1", "", "5", ""), "a rate of 5 needs a period (per), such as 1s or 1m"},
		{flowForm("save", "mail", "1", "", "", "1s"), "a period (1s) without a rate"},
		{flowForm("save", "mail", "1", "", "5", "30d"), "per &#34;30d&#34; is not a duration"},
		{flowForm("save", "mail", "1", "", "5", "10000h"), "the period must be 1ms..168h0m0s"},
		{flowForm("save", "mail", "high", "", "", ""), "priority &#34;high&#34; is not an integer"},
		{flowForm("add", "a$b", "1", "", "", ""), "contains &#39;$&#39;, which is reserved"},
		{flowForm("add", "", "1", "", "", ""), "flow key: storage: invalid input: workflow name is empty"},
		{flowForm("delete", "", "", "", "", ""), "workflow name is empty"},
		{flowForm("explode", "mail", "1", "", "", ""), "unknown flow operation &#34;explode&#34;"},
	} {
		code, body, _ := post(tc.form)
		must(t, code, body, http.StatusBadRequest, tc.want)
	}
	if after := listFlows(t, s); !reflect.DeepEqual(before, after) {
		t.Fatalf("refused input changed the flows:\n%+v\n%+v", before, after)
	}
	if logs.Len() != 0 {
		t.Fatalf("refused input was logged as a change: %s", logs.String())
	}

	// Delete; deleting again is a 404.
	code, body, hdr = post(url.Values{"op": {"delete"}, "key": {"reports"}})
	must(t, code, body, http.StatusSeeOther)
	if got := hdr.Get("Location"); got != "/flows?done=deleted&key=reports" {
		t.Fatalf("redirect to %q", got)
	}
	if !strings.Contains(logs.String(), "op=delete key=reports") {
		t.Fatalf("delete not logged: %s", logs.String())
	}
	code, body = c.get("/flows?done=deleted&key=reports")
	must(t, code, body, 200, "Flow reports deleted")
	lacks(t, body, `<td class="key">reports</td>`)
	code, body, _ = post(url.Values{"op": {"delete"}, "key": {"reports"}})
	must(t, code, body, http.StatusNotFound, "no flow is stored under that key")

	// A full store refuses a new flow with a clear message.
	fc := s.store.(storage.FlowController)
	for i := len(listFlows(t, s)); i < storage.MaxFlows; i++ {
		if _, _, err := fc.PutFlow(context.Background(), storage.Flow{Key: fmt.Sprintf("f%04d", i)}, false, s.env.Now()); err != nil {
			t.Fatal(err)
		}
	}
	code, body, _ = post(flowForm("add", "one-more", "1", "", "", ""))
	must(t, code, body, http.StatusConflict, "the store holds 1000 flows, its most: delete one first")
}

func TestFlowsPrefix(t *testing.T) {
	t.Parallel()
	s := seed(t)
	flowSeed(t, s)
	c := newClient(t, s, InsecureNoAuth(), Prefix("/ops"))
	code, body := c.get("/ops/flows")
	must(t, code, body, 200, `action="/ops/flows" id="flow-0"`, `action="/ops/flows" class="filters" id="add-flow"`)
	r := httptest.NewRequest(http.MethodPost, "/ops/flows", strings.NewReader(url.Values{"op": {"save"}, "key": {"mail"}, "priority": {"1"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	code, body, hdr := c.do(r)
	must(t, code, body, http.StatusSeeOther)
	if got := hdr.Get("Location"); got != "/ops/flows?done=saved&key=mail" {
		t.Fatalf("redirect to %q", got)
	}
}

func TestFlowsReadOnly(t *testing.T) {
	t.Parallel()
	s := seed(t)
	flowSeed(t, s)
	before := listFlows(t, s)
	c := newClient(t, s, InsecureNoAuth(), ReadOnly())
	code, body := c.get("/flows")
	must(t, code, body, 200, "read-only", `<td class="key">mail</td>`, `<td class="n">5</td><td class="n">2</td><td class="n">—</td><td>—</td>`)
	lacks(t, body, `method="post"`, "<input", "Add a flow")
	for _, op := range []string{"save", "add", "delete"} {
		code, body := c.post("/flows", url.Values{"op": {op}, "key": {"mail"}, "priority": {"9"}})
		must(t, code, body, http.StatusForbidden, "read-only")
	}
	// A principal an AuthFunc makes read-only is refused too.
	c = newClient(t, s, AuthFunc(func(*http.Request) (string, bool, bool) { return "viewer", false, true }))
	code, body = c.post("/flows", url.Values{"op": {"save"}, "key": {"mail"}, "priority": {"9"}})
	must(t, code, body, http.StatusForbidden, "read-only")
	// And a cross-origin POST.
	c = newClient(t, s, InsecureNoAuth())
	r := httptest.NewRequest(http.MethodPost, "http://dash.local/flows", strings.NewReader(url.Values{"op": {"delete"}, "key": {"mail"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	code, body, _ = c.do(r)
	must(t, code, body, http.StatusForbidden)
	if after := listFlows(t, s); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused POST changed the flows:\n%+v\n%+v", before, after)
	}
}

// noFlowStore is a store with operator queries and no flow control.
type noFlowStore struct {
	storage.Storage
	storage.Inspector
}

func TestFlowsUnsupported(t *testing.T) {
	t.Parallel()
	st := memory.New()
	defer st.Close()
	h, err := New(noFlowStore{st, st}, InsecureNoAuth(), Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, h: h, set: func(*http.Request) {}}
	code, body := c.get("/")
	must(t, code, body, 200, "Overview")
	lacks(t, body, `/flows"`)
	code, body = c.get("/flows")
	must(t, code, body, 404, "does not implement flow control (storage.FlowController)")
	code, body = c.post("/flows", url.Values{"op": {"add"}, "key": {"mail"}})
	must(t, code, body, 404, "does not implement flow control")
}
