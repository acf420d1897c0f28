package mysql

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/internal/dbtest"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// The multi-process test: the test binary runs itself again as worker processes, each with
// its own pool and dispatch.Worker over the same database, while this process starts the
// workflows and waits for their results.
const (
	// workerSchemaEnv names the database a worker process works on; set only in workers.
	workerSchemaEnv = "CHRONOFORGE_MYSQL_TEST_WORKER_SCHEMA"
	// workerNameEnv is the worker's name, recorded with every step it executes.
	workerNameEnv = "CHRONOFORGE_MYSQL_TEST_WORKER_NAME"

	mpWorkflows = 500
	mpWorkers   = 2
)

var mpSteps = []string{"one", "two", "three"}

// threeSteps is the workflow both sides register: three steps, each of which records its
// execution through logExec (a row in the exec_log table; nil in the starting process, which
// runs nothing). The result is 3*in+3.
func threeSteps(logExec func(ctx context.Context, key, step string) error) *sdk.Workflow[int, int] {
	return sdk.New("mp.three", func(c *sdk.Context, in int) (int, error) {
		total := 0
		for i, name := range mpSteps {
			n, err := sdk.Step(c, name, func(ctx context.Context) (int, error) {
				if logExec == nil {
					return 0, fmt.Errorf("step %q executed in the starting process", name)
				}
				return in + i + 1, logExec(ctx, c.Key(), name)
			})
			if err != nil {
				return 0, err
			}
			total += n
		}
		return total, nil
	})
}

func execLog(schema string) string { return "`" + schema + "`.exec_log" }

// TestMultiProcess runs 500 three-step workflows on worker processes that share one database
// and checks that each workflow completed once, every step ran once, and each step record's
// Attempts equals the executions its worker logged.
func TestMultiProcess(t *testing.T) {
	if os.Getenv(workerSchemaEnv) != "" {
		t.Skip("this process is a worker of TestMultiProcess")
	}
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	t.Parallel()
	cfg := serverConfig(t)
	db := openDB(t, cfg, 8)
	s := newStore(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, err := db.ExecContext(ctx, "CREATE TABLE "+execLog(s.Schema())+` (
		id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
		wf_key VARBINARY(512) NOT NULL,
		step VARBINARY(128) NOT NULL,
		worker VARBINARY(64) NOT NULL,
		KEY (wf_key, step)) ENGINE = InnoDB`)
	require.NoError(t, err)

	for i := range mpWorkers {
		startWorkerProcess(t, cfg, s.Schema(), fmt.Sprint("worker-", i))
	}

	wf := threeSteps(nil)
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(wf))
	require.NoError(t, err)
	handles := make([]*sdk.Handle[int], mpWorkflows)
	for i := range handles {
		handles[i], err = wf.Start(ctx, eng, fmt.Sprintf("mp-%03d", i), i)
		require.NoError(t, err)
	}
	for i, h := range handles {
		out, err := h.Result(ctx)
		require.NoError(t, err, "workflow %s", h.Key())
		require.Equal(t, 3*i+6, out, "workflow %s", h.Key())
	}

	// Executions per (workflow, step), and which workers ran them.
	executed := map[[2]string]int{}
	workers := map[string]int{}
	rows, err := db.QueryContext(ctx, "SELECT wf_key, step, worker FROM "+execLog(s.Schema()))
	require.NoError(t, err)
	total := 0
	for rows.Next() {
		var key, step, worker string
		require.NoError(t, rows.Scan(&key, &step, &worker))
		executed[[2]string{key, step}]++
		workers[worker]++
		total++
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	t.Logf("%d step executions by worker: %v", total, workers)

	for _, h := range handles {
		w, steps, err := s.Load(ctx, h.ID())
		require.NoError(t, err)
		require.Equal(t, storage.StateCompleted, w.State, "workflow %s", h.Key())
		require.False(t, w.FinishedAt.IsZero(), "workflow %s", h.Key())
		require.Len(t, steps, len(mpSteps), "workflow %s", h.Key())
		for _, st := range steps {
			n := executed[[2]string{h.Key(), st.Name}]
			require.Equal(t, storage.StepCompleted, st.State, "workflow %s step %s", h.Key(), st.Name)
			require.Equal(t, n, st.Attempts, "workflow %s step %s: recorded attempts vs executions", h.Key(), st.Name)
			require.Equal(t, 1, n, "workflow %s step %s ran more than once", h.Key(), st.Name)
		}
	}
	require.Equal(t, mpWorkflows*len(mpSteps), total)
	require.Len(t, workers, mpWorkers, "every worker process ran steps")
}

// startWorkerProcess runs this test binary as a worker on schema until the test ends: then
// its stdin is closed, which makes it shut down gracefully.
func startWorkerProcess(t *testing.T, cfg *gomysql.Config, schema, name string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerProcess$", "-test.count=1", "-test.v", "-test.timeout=10m")
	cmd.Env = append(os.Environ(),
		dbtest.MySQL.Env+"="+cfg.FormatDSN(),
		workerSchemaEnv+"="+schema,
		workerNameEnv+"="+name,
	)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker process %s: %v\n%s", name, err, out.String())
			}
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("worker process %s did not stop within a minute\n%s", name, out.String())
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("output of worker process %s:\n%s", name, out.String())
		}
	})
}

// TestWorkerProcess is the worker side of TestMultiProcess; run directly it skips. It runs a
// dispatch.Worker until its stdin is closed.
func TestWorkerProcess(t *testing.T) {
	schema := os.Getenv(workerSchemaEnv)
	if schema == "" {
		t.Skip("run by TestMultiProcess as a worker process")
	}
	name := os.Getenv(workerNameEnv)
	db := openDB(t, serverConfig(t), 8)
	s, err := New(db, WithSchema(schema))
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()), "every process may migrate at start")

	logExec := func(ctx context.Context, key, step string) error {
		_, err := db.ExecContext(ctx, "INSERT INTO "+execLog(schema)+" (wf_key, step, worker) VALUES (?, ?, ?)", key, step, name)
		return err
	}
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(threeSteps(logExec)))
	require.NoError(t, err)
	w, err := dispatch.New(eng, dispatch.Owner(name+"-"+strconv.Itoa(os.Getpid())), dispatch.Concurrency(8),
		dispatch.PollInterval(5*time.Millisecond, 100*time.Millisecond))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	stdinClosed := make(chan struct{})
	go func() {
		defer close(stdinClosed)
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	require.NoError(t, w.Run(ctx))
	<-stdinClosed
	st := w.Stats()
	t.Logf("worker %s stopped: %+v", name, st)
}

// syncBuffer is a bytes.Buffer safe for the two writers of a child's stdout and stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
