package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
	"github.com/chronoforge/chronoforge/storage/postgres"
)

// binary is the tool built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chronoforge-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "chronoforge")
	args := []string{"build", "-o", binary}
	if os.Getenv("GOCOVERDIR") != "" {
		args = append(args, "-cover") // the binary's runs write their coverage there
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build chronoforge:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// cf runs the built binary with args and no CHRONOFORGE_STORE in its environment.
func cf(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHRONOFORGE_STORE=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{out.String(), errb.String(), code}
}

// ok runs the binary, requires exit 0 and decodes its -o json output into v.
func ok(t *testing.T, v any, args ...string) {
	t.Helper()
	r := cf(t, append(args, "-o", "json")...)
	require.Equal(t, 0, r.code, "chronoforge %v: stderr %s", args, r.stderr)
	reflect.ValueOf(v).Elem().SetZero() // a reused result keeps no field of the last one
	require.NoError(t, json.Unmarshal([]byte(r.stdout), v), "output: %s", r.stdout)
}

// fails runs the binary and requires the exit code and one line on stderr containing want.
func fails(t *testing.T, code int, want string, args ...string) result {
	t.Helper()
	r := cf(t, args...)
	require.Equal(t, code, r.code, "chronoforge %v: stdout %s stderr %s", args, r.stdout, r.stderr)
	require.Contains(t, r.stderr, want)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)
	return r
}

// seeded names the workflows seed made.
type seeded struct {
	completed, failed, stalled, waiting, parent int64
	crashed                                     int64 // running, its lease expired
	branchStep                                  int64
	children                                    []int64 // 5 children: the first 2 completed
	finished                                    time.Time
}

// seed writes through storage calls: a completed, a failed (with an error record), a stalled
// (a failed step) and an idle workflow waiting for a signal, and a parent whose branch
// "items" spawned five children, two of them completed, and a running workflow whose worker
// died (its lease expired at once); all of it two hours ago.
func seed(t *testing.T, s storage.Storage) seeded {
	t.Helper()
	ctx := context.Background()
	now := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Millisecond)
	var out seeded
	out.finished = now
	create := func(name, key string) {
		_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: name, Key: key, Input: []byte(`{"n":1}`), Now: now,
			Tags: map[string]string{"team": "ops"}, TraceContext: []byte(`{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`)})
		require.NoError(t, err)
	}
	claim := func(name string, n int) []storage.Workflow {
		ws, err := s.Claim(ctx, storage.ClaimRequest{Owner: "seed", Limit: n, Names: []string{name}, TTL: time.Minute, Now: now})
		require.NoError(t, err)
		require.Len(t, ws, n)
		return ws
	}
	finish := func(w storage.Workflow, f storage.Finish) {
		f.Now = now
		require.NoError(t, s.FinishRun(ctx, w.Lease(), f))
	}
	for _, n := range []string{"done", "broken", "stuck", "waiting", "parent", "crashed"} {
		create(n, "k-"+n)
	}
	w := claim("done", 1)[0]
	out.completed = w.ID
	finish(w, storage.Finish{State: storage.StateCompleted, Output: []byte(`"secret-output"`),
		Commit: storage.Commit{Steps: []storage.Step{{WorkflowID: w.ID, Name: "charge", State: storage.StepCompleted, Attempts: 1,
			Result: []byte(`{"paid":true}`), CreatedAt: now, UpdatedAt: now, CompletedAt: now}}, Values: []byte(`{"stage":"paid"}`)}})
	w = claim("broken", 1)[0]
	out.failed = w.ID
	finish(w, storage.Finish{State: storage.StateFailed, Commit: storage.Commit{Errors: []storage.ErrorRecord{{WorkflowID: w.ID, Attempt: 1,
		Type: "*errors.errorString", Message: "boom", CreatedAt: now}}}})
	w = claim("stuck", 1)[0]
	out.stalled = w.ID
	finish(w, storage.Finish{State: storage.StateStalled, Commit: storage.Commit{
		Steps:  []storage.Step{{WorkflowID: w.ID, Name: "call", State: storage.StepFailed, Attempts: 3, LastError: "timeout", CreatedAt: now, UpdatedAt: now}},
		Errors: []storage.ErrorRecord{{WorkflowID: w.ID, Step: "call", Attempt: 3, Type: "net.Error", Message: "timeout", CreatedAt: now}}}})
	w = claim("waiting", 1)[0]
	out.waiting = w.ID
	finish(w, storage.Finish{State: storage.StateIdle, Wait: storage.Wait{Kind: storage.WaitSignal, Step: "approved"}})
	w = claim("parent", 1)[0]
	out.parent = w.ID
	branch := storage.BranchStepPrefix + "items"
	var kids []storage.NewWorkflow
	for i := range 5 {
		kids = append(kids, storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("k-parent/items/%d", i), Now: now})
	}
	sr, err := s.SpawnBatch(ctx, w.Lease(), storage.SpawnRequest{Branch: branch, Now: now, Children: kids,
		Steps: []storage.Step{{WorkflowID: w.ID, Name: branch, State: storage.StepPending, CreatedAt: now, UpdatedAt: now}}})
	require.NoError(t, err)
	out.branchStep = sr.BranchStepID
	finish(w, storage.Finish{State: storage.StateIdle, Wait: storage.Wait{Kind: storage.WaitMerge, Step: branch}})
	page, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: sr.BranchStepID})
	require.NoError(t, err)
	require.Len(t, page, 5)
	for _, c := range page {
		out.children = append(out.children, c.ID)
	}
	ws, err := s.Claim(ctx, storage.ClaimRequest{Owner: "dead-worker", Limit: 1, Names: []string{"crashed"}, TTL: time.Millisecond, Now: now})
	require.NoError(t, err)
	require.Len(t, ws, 1)
	out.crashed = ws[0].ID
	for i, c := range claim("child", 2) {
		finish(c, storage.Finish{State: storage.StateCompleted})
		now = now.Add(time.Duration(i+1) * time.Second) // two finish times a second apart: a drain rate
	}
	return out
}

