package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
	"github.com/chronoforge/chronoforge/storage/memory"
	"github.com/chronoforge/chronoforge/storage/postgres"
)

// bigBranch stores, on a memory store, a parent with one branch step and n children (see
// fillBranch).
func bigBranch(tb testing.TB, n int) (st *memory.Store, parent, step int64) {
	tb.Helper()
	st = memory.New()
	tb.Cleanup(func() { _ = st.Close() })
	parent, step = fillBranch(tb, st, n)
	return st, parent, step
}

// fillBranch stores a parent with one branch step and n children, a few of them stalled and
// a share completed, straight through the store (the SDK would take minutes to run them).
func fillBranch(tb testing.TB, st storage.Storage, n int) (parent, step int64) {
	tb.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	p, _, err := st.CreateWorkflow(ctx, storage.NewWorkflow{Name: "batch", Key: "big", Input: []byte(`1`), Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	claimed, err := st.Claim(ctx, storage.ClaimRequest{Owner: "bench", Limit: 1, TTL: time.Minute, Now: now})
	if err != nil || len(claimed) != 1 {
		tb.Fatalf("claim parent: %v %v", claimed, err)
	}
	if err := st.SaveSteps(ctx, claimed[0].Lease(), storage.Commit{Now: now, Steps: []storage.Step{{WorkflowID: p.ID, Name: storage.BranchStepPrefix + "items", State: storage.StepCompleted, Result: []byte(`{}`)}}}); err != nil {
		tb.Fatal(err)
	}
	_, steps, err := st.Load(ctx, p.ID)
	if err != nil || len(steps) != 1 {
		tb.Fatalf("load parent: %v %v", steps, err)
	}
	step = steps[0].ID
	const batch = 1000
	for i := 0; i < n; i += batch {
		ws := make([]storage.NewWorkflow, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			ws = append(ws, storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("big$items$%d", j), Input: []byte(`1`), ParentStepID: step, Now: now})
		}
		if _, _, err := st.CreateWorkflows(ctx, ws); err != nil {
			tb.Fatal(err)
		}
	}
	// Finish 2,000 children: 1,990 completed, 10 stalled.
	for k := 0; k < 2000; k++ {
		got, err := st.Claim(ctx, storage.ClaimRequest{Owner: "bench", Limit: 1, Names: []string{"child"}, TTL: time.Minute, Now: now})
		if err != nil || len(got) != 1 {
			tb.Fatalf("claim child: %v %v", got, err)
		}
		f := storage.Finish{State: storage.StateCompleted, Output: []byte(`2`)}
		f.Now = now.Add(time.Duration(k) * time.Millisecond)
		if k%200 == 0 {
			f.State, f.Output = storage.StateStalled, nil
			f.Errors = []storage.ErrorRecord{{WorkflowID: got[0].ID, Step: "work", Attempt: 3, Type: "*errors.errorString", Message: "boom", CreatedAt: f.Now}}
		}
		if err := st.FinishRun(ctx, got[0].Lease(), f); err != nil {
			tb.Fatal(err)
		}
	}
	return p.ID, step
}

// BenchmarkBranchPage measures the server time of one render of the branch page of a parent
// with 100,000 children, on the memory store, bbolt and PostgreSQL (when its test server is
// configured).
func BenchmarkBranchPage(b *testing.B) {
	stores := map[string]func(b *testing.B) storage.Storage{
		"memory": func(b *testing.B) storage.Storage { return memory.New() },
		"bolt": func(b *testing.B) storage.Storage {
			st, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), bolt.WithNoSync())
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
		"postgres": func(b *testing.B) storage.Storage {
			dsn := os.Getenv("CHRONOFORGE_POSTGRES_DSN")
			if dsn == "" {
				b.Skip("CHRONOFORGE_POSTGRES_DSN is not set")
			}
			ctx := context.Background()
			pool, err := pgxpool.New(ctx, dsn)
			if err != nil {
				b.Fatal(err)
			}
			schema := fmt.Sprintf("chrono_dash_%d", time.Now().UnixNano())
			b.Cleanup(func() {
				_, _ = pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`)
				pool.Close()
			})
			st, err := postgres.New(pool, postgres.WithSchema(schema))
			if err == nil {
				err = st.Migrate(ctx)
			}
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
	}
	for _, name := range []string{"memory", "bolt", "postgres"} {
		b.Run(name, func(b *testing.B) {
			st := stores[name](b)
			b.Cleanup(func() { _ = st.Close() })
			parent, step := fillBranch(b, st, 100_000)
			h, err := New(st, InsecureNoAuth(), Logger(slog.New(slog.DiscardHandler)))
			if err != nil {
				b.Fatal(err)
			}
			path := fmt.Sprintf("/workflows/%d/branches/%d", parent, step)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				if rec.Code != 200 {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

// TestBranchPageLarge renders the branch page of 20,000 children with a cap below that: the
// counts are capped and marked, the stalled children come first.
func TestBranchPageLarge(t *testing.T) {
	t.Parallel()
	st, parent, step := bigBranch(t, 20_000)
	h, err := New(st, InsecureNoAuth(), Logger(slog.New(slog.DiscardHandler)), withBranchCap(10_000))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, fmt.Sprintf("/workflows/%d/branches/%d", parent, step), nil))
	body := rec.Body.String()
	must(t, rec.Code, body, 200, "≥10000", "1990", "counts stop at 10000 per state", "children/s")
	if strings.Count(body, `<span class="st-stalled">stalled</span>`) != 10 {
		t.Fatalf("the branch page does not list the 10 stalled children:\n%s", body)
	}
	// The other pages stay bounded too: the waiting page reads 5 pages of idle workflows and
	// says so, the overview counts a sample and says so.
	h, err = New(st, InsecureNoAuth(), Logger(slog.New(slog.DiscardHandler)), CountSample(10_000))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]string{
		"/waiting":  {"5000 idle workflows read (the newest only", "due (no wait) (5000)"},
		"/":         {"newest 10000 sampled"},
		"/failures": {"<td class=\"n\">10</td><td>child</td><td>work</td>", "Retry 10"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		must(t, rec.Code, rec.Body.String(), 200, want...)
	}
}
