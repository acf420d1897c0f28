package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// The bbolt scenarios: a worker process (this test binary again, running only
// TestBoltChaosWorker) holds the store's file, as bbolt allows one process at a time, and
// logs every step execution to a file of its own outside the store. The parent creates the
// workflows before any worker runs, injects the fault, and reads the store only while no
// worker holds it.

// Environment of a worker process.
const (
	// boltWorkerEnv names the bbolt file a re-executed test binary works on as a worker.
	boltWorkerEnv = "CHRONOFORGE_CHAOS_BOLT_WORKER"
	// boltExecLogEnv names the file the worker's steps append their executions to.
	boltExecLogEnv = "CHRONOFORGE_CHAOS_BOLT_EXECLOG"
	// boltFinishEnv, when set, makes the worker exit on its own once every workflow in the
	// store is final.
	boltFinishEnv = "CHRONOFORGE_CHAOS_BOLT_FINISH"
)

// Shape of the workload.
const (
	// boltSteps is the number of steps of each workflow.
	boltSteps = 4
	// boltConcurrency is the worker's concurrency: the most runs in flight at a fault.
	boltConcurrency = 8
	// boltPad is the size of the padding in every step result, so the file keeps growing.
	boltPad = 1024
	// boltName is the name of the workload's workflow.
	boltName = "chaos.bolt.steps"
	// boltReadyLine is what a worker prints once it holds the store.
	boltReadyLine = "chaos-bolt-worker: ready"
)

// boltStepResult is what a step of the workload returns: a number the workflow adds up and a
// padding that makes every step grow the file.
type boltStepResult struct {
	N   int    `json:"n"`
	Pad string `json:"pad"`
}

// boltKey is the key of workflow i.
func boltKey(i int) string { return fmt.Sprintf("wf-%05d", i) }

// boltWant is the output workflow i must complete with.
func boltWant(i int) int { return boltSteps*i + boltSteps*(boltSteps-1)/2 }

// boltWorkflow is the workload: boltSteps steps, each of which first appends "key step\n"
// to the executions log (one write with O_APPEND, so a kill never leaves half a line), then
// returns in+step with a padding. The workflow returns the sum.
func boltWorkflow(execLog string) *sdk.Workflow[int, int] {
	return sdk.New(boltName, func(c *sdk.Context, in int) (int, error) {
		sum := 0
		for s := range boltSteps {
			name := fmt.Sprint("s", s)
			v, err := sdk.Step(c, name, func(context.Context) (boltStepResult, error) {
				if err := boltAppendLine(execLog, c.Key()+" "+name+"\n"); err != nil {
					return boltStepResult{}, err
				}
				return boltStepResult{N: in + s, Pad: strings.Repeat("p", boltPad)}, nil
			})
			if err != nil {
				return 0, err
			}
			sum += v.N
		}
		return sum, nil
	})
}

// boltAppendLine appends line to the file at path in one write.
func boltAppendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TestBoltChaosWorker is the worker process of the bbolt scenarios; run directly it skips.
// It opens the store, prints boltReadyLine and runs a dispatch worker until its standard input
// closes, or, with boltFinishEnv, until every workflow is final.
func TestBoltChaosWorker(t *testing.T) {
	path := os.Getenv(boltWorkerEnv)
	if path == "" {
		t.Skip("a worker process of the bbolt chaos scenarios; it runs only when they start it")
	}
	s, err := bolt.Open(path, bolt.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	defer s.Close()
	// Debug, so that runs aborted by a failed write say so ("run aborted", logged at Debug).
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(boltWorkflow(os.Getenv(boltExecLogEnv))), sdk.WithLogger(logger))
	if err != nil {
		t.Fatalf("worker: engine: %v", err)
	}
	w, err := dispatch.New(eng, dispatch.Concurrency(boltConcurrency), dispatch.LeaseTTL(2*time.Second),
		dispatch.HeartbeatEvery(500*time.Millisecond), dispatch.PollInterval(5*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatalf("worker: dispatch: %v", err)
	}
	fmt.Println(boltReadyLine)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		// The parent's commands, one a line; the end of the input asks us to stop.
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			fmt.Println(boltWorkerCommand(path, sc.Text()))
		}
		stop()
	}()
	if os.Getenv(boltFinishEnv) != "" {
		go func() {
			boltWaitAllFinal(ctx, s)
			stop()
		}()
	}
	if err := w.Run(ctx); err != nil {
		t.Fatalf("worker: run: %v", err)
	}
	st := w.Stats()
	fmt.Printf("chaos-bolt-worker: stats claimed=%d finished=%d runerrors=%d claimerrors=%d heartbeatslost=%d\n",
		st.Claimed, st.Finished, st.RunErrors, st.ClaimErrors, st.HeartbeatsLost)
}