// backendCase is one store for exercise: the global flags naming it and how the test opens
// it to seed and check (closed again before the binary runs, since bbolt locks its file).
type backendCase struct {
	flags []string
	open  func(t *testing.T) storage.Storage
}

func TestBolt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cf.db")
	exercise(t, backendCase{
		flags: []string{"--store", "bolt:" + path},
		open: func(t *testing.T) storage.Storage {
			s, err := bolt.Open(path)
			require.NoError(t, err)
			return s
		},
	})
}

// postgresDSN returns the test server's DSN, skipping when there is none unless
// CHRONOFORGE_REQUIRE_DB is set.
func postgresDSN(t *testing.T) string {
	dsn := os.Getenv("CHRONOFORGE_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CHRONOFORGE_REQUIRE_DB") != "" {
			t.Fatal("CHRONOFORGE_REQUIRE_DB is set but CHRONOFORGE_POSTGRES_DSN is not")
		}
		t.Skip("CHRONOFORGE_POSTGRES_DSN is not set")
	}
	return dsn
}

// freshSchema names a schema that does not exist yet (migrate creates it) and drops it when
// the test ends.
func freshSchema(t *testing.T, pool *pgxpool.Pool) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "chrono_cli_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	dsn := postgresDSN(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	schema := freshSchema(t, pool)
	exercise(t, backendCase{
		flags: []string{"--store", "postgres:" + dsn, "--schema", schema, "--prefix", "cli_"},
		open: func(t *testing.T) storage.Storage {
			s, err := postgres.New(pool, postgres.WithSchema(schema), postgres.WithTablePrefix("cli_"))
			require.NoError(t, err)
			return s
		},
	})
}

