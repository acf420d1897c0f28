package chaos

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/mysql"
	"github.com/chronoforge/chronoforge/storage/postgres"
)

// A cluster is the worker processes of one scenario over one store.

// proc is one worker process.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *output
	done  chan struct{}
	err   error
}

// output is what a worker process printed, safe to read while it prints.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	news chan struct{} // signalled at every write
}

func newOutput() *output { return &output{news: make(chan struct{}, 1)} }

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case o.news <- struct{}{}:
	default:
	}
	return o.buf.Write(b)
}

// String returns everything printed so far.
func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// lines returns the complete lines printed so far.
func (o *output) lines() []string {
	lines := strings.Split(o.String(), "\n")
	return lines[:len(lines)-1] // a line not ended yet is not complete
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// cluster runs the worker processes of a scenario.
type cluster struct {
	t       *testing.T
	mu      sync.Mutex
	procs   []*proc
	cfgs    []workerConfig
	outputs []string // the outputs of processes that were replaced
	started int      // processes started so far
}

// startCluster starts one worker process per configuration.
func startCluster(t *testing.T, cfgs []workerConfig) *cluster {
	c := &cluster{t: t, cfgs: cfgs, procs: make([]*proc, len(cfgs))}
	for i := range cfgs {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.procs {
			c.kill(i)
		}
		if t.Failed() || os.Getenv("CHRONOFORGE_CHAOS_VERBOSE") != "" {
			for _, out := range c.allOutputs() {
				t.Logf("worker output:\n%s", lastLines(out, 15))
			}
		}
	})
	return c
}

// start starts worker i, replacing an ended one.
func (c *cluster) start(i int) {
	c.t.Helper()
	c.mu.Lock()
	c.started++
	c.cfgs[i].Owner = fmt.Sprintf("chaos-w%d-%d", i, c.started)
	cfg := c.cfgs[i]
	c.mu.Unlock()
	raw, err := json.Marshal(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChaosWorker$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), workerEnv+"="+string(raw))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdin: stdin, out: newOutput(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start worker %d: %v", i, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	c.mu.Lock()
	if old := c.procs[i]; old != nil {
		c.outputs = append(c.outputs, old.out.String())
	}
	c.procs[i] = p
	c.mu.Unlock()
}

// kill sends SIGKILL to worker i and waits for it to end.
func (c *cluster) kill(i int) {
	p := c.proc(i)
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// signal sends sig to worker i if it is alive, and reports whether it was.
func (c *cluster) signal(i int, sig syscall.Signal) bool {
	p := c.proc(i)
	if p == nil || p.exited() {
		return false
	}
	return p.cmd.Process.Signal(sig) == nil
}

// owner returns the lease owner of worker i's current process.
func (c *cluster) owner(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfgs[i].Owner
}

func (c *cluster) proc(i int) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i]
}

// allExited reports whether every worker has ended.
func (c *cluster) allExited() bool {
	for i := range c.procs {
		if !c.proc(i).exited() {
			return false
		}
	}
	return true
}

// wait waits until every worker has ended on its own (each exits once nothing is left to
// run), failing t after timeout, then fails t if one of them failed.
func (c *cluster) wait(timeout time.Duration) {
	c.t.Helper()
	deadline := time.After(timeout)
	for i := range c.procs {
		p := c.proc(i)
		select {
		case <-p.done:
		case <-deadline:
			c.t.Fatalf("worker %d did not finish within %s", i, timeout)
		}
		if p.err != nil {
			c.t.Errorf("worker %d: %v\n%s", i, p.err, lastLines(p.out.String(), 30))
		}
	}
}

// allOutputs returns the output of every process the cluster ran.
func (c *cluster) allOutputs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	outs := append([]string(nil), c.outputs...)
	for _, p := range c.procs {
		outs = append(outs, p.out.String())
	}
	return outs
}

// stat sums a count every worker process printed when it stopped ("injected", "run_errors",
// "heartbeats_lost"...).
func (c *cluster) stat(name string) int {
	total := 0
	for _, out := range c.allOutputs() {
		for line := range strings.Lines(out) {
			if i := strings.Index(line, " "+name+"="); i >= 0 && strings.HasPrefix(line, "chaos-worker ") {
				var n int
				fmt.Sscan(line[i+len(name)+2:], &n)
				total += n
			}
		}
	}
	return total
}

// send writes a command line to worker i.
func (c *cluster) send(i int, cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.proc(i).stdin, cmd+"\n"); err != nil {
		c.t.Fatalf("worker %d, command %q: %v", i, cmd, err)
	}
}