// boltWorkerCommand carries out a command line from the parent in a worker on the store at path
// and returns the line to answer with. diskfull_linux_test.go replaces it with one that knows
// the commands of the disk-full fallback.
var boltWorkerCommand = func(path, cmd string) string {
	return "chaos-bolt-worker: unknown command " + strconv.Quote(cmd)
}

// boltWaitAllFinal returns once no workflow in s is boltUnfinished, or when ctx ends.
func boltWaitAllFinal(ctx context.Context, s storage.Storage) {
	for ctx.Err() == nil {
		n, err := boltUnfinished(ctx, s)
		if err == nil && n == 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// boltUnfinished counts the workflows of s that are not final.
func boltUnfinished(ctx context.Context, s storage.Storage) (int, error) {
	n := 0
	for after := int64(0); ; {
		page, err := s.ListWorkflows(ctx, storage.ListFilter{States: []storage.State{storage.StateIdle, storage.StateRunning}, AfterID: after, Limit: storage.MaxListLimit})
		if err != nil {
			return n, err
		}
		n += len(page)
		if len(page) < storage.MaxListLimit {
			return n, nil
		}
		after = page[len(page)-1].ID
	}
}

// boltProc is a running worker process and what it printed.
type boltProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed when the process has exited
	err   error         // its exit status, set before done closes

	mu    sync.Mutex
	lines []string
	ready chan struct{} // closed at boltReadyLine
	news  chan struct{} // signalled at every line
}

// boltStartWorker starts this test binary as a worker on the store at path, with the extra
// environment env, and stops it (SIGKILL if it must) at the end of the test.
func boltStartWorker(t *testing.T, path, execLog string, env ...string) *boltProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltChaosWorker$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), boltWorkerEnv+"="+path, boltExecLogEnv+"="+execLog)
	cmd.Env = append(cmd.Env, env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("worker stdin: %v", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("worker stdout: %v", err)
	}
	cmd.Stderr = cmd.Stdout
	w := &boltProc{t: t, cmd: cmd, stdin: stdin, done: make(chan struct{}), ready: make(chan struct{}), news: make(chan struct{}, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	go w.read(out)
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill() // nothing if it has exited
		<-w.done
	})
	return w
}

// read collects the worker's output lines until it ends, then waits for the process.
func (w *boltProc) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		w.mu.Lock()
		w.lines = append(w.lines, line)
		if line == boltReadyLine {
			close(w.ready)
		}
		w.mu.Unlock()
		select {
		case w.news <- struct{}{}:
		default:
		}
	}
	_, _ = io.Copy(io.Discard, out)
	w.err = w.cmd.Wait()
	close(w.done)
}

// output returns what the worker printed so far.
func (w *boltProc) output() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.lines...)
}

// tail returns the worker's last n lines, for failure messages.
func (w *boltProc) tail(n int) string {
	lines := w.output()
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitReady waits until the worker holds the store; it fails the test if the worker exits
// first or takes longer than a minute.
func (w *boltProc) waitReady() {
	w.t.Helper()
	select {
	case <-w.ready:
	case <-w.done:
		w.t.Fatalf("worker exited before it was ready: %v\n%s", w.err, w.tail(30))
	case <-time.After(time.Minute):
		w.t.Fatalf("worker not ready within a minute\n%s", w.tail(30))
	}
}

// waitLine waits up to d for a line of the worker's output, from line from on, that match
// accepts and returns it; it fails the test if none comes.
func (w *boltProc) waitLine(from int, d time.Duration, what string, match func(string) bool) string {
	w.t.Helper()
	deadline := time.After(d)
	for seen := from; ; {
		lines := w.output()
		for _, l := range lines[seen:] {
			if match(l) {
				return l
			}
		}
		seen = len(lines)
		select {
		case <-w.news:
		case <-w.done:
			w.t.Fatalf("worker exited (%v) before printing %s\n%s", w.err, what, w.tail(30))
		case <-deadline:
			w.t.Fatalf("worker did not print %s within %v\n%s", what, d, w.tail(30))
		}
	}
}

// send writes a command line to the worker.
func (w *boltProc) send(cmd string) {
	w.t.Helper()
	if _, err := io.WriteString(w.stdin, cmd+"\n"); err != nil {
		w.t.Fatalf("worker command %q: %v", cmd, err)
	}
}

// kill sends SIGKILL to the worker and waits until it is gone.
func (w *boltProc) kill() {
	w.t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		w.t.Fatalf("kill worker: %v", err)
	}
	<-w.done
}

