package postgres

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// The multi-process test of issue 3: the test binary runs itself again as worker processes
// that share one schema, the parent starts the workflows, and every step execution is logged
// in the same database, so the parent can compare executions with recorded attempts.

// workerSchemaEnv tells a re-executed test binary to be a worker on that schema.
const workerSchemaEnv = "CHRONOFORGE_PG_TEST_WORKER_SCHEMA"

// threeSteps is the workflow of the test. Each step logs its execution in exec_log (a real
// side effect, outside the store's tables) before it returns; the function logs that it
// reached its end in completions.
func threeSteps(pool *pgxpool.Pool, schema string) *sdk.Workflow[int, int] {
	return sdk.New("mp.three", func(c *sdk.Context, in int) (int, error) {
		total := in
		for _, name := range []string{"one", "two", "three"} {
			v, err := sdk.Step(c, name, func(ctx context.Context) (int, error) {
				_, err := pool.Exec(ctx, `INSERT INTO "`+schema+`".exec_log (workflow_key, step, pid) VALUES ($1, $2, $3)`, c.Key(), name, os.Getpid())
				return 1, err
			})
			if err != nil {
				return 0, err
			}
			total += v
		}
		// A probe outside any step: it runs on every run that reaches the end, so it counts how
		// often the workflow completed.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := pool.Exec(ctx, `INSERT INTO "`+schema+`".completions (workflow_key) VALUES ($1)`, c.Key())
		return total, err
	})
}

// TestMultiProcessWorker is the worker process of TestMultiProcess; run directly it skips.
// It works until its standard input closes, then shuts down gracefully.
func TestMultiProcessWorker(t *testing.T) {
	schema := os.Getenv(workerSchemaEnv)
	if schema == "" {
		t.Skip("a worker process of TestMultiProcess; it runs only when that test starts it")
	}
	pool := ownPool(t, 6, nil)
	s := storeIn(t, pool, schema)
	require.NoError(t, s.Migrate(t.Context()), "a worker migrates too, concurrently with the others")
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(threeSteps(pool, schema)))
	require.NoError(t, err)
	w, err := dispatch.New(eng, dispatch.Concurrency(8), dispatch.PollInterval(20*time.Millisecond, 500*time.Millisecond))
	require.NoError(t, err)

	ctx, stop := context.WithCancel(context.Background())
	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes it to stop us
		stop()
	}()
	require.NoError(t, w.Run(ctx))
	<-stdinDone
	st := w.Stats()
	fmt.Printf("worker %d: claimed %d, finished %d, run errors %d\n", os.Getpid(), st.Claimed, st.Finished, st.RunErrors)
}

// TestMultiProcess runs 500 three-step workflows on two worker processes: each completes
// once, and each step's recorded attempts equal its logged executions.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	t.Parallel()
	const workflows, processes = 500, 2
	pool := ownPool(t, 8, nil)
	s := newStore(t, pool)
	schema := s.Schema()
	for _, ddl := range []string{
		`CREATE TABLE "` + schema + `".exec_log (workflow_key text NOT NULL, step text NOT NULL, pid int NOT NULL)`,
		`CREATE TABLE "` + schema + `".completions (workflow_key text NOT NULL)`,
	} {
		_, err := pool.Exec(t.Context(), ddl)
		require.NoError(t, err)
	}

	// Start the workers: this test binary again, running only TestMultiProcessWorker.
	var outputs []*bytes.Buffer
	for i := range processes {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMultiProcessWorker$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), workerSchemaEnv+"="+schema, "CHRONOFORGE_POSTGRES_DSN="+testDSN(t))
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		out := &bytes.Buffer{}
		outputs = append(outputs, out)
		cmd.Stdout, cmd.Stderr = out, out
		require.NoError(t, cmd.Start(), "start worker %d", i)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = stdin.Close() // asks the worker to shut down
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("worker %d: %v\n%s", i, err, out)
				}
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
				t.Errorf("worker %d did not stop within 60s; killed\n%s", i, out)
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("worker %d output:\n%s", i, lastLines(out.String(), 20))
			}
		})
	}
	eventually(t, 60*time.Second, func() bool { return len(listenerPIDs(t, s)) == processes }, "%d worker processes listen", processes)

	// The parent only starts workflows and waits for them: it runs no worker.
	def := threeSteps(pool, schema)
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(def))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	handles := make([]*sdk.Handle[int], workflows)
	for i := range handles {
		handles[i], err = def.Start(ctx, eng, fmt.Sprintf("wf-%03d", i), i)
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, workflows)
	for i, h := range handles {
		wg.Go(func() {
			out, err := h.Result(ctx)
			if err == nil && out != i+3 {
				err = fmt.Errorf("result %d, want %d", out, i+3)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "workflow %d", i)
	}

	// Executions per (workflow, step) and per process, from the side effect's log.
	execs := map[string]int{}
	pids := map[int]int{}
	rows, err := pool.Query(ctx, `SELECT workflow_key, step, pid FROM "`+schema+`".exec_log`)
	require.NoError(t, err)
	for rows.Next() {
		var key, step string
		var pid int
		require.NoError(t, rows.Scan(&key, &step, &pid))
		execs[key+"/"+step]++
		pids[pid]++
	}
	require.NoError(t, rows.Err())
	completions := map[string]int{}
	rows, err = pool.Query(ctx, `SELECT workflow_key FROM "`+schema+`".completions`)
	require.NoError(t, err)
	for rows.Next() {
		var key string
		require.NoError(t, rows.Scan(&key))
		completions[key]++
	}
	require.NoError(t, rows.Err())

	for _, h := range handles {
		w, steps, err := s.Load(ctx, h.ID())
		require.NoError(t, err)
		require.Equal(t, storage.StateCompleted, w.State, "workflow %s", h.Key())
		require.Equal(t, 1, completions[h.Key()], "workflow %s completed once", h.Key())
		require.Len(t, steps, 3, "workflow %s", h.Key())
		for _, st := range steps {
			n := execs[h.Key()+"/"+st.Name]
			require.Equal(t, storage.StepCompleted, st.State)
			require.NotZero(t, n, "workflow %s step %s never logged an execution", h.Key(), st.Name)
			require.Equal(t, n, st.Attempts, "workflow %s step %s: recorded attempts and logged executions", h.Key(), st.Name)
		}
	}
	require.Len(t, pids, processes, "every worker process ran steps: %v", pids)
	total := 0
	for _, n := range pids {
		total += n
	}
	t.Logf("%d workflows, %d step executions, by process: %v", workflows, total, pids)
}

func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewBufferString(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}