// waitLine waits up to d for a line that match accepts among the lines worker i printed from
// line from on, and returns it with its index; it fails t if none comes, or if the worker
// exits first.
func (c *cluster) waitLine(i, from int, d time.Duration, what string, match func(string) bool) (string, int) {
	c.t.Helper()
	p := c.proc(i)
	deadline := time.After(d)
	for {
		exited := p.exited() // then its output is complete
		lines := p.out.lines()
		for k := from; k < len(lines); k++ {
			if match(lines[k]) {
				return lines[k], k
			}
		}
		from = max(from, len(lines))
		if exited {
			c.t.Fatalf("worker %d exited (%v) before printing %s\n%s", i, p.err, what, lastLines(p.out.String(), 30))
		}
		select {
		case <-p.out.news:
		case <-p.done:
		case <-deadline:
			c.t.Fatalf("worker %d did not print %s within %v\n%s", i, what, d, lastLines(p.out.String(), 30))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// A target is a store for a scenario: a fresh schema (PostgreSQL), database (MySQL) or file
// (bbolt), its workers' configuration and the parent's own connection to it.
type target struct {
	cfg workerConfig
}

// open opens the parent's own connection to the store, closed by t.Cleanup.
func (tg target) open(t *testing.T) storage.Storage {
	t.Helper()
	s, closeStore, err := openStore(t.Context(), tg.cfg)
	if err != nil {
		t.Fatalf("open the %s store: %v", tg.cfg.Backend, err)
	}
	t.Cleanup(closeStore)
	return s
}

// requireDB skips t when the DSN of a database is not set, unless CHRONOFORGE_REQUIRE_DB is.
func requireDB(t *testing.T, env string) string {
	t.Helper()
	dsn := os.Getenv(env)
	if dsn == "" {
		if os.Getenv("CHRONOFORGE_REQUIRE_DB") != "" {
			t.Fatalf("%s is not set and CHRONOFORGE_REQUIRE_DB is", env)
		}
		t.Skipf("%s is not set", env)
	}
	return dsn
}

// newTarget makes a fresh store of backend at dsn (ignored for bbolt), migrated.
func newTarget(t *testing.T, backend, dsn string) target {
	t.Helper()
	cfg := workerConfig{Backend: backend, DSN: dsn, LogDir: t.TempDir()}
	switch backend {
	case "bolt":
		cfg.Path = t.TempDir() + "/chaos.db"
	default:
		cfg.Schema = fmt.Sprintf("chaos_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	}
	tg := target{cfg: cfg}
	s, closeStore, err := openStore(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open the %s store: %v", backend, err)
	}
	defer closeStore()
	if m, ok := s.(interface{ Migrate(context.Context) error }); ok {
		if err := m.Migrate(t.Context()); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	switch s := s.(type) {
	case *postgres.Store:
		t.Cleanup(func() { dropSchema(t, "postgres", dsn, s.Schema()) })
	case *mysql.Store:
		t.Cleanup(func() { dropSchema(t, "mysql", dsn, cfg.Schema) })
	}
	return tg
}

// dropSchema removes a scenario's schema or database, unless the test failed and
// CHRONOFORGE_CHAOS_KEEP is set (to look at it).
func dropSchema(t *testing.T, backend, dsn, schema string) {
	if t.Failed() && os.Getenv("CHRONOFORGE_CHAOS_KEEP") != "" {
		t.Logf("kept %s schema %s", backend, schema)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch backend {
	case "postgres":
		pool, err := pgxpool.New(ctx, dsn)
		if err == nil {
			_, err = pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`)
			pool.Close()
		}
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	case "mysql":
		db, err := sql.Open("mysql", dsn)
		if err == nil {
			_, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+schema+"`")
			db.Close()
		}
		if err != nil {
			t.Logf("drop database %s: %v", schema, err)
		}
	}
}

// dsnAt returns dsn with its host and port replaced by addr ("127.0.0.1:port"), so that a
// worker dials a proxy in front of the database.
func dsnAt(backend, dsn, addr string) (string, error) {
	switch backend {
	case "postgres":
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Host = addr
		return u.String(), nil
	case "mysql":
		cfg, err := driver.ParseDSN(dsn)
		if err != nil {
			return "", err
		}
		cfg.Net, cfg.Addr = "tcp", addr
		return cfg.FormatDSN(), nil
	}
	return "", fmt.Errorf("no DSN for backend %q", backend)
}

// hostPort returns the address a DSN dials.
func hostPort(backend, dsn string) (string, error) {
	switch backend {
	case "postgres":
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		return u.Host, nil
	case "mysql":
		cfg, err := driver.ParseDSN(dsn)
		if err != nil {
			return "", err
		}
		return cfg.Addr, nil
	}
	return "", fmt.Errorf("no address for backend %q", backend)
}