// withStore opens the store, runs f and closes it.
func withStore(t *testing.T, b backendCase, f func(s storage.Storage)) {
	t.Helper()
	s := b.open(t)
	defer func() { require.NoError(t, s.Close()) }()
	f(s)
}

// state reads one workflow's state.
func state(t *testing.T, b backendCase, id int64) storage.State {
	t.Helper()
	var st storage.State
	withStore(t, b, func(s storage.Storage) {
		w, err := s.GetWorkflow(context.Background(), id)
		require.NoError(t, err)
		st = w.State
	})
	return st
}

// exercise runs every command against one backend, in order, since each changes the store.
func exercise(t *testing.T, b backendCase) {
	g := b.flags
	args := func(a ...string) []string { return append(append([]string{}, g...), a...) }

	// migrate: status before, the migration, status after.
	var mig migrateResult
	ok(t, &mig, args("migrate", "--status")...)
	if mig.Backend != "bolt" {
		require.Equal(t, 0, mig.Current)
		require.False(t, mig.Migrated)
		require.Contains(t, mig.Status, "not migrated")
	}
	ok(t, &mig, args("migrate")...)
	require.True(t, mig.Migrated)
	ok(t, &mig, args("migrate", "--status")...)
	if mig.Backend == "bolt" {
		require.Contains(t, mig.Status, "bbolt needs no migration")
	} else {
		require.Equal(t, mig.Known, mig.Current)
		require.Equal(t, "up to date", mig.Status)
	}

	var sd seeded
	withStore(t, b, func(s storage.Storage) { sd = seed(t, s) })

	t.Run("version", func(t *testing.T) {
		var v versionResult
		ok(t, &v, "version")
		require.Equal(t, "github.com/chronoforge/chronoforge", v.Module)
		require.True(t, strings.HasPrefix(v.GoVersion, "go"), v.GoVersion)
	})

	t.Run("list", func(t *testing.T) {
		var l listResult
		ok(t, &l, args("list")...)
		require.Len(t, l.Workflows, 11)
		for i := 1; i < len(l.Workflows); i++ {
			require.Greater(t, l.Workflows[i-1].ID, l.Workflows[i].ID, "newest first")
		}
		// Keyset pages of 3: forward with --before, and back with --after.
		var p1, p2, back listResult
		ok(t, &p1, args("list", "--limit", "3")...)
		require.Len(t, p1.Workflows, 3)
		require.Equal(t, l.Workflows[0].ID, p1.Workflows[0].ID)
		require.Equal(t, p1.Workflows[2].ID, p1.NextBefore)
		ok(t, &p2, args("list", "--limit", "3", "--before", fmt.Sprint(p1.NextBefore))...)
		require.Equal(t, l.Workflows[3].ID, p2.Workflows[0].ID)
		require.Equal(t, p2.Workflows[0].ID, p2.PrevAfter)
		ok(t, &back, args("list", "--limit", "3", "--after", fmt.Sprint(p2.PrevAfter))...)
		require.Equal(t, p1.Workflows, back.Workflows)

		ok(t, &l, args("list", "--state", "stalled,failed")...)
		require.ElementsMatch(t, []int64{sd.stalled, sd.failed}, ids(l.Workflows))
		ok(t, &l, args("list", "--state", "completed", "--state", "failed")...)
		require.ElementsMatch(t, []int64{sd.completed, sd.failed, sd.children[0], sd.children[1]}, ids(l.Workflows))
		ok(t, &l, args("list", "--name", "child", "--key-prefix", "k-parent/items/")...)
		require.Len(t, l.Workflows, 5)
		ok(t, &l, args("list", "--name", "child", "--key-prefix", "k-parent/items/3")...)
		require.Len(t, l.Workflows, 1)
		ok(t, &l, args("list", "--parent", fmt.Sprint(sd.branchStep), "--state", "idle")...)
		require.Len(t, l.Workflows, 3)
		ok(t, &l, args("list", "--due")...)
		require.ElementsMatch(t, append([]int64{sd.crashed}, sd.children[2:]...), ids(l.Workflows),
			"the three idle children and the crashed run are due; the signal waiter and the merge are not")

		// Table output names the next page's cursor.
		r := cf(t, args("list", "--limit", "2")...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "next page: --before")

		fails(t, 2, `unknown state "sleeping"`, args("list", "--state", "sleeping")...)
		fails(t, 2, "--key-prefix needs --name", args("list", "--key-prefix", "x")...)
		fails(t, 2, "--limit 0", args("list", "--limit", "0")...)
		fails(t, 2, "flag provided but not defined: -bogus", args("list", "--bogus")...)
	})

	t.Run("show", func(t *testing.T) {
		var sh showResult
		ok(t, &sh, args("show", fmt.Sprint(sd.completed))...)
		require.Equal(t, "done", sh.Name)
		require.Equal(t, storage.StateCompleted, sh.State)
		require.Equal(t, "0af7651916cd43dd8448eb211c80319c", sh.TraceID)
		require.Equal(t, map[string]string{"team": "ops"}, sh.Tags)
		require.JSONEq(t, `{"stage":"paid"}`, string(sh.Values))
		require.Len(t, sh.Steps, 1)
		require.Nil(t, sh.Input, "payloads hidden by default")
		require.Nil(t, sh.Output)
		require.Nil(t, sh.Steps[0].Result)
		ok(t, &sh, args("show", "done/k-done", "--payloads")...)
		require.JSONEq(t, `{"n":1}`, string(sh.Input))
		require.JSONEq(t, `"secret-output"`, string(sh.Output))
		require.JSONEq(t, `{"paid":true}`, string(sh.Steps[0].Result))
		r := cf(t, args("show", fmt.Sprint(sd.completed))...)
		require.Equal(t, 0, r.code)
		require.NotContains(t, r.stdout, "secret-output")
		require.Contains(t, r.stdout, "charge")

		ok(t, &sh, args("show", fmt.Sprint(sd.stalled))...)
		require.Equal(t, storage.StateStalled, sh.State)
		require.Equal(t, storage.StepFailed, sh.Steps[0].State)
		require.Len(t, sh.Errors, 1)
		require.Equal(t, "timeout", sh.Errors[0].Message)
		ok(t, &sh, args("show", fmt.Sprint(sd.waiting))...)
		require.Equal(t, "signal", sh.Wait)
		require.Equal(t, "approved", sh.WaitStep)

		fails(t, 1, "workflow 999999: ", args("show", "999999")...)
		fails(t, 1, `workflow "nope" key "x"`, args("show", "nope/x")...)
		fails(t, 2, "neither a workflow ID nor name/key", args("show", "nonsense")...)
		fails(t, 2, "want one workflow", args("show")...)
	})

	t.Run("children", func(t *testing.T) {
		var ch childrenResult
		ok(t, &ch, args("children", fmt.Sprint(sd.parent))...)
		require.Len(t, ch.Branches, 1)
		br := ch.Branches[0]
		require.Equal(t, "items", br.Branch)
		require.Equal(t, sd.branchStep, br.StepID)
		require.Equal(t, 3, br.Counts[storage.StateIdle])
		require.Equal(t, 2, br.Counts[storage.StateCompleted])
		require.Equal(t, 3, br.Unfinished)
		require.Greater(t, br.RatePerSecond, 0.0)
		require.NotNil(t, br.ETASeconds)
		require.Len(t, br.Children, 5)
		ok(t, &ch, args("children", "parent/k-parent", "--branch", "items", "--state", "completed")...)
		require.Len(t, ch.Branches[0].Children, 2)
		r := cf(t, args("children", fmt.Sprint(sd.parent))...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "drain rate")
		ok(t, &ch, args("children", fmt.Sprint(sd.parent), "--cap", "2", "--limit", "0")...)
		require.Equal(t, []storage.State{storage.StateIdle, storage.StateCompleted}, ch.Branches[0].Capped)
		require.Equal(t, 2, ch.Branches[0].Counts[storage.StateIdle])
		require.Empty(t, ch.Branches[0].Children)
		r = cf(t, args("children", fmt.Sprint(sd.parent), "--cap", "2")...)
		require.Contains(t, r.stdout, "idle       ≥2")
		require.Contains(t, r.stdout, "≥2 unfinished")
		fails(t, 2, "--cap 0", args("children", fmt.Sprint(sd.parent), "--cap", "0")...)
		fails(t, 1, `has no branch "other"`, args("children", fmt.Sprint(sd.parent), "--branch", "other")...)
		fails(t, 1, "workflow 999999", args("children", "999999")...)
	})

	t.Run("stats", func(t *testing.T) {
		var st statsResult
		ok(t, &st, args("stats")...)
		require.Equal(t, 11, st.Counted)
		require.False(t, st.Sampled)
		require.Contains(t, st.Counts, stateCountRow{Name: "crashed", State: storage.StateRunning, Count: 1})
		require.Equal(t, []int64{sd.crashed}, ids(st.ExpiredLeases))
		require.Contains(t, st.Counts, stateCountRow{Name: "child", State: storage.StateIdle, Count: 3})
		require.Contains(t, st.Counts, stateCountRow{Name: "stuck", State: storage.StateStalled, Count: 1})
		require.Equal(t, 4, st.Due)
		require.False(t, st.DueProbed)
		require.NotNil(t, st.OldestDueAgeSeconds)
		require.Greater(t, *st.OldestDueAgeSeconds, float64(time.Hour/time.Second))
		ok(t, &st, args("stats", "--sample", "2")...)
		require.True(t, st.Sampled)
		require.Equal(t, 2, st.Counted)
		r := cf(t, args("stats", "--sample", "2")...)
		require.Contains(t, r.stdout, "sampled: counts of the newest 2 workflows only")
		fails(t, 2, "--sample 0", args("stats", "--sample", "0")...)
	})

	t.Run("retry", func(t *testing.T) {
		var a actionResult
		r := cf(t, args("retry", fmt.Sprint(sd.completed), "-o", "json")...)
		require.Equal(t, 1, r.code, "a completed workflow cannot be retried")
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &a))
		require.Equal(t, "error", a.Results[0].Result)
		require.Contains(t, a.Results[0].Error, "only stalled or failed")
		require.Equal(t, storage.StateCompleted, state(t, b, sd.completed))

		fails(t, 2, "needs --yes", args("retry", "--state", "stalled")...)
		ok(t, &a, args("retry", "--state", "stalled,failed", "--dry-run")...)
		require.Equal(t, 2, len(a.Results))
		require.Equal(t, "would retry", a.Results[0].Result)
		require.Equal(t, storage.StateStalled, state(t, b, sd.stalled), "dry run wrote nothing")

		ok(t, &a, args("retry", fmt.Sprint(sd.stalled))...)
		require.Equal(t, 1, a.Done)
		require.Equal(t, storage.StateIdle, state(t, b, sd.stalled))
		var sh showResult
		ok(t, &sh, args("show", fmt.Sprint(sd.stalled))...)
		require.True(t, hasStep(sh.Steps, "$retry$1"), "Engine.Retry wrote its retry record: %+v", sh.Steps)

		ok(t, &a, args("retry", "--state", "failed", "--yes")...)
		require.Equal(t, 1, a.Done)
		require.Equal(t, storage.StateIdle, state(t, b, sd.failed))
	})

	t.Run("resume", func(t *testing.T) {
		var a actionResult
		ok(t, &a, args("resume", fmt.Sprint(sd.waiting))...)
		require.Equal(t, "done", a.Results[0].Result)
		var sh showResult
		ok(t, &sh, args("show", fmt.Sprint(sd.waiting))...)
		require.NotNil(t, sh.RunAt, "woken: runnable now")
		r := cf(t, args("resume", fmt.Sprint(sd.completed), "999999")...)
		require.Equal(t, 1, r.code)
		require.Contains(t, r.stdout, "only idle or running")
		require.Contains(t, r.stdout, "workflow 999999")
		require.Contains(t, r.stderr, "2 of 2")
	})

	t.Run("cancel", func(t *testing.T) {
		var a actionResult
		ok(t, &a, args("cancel", "--name", "child", "--state", "idle", "--dry-run")...)
		require.Len(t, a.Results, 3)
		require.True(t, a.DryRun)
		withStore(t, b, func(s storage.Storage) {
			page, err := s.ListWorkflows(context.Background(), storage.ListFilter{States: []storage.State{storage.StateCancelled}})
			require.NoError(t, err)
			require.Empty(t, page, "dry run wrote nothing")
		})
		ok(t, &a, args("cancel", fmt.Sprint(sd.completed), "--dry-run")...)
		require.Equal(t, "would fail", a.Results[0].Result)
		require.Equal(t, "it is completed", a.Results[0].Error)
		ok(t, &a, args("cancel", "--name", "child", "--state", "idle", "--yes", "--max", "1")...)
		require.Equal(t, 1, a.Done)
		require.True(t, a.Capped)
		require.Equal(t, storage.StateCancelled, state(t, b, a.Results[0].ID))
		ok(t, &a, args("cancel", "--children", fmt.Sprint(sd.parent))...)
		require.Equal(t, 1, a.Done)
		require.Equal(t, storage.StateCancelled, state(t, b, sd.parent))
		for _, id := range sd.children[2:] {
			require.Equal(t, storage.StateCancelled, state(t, b, id), "child %d", id)
		}
		require.Equal(t, storage.StateCompleted, state(t, b, sd.children[0]))
		fails(t, 2, "not both", args("cancel", "5", "--name", "child")...)
		fails(t, 2, "give workflow IDs, or filters", args("cancel")...)
	})

	t.Run("dashboard", func(t *testing.T) {
		before := state(t, b, sd.stalled)
		fails(t, 2, "needs exactly one of", args("dashboard")...)
		fails(t, 2, "needs a password", args("dashboard", "--user", "ops")...)
		cmd := exec.Command(binary, args("dashboard", "--listen", "127.0.0.1:0", "--user", "ops", "--read-only")...)
		cmd.Env = append(os.Environ(), envDashboardPassword+"=s3cret")
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		// The server's stderr goes to a file, read only once it has stopped writing.
		errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
		require.NoError(t, err)
		defer errFile.Close()
		cmd.Stderr = errFile
		logged := func() string { b, _ := os.ReadFile(errFile.Name()); return string(b) }
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err, "the dashboard printed no address; stderr: %s", logged())
		url := strings.TrimSpace(strings.TrimPrefix(line, "dashboard: serving "))
		require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"), line)
		get := func(path string, auth bool) (int, string) {
			t.Helper()
			req, err := http.NewRequest("GET", url+path, nil)
			require.NoError(t, err)
			if auth {
				req.SetBasicAuth("ops", "s3cret")
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			return resp.StatusCode, string(body)
		}
		code, _ := get("", false)
		require.Equal(t, http.StatusUnauthorized, code, "no credentials")
		code, body := get("", true)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, "Overview")
		code, body = get(fmt.Sprintf("workflows/%d", sd.stalled), true)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, "stuck")
		require.NotContains(t, body, `action="`, "read-only: no action forms")
		req, err := http.NewRequest("POST", url+"actions", strings.NewReader(fmt.Sprintf("action=retry&id=%d", sd.stalled)))
		require.NoError(t, err)
		req.SetBasicAuth("ops", "s3cret")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "read-only refuses actions")
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		err = cmd.Wait()
		require.NoError(t, err, "an interrupted dashboard exits 0; stderr: %s", logged())
		require.Equal(t, before, state(t, b, sd.stalled), "read-only: nothing was written")
	})

	t.Run("cleanup", func(t *testing.T) {
		var c cleanupResult
		// Finished two hours ago: the parent and its cancelled children finished now.
		ok(t, &c, args("cleanup", "--before", "1h", "--dry-run")...)
		require.ElementsMatch(t, []int64{sd.completed, sd.children[0], sd.children[1]}, ids(c.Candidates))
		require.Equal(t, 0, c.Deleted)
		require.Equal(t, storage.StateCompleted, state(t, b, sd.completed), "dry run deleted nothing")
		ok(t, &c, args("cleanup", "--before", "1h", "--limit", "1")...)
		require.Equal(t, 1, c.Deleted)
		ok(t, &c, args("cleanup", "--before", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--state", "completed")...)
		require.Equal(t, 2, c.Deleted)
		ok(t, &c, args("cleanup", "--before", "1h", "--dry-run")...)
		require.Empty(t, c.Candidates)
		fails(t, 2, "only final states", args("cleanup", "--before", "1h", "--state", "idle")...)
		fails(t, 2, "--before is required", args("cleanup")...)
		fails(t, 2, `--before "yesterday"`, args("cleanup", "--before", "yesterday")...)
	})

	t.Run("flows", func(t *testing.T) {
		ctx := context.Background()
		flows := func() []storage.FlowState {
			t.Helper()
			var out []storage.FlowState
			withStore(t, b, func(s storage.Storage) {
				fc, ok := s.(storage.FlowController)
				require.True(t, ok, "%T does not implement storage.FlowController", s)
				var err error
				out, err = fc.ListFlows(ctx, time.Now())
				require.NoError(t, err)
			})
			return out
		}
		var l flowsResult
		ok(t, &l, args("flows")...)
		require.Empty(t, l.Flows)
		r := cf(t, args("flows")...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "(no flows")

		// A dry run prints the flow and stores nothing.
		var set flowSetResult
		ok(t, &set, args("flows", "set", "mail", "--concurrency", "2", "--dry-run")...)
		require.True(t, set.DryRun)
		require.True(t, set.Created)
		require.Equal(t, flowRow{Key: "mail", Concurrency: 2}, set.Flow)
		require.Empty(t, flows(), "dry run wrote nothing")
		r = cf(t, args("flows", "set", "mail", "--concurrency", "2", "--dry-run")...)
		require.Contains(t, r.stdout, "nothing was written")

		ok(t, &set, args("flows", "set", "mail", "--concurrency", "2", "--priority", "5")...)
		require.True(t, set.Created)
		require.Nil(t, set.Previous)
		require.Equal(t, 5, set.Flow.Priority)
		require.NotNil(t, set.Flow.UpdatedAt)
		// Only the flags given change: priority and concurrency stay.
		ok(t, &set, args("flows", "set", "mail", "--rate", "10", "--per", "1s")...)
		require.False(t, set.Created)
		require.Equal(t, 2, set.Previous.Concurrency)
		got := flows()
		require.Len(t, got, 1)
		require.Equal(t, storage.Flow{Key: "mail", Priority: 5, Concurrency: 2, Rate: 10, Per: time.Second, UpdatedAt: got[0].UpdatedAt}, got[0].Flow)
		require.Equal(t, 10, set.Flow.Rate)
		require.Equal(t, "1s", set.Flow.Per)
		require.Equal(t, 1.0, set.Flow.PerSeconds)
		// A stored window lets a new rate go without --per.
		ok(t, &set, args("flows", "set", "mail", "--rate", "20")...)
		require.Equal(t, "1s", set.Flow.Per)
		r = cf(t, args("flows", "set", "mail", "--priority", "6")...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "flow mail updated: priority 6, concurrency 2, rate 20 per 1s (was priority 5")

		// Three due workflows of the flow: a claim takes two (concurrency 2), one is held back.
		var mail []int64
		withStore(t, b, func(s storage.Storage) {
			now := time.Now()
			for i := range 3 {
				w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "mailer", Key: fmt.Sprintf("m-%d", i), Flow: "mail", Now: now})
				require.NoError(t, err)
				mail = append(mail, w.ID)
			}
			ws, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 3, Names: []string{"mailer"}, TTL: time.Hour, Now: now})
			require.NoError(t, err)
			require.Len(t, ws, 2, "concurrency 2")
		})
		// bbolt is one process's file: opening it makes the runs a closed process left behind
		// runnable at once (recoverLeases), so through the tool they count as due.
		running, due := 2, 1
		if mig.Backend == "bolt" {
			running, due = 0, 3
		}
		ok(t, &l, args("flows")...)
		require.Len(t, l.Flows, 1)
		require.Equal(t, running, l.Flows[0].Running)
		require.Equal(t, due, l.Flows[0].Due)
		require.False(t, l.Flows[0].Capped)
		r = cf(t, args("flows")...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Regexp(t, `KEY +PRIORITY +CONCURRENCY +RATE +RUNNING +DUE +UPDATED\n`, r.stdout)
		require.Regexp(t, fmt.Sprintf(`mail +6 +2 +20/1s +%d +%d +20`, running, due), r.stdout)
		var sh showResult
		ok(t, &sh, args("show", fmt.Sprint(mail[0]))...)
		require.Equal(t, "mail", sh.Flow)

		// Bad input is refused before anything is written, as a usage error.
		before := flows()
		fails(t, 2, "priority 5000 must be -1000..1000", args("flows", "set", "mail", "--priority", "5000")...)
		fails(t, 2, "concurrency -1 must be 0", args("flows", "set", "mail", "--concurrency", "-1")...)
		fails(t, 2, "rate 20000 must be 0", args("flows", "set", "mail", "--rate", "20000")...)
		fails(t, 2, "--rate 5 needs --per", args("flows", "set", "other", "--rate", "5")...)
		fails(t, 2, "the period must be 1ms..", args("flows", "set", "mail", "--per", "10000h")...)
		fails(t, 2, "a period (1s) without a rate", args("flows", "set", "mail", "--rate", "0", "--per", "1s")...)
		fails(t, 2, "a period (1m0s) without a rate", args("flows", "set", "other", "--per", "1m")...)
		fails(t, 2, `"x" is not an integer`, args("flows", "set", "mail", "--priority", "x")...)
		fails(t, 2, `"soon" is not a duration`, args("flows", "set", "mail", "--rate", "1", "--per", "soon")...)
		fails(t, 2, "give at least one of", args("flows", "set", "mail")...)
		fails(t, 2, "want one flow key", args("flows", "set")...)
		fails(t, 2, `flow key: storage: invalid input: workflow name "bad$key" contains '$'`, args("flows", "set", "bad$key", "--priority", "1")...)
		fails(t, 2, "apply to 'flows set'", args("flows", "--priority", "1")...)
		fails(t, 2, `unknown flows command "frob"`, args("flows", "frob")...)
		require.Equal(t, before, flows(), "refused input wrote nothing")

		// --rate 0 turns the rate off, its window with it.
		ok(t, &set, args("flows", "set", "mail", "--rate", "0")...)
		require.Equal(t, 0, set.Flow.Rate)
		require.Empty(t, set.Flow.Per)
		require.Equal(t, 2, set.Flow.Concurrency)

		var del flowDeleteResult
		ok(t, &del, args("flows", "delete", "mail")...)
		require.Equal(t, flowDeleteResult{Key: "mail", Deleted: true}, del)
		require.Empty(t, flows())
		fails(t, 1, "no flow is stored under that key", args("flows", "delete", "mail")...)
		fails(t, 2, "want one flow key", args("flows", "delete")...)
	})
}

// ids returns the rows' IDs.
func ids(rows []workflowRow) []int64 {
	out := []int64{}
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

// hasStep reports whether a step of that name is among steps.
func hasStep(steps []stepRow, name string) bool {
	for _, s := range steps {
		if s.Name == name {
			return true
		}
	}
	return false
}