// wait waits up to d for the worker to exit on its own, which it must do with status 0.
func (w *boltProc) wait(d time.Duration) {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(d):
		w.t.Fatalf("worker did not finish within %v\n%s", d, w.tail(30))
	}
	if w.err != nil {
		w.t.Fatalf("worker: %v\n%s", w.err, w.tail(30))
	}
}

// stat returns the value of the worker's final statistic name (0 if it printed none).
func (w *boltProc) stat(name string) int {
	for _, l := range w.output() {
		rest, ok := strings.CutPrefix(l, "chaos-bolt-worker: stats ")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if v, ok := strings.CutPrefix(f, name+"="); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
	}
	return 0
}

// createBoltWorkflows creates workflows 0..n-1 in a new store at path and closes it.
func createBoltWorkflows(t *testing.T, path string, n int) {
	t.Helper()
	s, err := bolt.Open(path)
	if err != nil {
		t.Fatalf("create workflows: %v", err)
	}
	defer s.Close()
	def := boltWorkflow("")
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(def))
	if err != nil {
		t.Fatalf("create workflows: engine: %v", err)
	}
	starts := make([]sdk.Start[int], n)
	for i := range starts {
		starts[i] = sdk.Start[int]{Key: boltKey(i), Input: i}
	}
	if _, err := def.StartMany(t.Context(), eng, starts); err != nil {
		t.Fatalf("create workflows: %v", err)
	}
}

// checkBoltFile opens the file with bbolt itself, read only, and runs its consistency check,
// then opens it with storage/bolt; both must succeed. It returns the number of workflows the
// store still has to finish.
func checkBoltFile(t *testing.T, path string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("bbolt open %s: %v", path, err)
	}
	var problems []string
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("bbolt check %s: %v", path, err)
	}
	if len(problems) > 0 {
		t.Fatalf("bbolt check %s: the file is corrupt: %s", path, strings.Join(problems, "; "))
	}
	s, err := bolt.Open(path, bolt.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatalf("storage/bolt open after the fault: %v", err)
	}
	defer s.Close()
	n, err := boltUnfinished(t.Context(), s)
	if err != nil {
		t.Fatalf("count boltUnfinished workflows: %v", err)
	}
	return n
}

// boltTally is what the final check found.
type boltTally struct {
	workflows, executions, excess, lost, duplicated int
}

// checkBoltOutcome checks the store at path and the executions log once every workflow
// should have completed: workflows 0..n-1 completed once each with the right output, every
// step completed and executed at least once. It reports each problem with t.Errorf and
// counts it in the boltTally.
func checkBoltOutcome(t *testing.T, path, execLog string, n int) boltTally {
	t.Helper()
	execs := boltReadExecLog(t, execLog)
	s, err := bolt.Open(path, bolt.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatalf("open the store for the final check: %v", err)
	}
	defer s.Close()
	ctx := t.Context()
	var r boltTally
	for _, v := range execs {
		r.executions += v
		r.excess += max(v-1, 0)
	}
	for i := range n {
		key := boltKey(i)
		wf, err := s.FindWorkflow(ctx, boltName, key)
		if err != nil {
			t.Errorf("workflow %s: %v", key, err)
			r.lost++
			continue
		}
		_, steps, err := s.Load(ctx, wf.ID)
		if err != nil {
			t.Fatalf("load workflow %s: %v", key, err)
		}
		if msg := checkBoltWorkflow(wf, steps, i, execs); msg != "" {
			t.Errorf("workflow %s: %s", key, msg)
			r.lost++
		}
	}
	all := boltListAll(t, s)
	keys := map[string]int{}
	for _, wf := range all {
		keys[wf.Key]++
	}
	for k, c := range keys {
		if c > 1 {
			t.Errorf("key %s has %d workflows, want 1", k, c)
			r.duplicated += c - 1
		}
	}
	if len(all) != n {
		t.Errorf("the store holds %d workflows, want %d", len(all), n)
	}
	r.workflows = len(all)
	return r
}

