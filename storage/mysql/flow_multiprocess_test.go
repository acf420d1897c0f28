package mysql

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/internal/dbtest"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// The multi-process flow test: the test binary runs itself again as claimer processes over
// one database, each with its own pool, flow cache and storagetest.RunFlowClaimers; each
// writes the interval of every run it held to stdout, and this process checks the overlap of
// all of them against the flows' concurrency limits.
const (
	// flowWorkerSchemaEnv names the database a flow claimer process works on; set only in
	// those processes.
	flowWorkerSchemaEnv = "CHRONOFORGE_MYSQL_TEST_FLOW_SCHEMA"

	mpFlowProcesses = 3
	mpFlowClaimers  = 16
	// mpFlowRuns is how many runs each process completes: the workflows outnumber the runs of
	// all processes (and what their claimers take past the count), so no process runs short.
	mpFlowRuns = 200
)

// mpFlows are the names the processes claim, each with its flow key and the number of
// workflows created; "mpf.g1" and "mpf.g2" share a key, and "mpf.free" has none.
var mpFlows = []struct {
	name, key string
	n         int
}{
	{"mpf.narrow", "mpf.narrow", 300},
	{"mpf.g1", "mpf.group", 200},
	{"mpf.g2", "mpf.group", 200},
	{"mpf.open", "mpf.open", 300},
	{"mpf.free", "", 300},
}

// mpFlowLimits are the concurrency limits stored; "mpf.open" has a priority only.
var mpFlowLimits = map[string]int{"mpf.narrow": 3, "mpf.group": 2}

// TestFlowMultiProcess checks that the concurrency limits of flows hold across processes:
// 3 processes of 16 claimers each claim and finish workflows of the names above at once, and
// at no instant do the runs of a flow key they held together exceed its limit; every
// workflow ran at most once, and every completed one exactly once.
func TestFlowMultiProcess(t *testing.T) {
	if os.Getenv(flowWorkerSchemaEnv) != "" {
		t.Skip("this process is a claimer of TestFlowMultiProcess")
	}
	if testing.Short() {
		t.Skip("starts claimer processes")
	}
	t.Parallel()
	cfg := serverConfig(t)
	db := openDB(t, cfg, 4)
	s := newStore(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for key, limit := range mpFlowLimits {
		putFlow(t, s, storage.Flow{Key: key, Concurrency: limit})
	}
	putFlow(t, s, storage.Flow{Key: "mpf.open", Priority: 1})
	for _, f := range mpFlows {
		createFlows(t, s, f.name, f.key, f.n, at(0))
	}

	var (
		mu   sync.Mutex
		runs []storagetest.FlowRun
		wg   sync.WaitGroup
	)
	for p := range mpFlowProcesses {
		wg.Go(func() {
			name := fmt.Sprint("flow-claimer-", p)
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFlowClaimerProcess$", "-test.count=1", "-test.v", "-test.timeout=5m")
			cmd.Env = append(os.Environ(), dbtest.MySQL.Env+"="+cfg.FormatDSN(), flowWorkerSchemaEnv+"="+s.Schema(), workerNameEnv+"="+name)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err != nil || t.Failed() {
				t.Errorf("claimer process %s: %v\n%s%s", name, err, stdout.String(), stderr.String())
				return
			}
			got, err := storagetest.ParseFlowRuns(stdout.Bytes())
			if err != nil {
				t.Errorf("claimer process %s: %v", name, err)
				return
			}
			mu.Lock()
			runs = append(runs, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	perWorkflow := map[int64]int{}
	byKey := map[string][2][]time.Time{}
	for _, r := range runs {
		perWorkflow[r.ID]++
		iv := byKey[r.Flow]
		byKey[r.Flow] = [2][]time.Time{append(iv[0], r.Start), append(iv[1], r.End)}
	}
	for id, n := range perWorkflow {
		require.Equal(t, 1, n, "workflow %d ran %d times", id, n)
	}
	require.GreaterOrEqual(t, len(runs), mpFlowProcesses*mpFlowRuns, "every process completed its runs")
	completed, err := s.ListWorkflows(ctx, storage.ListFilter{States: []storage.State{storage.StateCompleted}, Limit: storage.MaxListLimit})
	require.NoError(t, err)
	require.Len(t, completed, len(runs), "every completed workflow was reported run once")
	for _, w := range completed {
		require.Equal(t, 1, perWorkflow[w.ID], "completed workflow %d", w.ID)
	}
	for key, iv := range byKey {
		overlap := storagetest.MaxOverlap(iv[0], iv[1])
		limit, limited := mpFlowLimits[key]
		t.Logf("flow %q: %d runs over %d processes, at most %d at once (limit %d)", key, len(iv[0]), mpFlowProcesses, overlap, limit)
		if limited {
			require.LessOrEqual(t, overlap, limit, "flow %q: the concurrency limit held across processes", key)
		}
	}
	for key := range mpFlowLimits {
		require.NotEmpty(t, byKey[key][0], "flow %q ran", key)
	}
}

// TestFlowClaimerProcess is a claimer process of TestFlowMultiProcess; run directly it skips.
// It runs storagetest.RunFlowClaimers until it completed mpFlowRuns runs, writing each run
// with storagetest.FlowRunWriter.
func TestFlowClaimerProcess(t *testing.T) {
	schema := os.Getenv(flowWorkerSchemaEnv)
	if schema == "" {
		t.Skip("run by TestFlowMultiProcess as a claimer process")
	}
	db := openDB(t, serverConfig(t), 8)
	s, err := New(db, WithSchema(schema))
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()), "every process may migrate at start")
	names := make([]string, len(mpFlows))
	for i, f := range mpFlows {
		names[i] = f.name
	}
	onRun, flush := storagetest.FlowRunWriter(os.Stdout)
	stats := storagetest.RunFlowClaimers(context.Background(), t, s, storagetest.FlowClaimersConfig{
		Claimers: mpFlowClaimers,
		Names:    names,
		Until:    mpFlowRuns,
		Owner:    os.Getenv(workerNameEnv),
		Hold:     10 * time.Millisecond,
		OnRun:    onRun,
	})
	require.NoError(t, flush())
	t.Logf("claimer %s: runs %v, at most at once in this process %v", os.Getenv(workerNameEnv), stats.Runs, stats.MaxRunning)
}
