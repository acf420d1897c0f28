package postgres

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storagetest"
)

// The multi-process test of flow control: the test binary runs itself again as claimer
// processes sharing one schema, each running storagetest.RunFlowClaimers with 16 claimers, and
// writes every run it made to its standard output; the parent merges the runs of all
// processes and checks the flow's concurrency limit across them.

const (
	// flowSchemaEnv tells a re-executed test binary to claim on that schema, and flowUntilEnv
	// how many runs it completes before it stops.
	flowSchemaEnv = "CHRONOFORGE_PG_TEST_FLOW_SCHEMA"
	flowUntilEnv  = "CHRONOFORGE_PG_TEST_FLOW_UNTIL"
)

// The flow of the test: one key governing two names, with a concurrency limit.
const (
	flowMPKey   = "mp.flow"
	flowMPLimit = 4
)

var flowMPNames = []string{"mp.flow.a", "mp.flow.b"}

// TestFlowMultiProcessWorker is a claimer process of TestFlowMultiProcess; run directly it
// skips.
func TestFlowMultiProcessWorker(t *testing.T) {
	schema := os.Getenv(flowSchemaEnv)
	if schema == "" {
		t.Skip("a claimer process of TestFlowMultiProcess; it runs only when that test starts it")
	}
	until, err := strconv.Atoi(os.Getenv(flowUntilEnv))
	require.NoError(t, err)
	s := storeIn(t, ownPool(t, 16, nil), schema)
	onRun, flush := storagetest.FlowRunWriter(os.Stdout)
	stats := storagetest.RunFlowClaimers(t.Context(), t, s, storagetest.FlowClaimersConfig{
		Claimers: 16, Names: flowMPNames, Until: until, Owner: fmt.Sprintf("pid%d", os.Getpid()), Hold: 5 * time.Millisecond,
		OnRun: onRun,
	})
	require.NoError(t, flush())
	fmt.Printf("claimer process %d: runs %v, at most %v at once in this process\n", os.Getpid(), stats.Runs, stats.MaxRunning)
}

// TestFlowMultiProcess: three processes of 16 claimers each claim the workflows of two names
// that share a flow with a concurrency limit of 4. Over the runs of all processes (from the
// return of a claim to its FinishRun, by the one machine's clock) no more than 4 were held at
// once, per name and for the two names together, and no workflow ran twice. Each process
// stops after its share; the parent then runs what is left, so every workflow ran exactly
// once.
func TestFlowMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts claimer processes")
	}
	t.Parallel()
	const processes, claimers, share = 3, 16, 100
	// Each process stops once its share is done, but a claimer that checked before may
	// still finish a claim of up to 3: the extra workflows let every process reach its share.
	const total = processes * (share + 3*claimers)
	s := newStore(t, nil)
	ctx := t.Context()
	_, _, err := s.PutFlow(ctx, storage.Flow{Key: flowMPKey, Concurrency: flowMPLimit}, false, base(0))
	require.NoError(t, err)
	for i, name := range flowMPNames {
		n := total / len(flowMPNames)
		if i == 0 {
			n += total % len(flowMPNames)
		}
		var ws []storage.NewWorkflow
		for k := range n {
			// Due long before the claimers' now (storagetest's clock, in 2030).
			ws = append(ws, storage.NewWorkflow{Name: name, Key: fmt.Sprint(k), Flow: flowMPKey,
				RunAt: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), Now: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)})
		}
		for len(ws) > 0 {
			batch := ws[:min(len(ws), storage.MaxCreateBatch)]
			ws = ws[len(batch):]
			_, _, err := s.CreateWorkflows(ctx, batch)
			require.NoError(t, err)
		}
	}

	type proc struct {
		cmd *exec.Cmd
		out *bytes.Buffer
	}
	var procs []proc
	for i := range processes {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFlowMultiProcessWorker$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), flowSchemaEnv+"="+s.Schema(), flowUntilEnv+"="+strconv.Itoa(share),
			"CHRONOFORGE_POSTGRES_DSN="+testDSN(t))
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		require.NoError(t, cmd.Start(), "start claimer process %d", i)
		procs = append(procs, proc{cmd, out})
	}
	for i, p := range procs {
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			require.NoError(t, err, "claimer process %d:\n%s", i, lastLines(p.out.String(), 40))
		case <-time.After(3 * time.Minute):
			_ = p.cmd.Process.Kill()
			<-done
			t.Fatalf("claimer process %d did not finish within 3 minutes\n%s", i, lastLines(p.out.String(), 40))
		}
	}

	// The runs of every process.
	type span struct{ starts, ends []time.Time }
	byName := map[string]*span{}
	all := &span{}
	runs := map[int64]int{}
	for i, p := range procs {
		got, err := storagetest.ParseFlowRuns(p.out.Bytes())
		require.NoError(t, err, "claimer process %d", i)
		for _, r := range got {
			runs[r.ID]++
			sp := byName[r.Name]
			if sp == nil {
				sp = &span{}
				byName[r.Name] = sp
			}
			for _, s := range []*span{sp, all} {
				s.starts = append(s.starts, r.Start)
				s.ends = append(s.ends, r.End)
			}
		}
		n := len(got)
		require.GreaterOrEqual(t, n, share, "claimer process %d ran its share:\n%s", i, lastLines(p.out.String(), 20))
		t.Logf("claimer process %d: %d runs; %s", i, n, strings.TrimSpace(lastMatching(p.out.String(), "claimer process")))
	}
	for name, sp := range byName {
		most := storagetest.MaxOverlap(sp.starts, sp.ends)
		t.Logf("%s: %d runs over %d processes, at most %d at once (limit %d for the key)", name, len(sp.starts), processes, most, flowMPLimit)
		require.LessOrEqual(t, most, flowMPLimit, "name %s", name)
	}
	most := storagetest.MaxOverlap(all.starts, all.ends)
	t.Logf("flow %s: %d runs, at most %d at once over both names (limit %d)", flowMPKey, len(all.starts), most, flowMPLimit)
	require.LessOrEqual(t, most, flowMPLimit, "the key's limit over both names")
	require.Greater(t, most, 1, "runs overlapped: the limit was used, not a claim at a time")

	// The rest, run here without the limit; then every workflow has run exactly once.
	_, err = s.DeleteFlow(ctx, flowMPKey)
	require.NoError(t, err)
	for {
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "parent", Limit: storage.MaxClaim, Names: flowMPNames, TTL: time.Minute, Now: time.Now()})
		require.NoError(t, err)
		if len(got) == 0 {
			break
		}
		for _, w := range got {
			runs[w.ID]++
			require.NoError(t, s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: time.Now()}, State: storage.StateCompleted, Output: []byte(`1`)}))
		}
	}
	require.Len(t, runs, total, "every workflow ran")
	for id, n := range runs {
		require.Equal(t, 1, n, "workflow %d ran %d times", id, n)
	}
	for _, name := range flowMPNames {
		left, err := s.ListWorkflows(ctx, storage.ListFilter{Name: name, States: []storage.State{storage.StateIdle, storage.StateRunning}})
		require.NoError(t, err)
		require.Empty(t, left, "no workflow of %s left unfinished", name)
	}
}

// lastMatching returns the last line of s that contains sub.
func lastMatching(s, sub string) string {
	out := ""
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			out = line
		}
	}
	return out
}