// checkBoltWorkflow returns what is wrong with workflow i, or "".
func checkBoltWorkflow(wf storage.Workflow, steps []storage.Step, i int, execs map[string]int) string {
	if wf.State != storage.StateCompleted {
		return fmt.Sprintf("state %s, want completed (last error %q)", wf.State, wf.LastError)
	}
	if got, want := string(wf.Output), strconv.Itoa(boltWant(i)); got != want {
		return fmt.Sprintf("output %s, want %s", got, want)
	}
	if len(steps) != boltSteps {
		return fmt.Sprintf("%d steps recorded, want %d", len(steps), boltSteps)
	}
	for _, st := range steps {
		if st.State != storage.StepCompleted {
			return fmt.Sprintf("step %s is %s, want completed", st.Name, st.State)
		}
		if execs[wf.Key+" "+st.Name] == 0 {
			return fmt.Sprintf("step %s completed but never logged an execution", st.Name)
		}
	}
	return ""
}

// boltListAll returns every workflow of s.
func boltListAll(t *testing.T, s storage.Storage) []storage.Workflow {
	t.Helper()
	var all []storage.Workflow
	for after := int64(0); ; {
		page, err := s.ListWorkflows(t.Context(), storage.ListFilter{AfterID: after, Limit: storage.MaxListLimit})
		if err != nil {
			t.Fatalf("list workflows: %v", err)
		}
		all = append(all, page...)
		if len(page) < storage.MaxListLimit {
			return all
		}
		after = page[len(page)-1].ID
	}
}

// boltCountLines returns the number of lines of the file at path (0 if it does not exist).
func boltCountLines(path string) int {
	data, _ := os.ReadFile(path)
	return strings.Count(string(data), "\n")
}

// boltReadExecLog counts the executions per "key step" in the log at path.
func boltReadExecLog(t *testing.T, path string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read executions log: %v", err)
	}
	execs := map[string]int{}
	for line := range strings.Lines(string(data)) {
		if !strings.HasSuffix(line, "\n") {
			t.Fatalf("executions log ends in a partial line %q", line)
		}
		execs[strings.TrimSuffix(line, "\n")]++
	}
	return execs
}

// TestBoltKillDuringWrite kills a worker process with SIGKILL at random moments while it
// runs workflows, checks the file after every kill (bbolt's consistency check, then a
// storage/bolt open), restarts it, and finally lets it finish: every workflow completes once
// with the right result, and no step ran again but those in flight at a kill.
func TestBoltKillDuringWrite(t *testing.T) {
	kills, n := size(10, 100), size(300, 3000)
	dir := t.TempDir()
	path, execLog := filepath.Join(dir, "chaos.db"), filepath.Join(dir, "executions.log")
	createBoltWorkflows(t, path, n)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	began := time.Now()
	busy, left := 0, n // kills of a worker that was executing steps; workflows boltUnfinished
	for k := range kills {
		before := boltCountLines(execLog)
		w := boltStartWorker(t, path, execLog)
		w.waitReady()
		after := time.Duration(20+rng.IntN(381)) * time.Millisecond
		time.Sleep(after)
		w.kill()
		ran := boltCountLines(execLog) - before
		if ran > 0 {
			busy++
		}
		now := checkBoltFile(t, path)
		t.Logf("kill %d, %v after the worker opened the file: %d step executions in its life, %d workflows boltUnfinished", k+1, after, ran, now)
		// A completed workflow was acknowledged: no kill may undo it.
		if now > left {
			t.Fatalf("kill %d: %d workflows boltUnfinished, %d before it: a completed workflow was lost", k+1, now, left)
		}
		left = now
	}
	finishing := time.Now()
	w := boltStartWorker(t, path, execLog, boltFinishEnv+"=1")
	w.waitReady()
	w.wait(10 * time.Minute)
	t.Logf("the last worker finished %d workflows in %v", left, time.Since(finishing).Round(time.Millisecond))
	if left := checkBoltFile(t, path); left != 0 {
		t.Fatalf("%d workflows boltUnfinished after the last worker finished", left)
	}
	r := checkBoltOutcome(t, path, execLog, n)
	report(t, Result{
		Scenario: "kill-during-write", Backend: "bolt", Faults: kills, Workflows: r.workflows,
		Executions: r.executions, Excess: r.excess, Bound: kills * boltConcurrency,
		Lost: r.lost, Duplicated: r.duplicated, Elapsed: time.Since(began),
		Note: fmt.Sprintf("SIGKILL of the worker process 20-400 ms after it opened the file; bbolt Check clean, reopen fine and no completed workflow undone after every kill; %d of %d kills while steps executed", busy, kills),
	})
}
