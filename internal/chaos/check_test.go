package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// The invariant checker: run after every scenario, with every worker stopped.

// workload is what a scenario started: seq sequential workflows, and one fan-out of fan
// items when fan is positive.
type workload struct {
	seq, fan int
}

const fanKey = "fan-0"

// seqKey is the key of sequential workflow i.
func seqKey(i int) string { return fmt.Sprintf("seq-%05d", i) }

// childPrefix is the key prefix of the fan-out's children: "<parent>$<branch>$<spawn>$$".
const childPrefix = fanKey + "$b$items$$"

// total is how many workflows the workload must complete.
func (w workload) total() int {
	if w.fan > 0 {
		return w.seq + 1 + w.fan
	}
	return w.seq
}

// listAll lists every workflow f matches, a page of MaxListLimit at a time.
func listAll(ctx context.Context, s storage.Storage, f storage.ListFilter) ([]storage.Workflow, error) {
	var all []storage.Workflow
	f.Limit = storage.MaxListLimit
	for {
		page, err := s.ListWorkflows(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("list %s %v after %d: %w", f.Name, f.States, f.AfterID, err)
		}
		all = append(all, page...)
		if len(page) < f.Limit {
			return all, nil
		}
		f.AfterID = page[len(page)-1].ID
	}
}

// checked is what the checker found.
type checked struct {
	executions, excess, lost, duplicated int
}

// check verifies the invariants of w on s, with the executions logged in logDir: every
// workflow completed exactly once with the right result, exactly one child per item, the
// merged total right, every completed step executed at least once (and counts the
// executions beyond one), and no workflow left running without a live lease. It reports each
// violation on t (the first few of each kind) and counts them.
func check(t *testing.T, s storage.Storage, logDir string, w workload) checked {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var c checked
	shown := map[string]int{}
	fail := func(kind string, format string, args ...any) {
		if shown[kind]++; shown[kind] <= 5 {
			t.Errorf(kind+": "+format, args...)
		}
	}
	want := map[string][]string{} // key -> steps it must have run

	// Executions, from every worker's log.
	execs, ids, err := readExecs(logDir)
	if err != nil {
		t.Fatal(err)
	}

	// completed reports whether wf completed; else it is lost.
	completed := func(wf storage.Workflow) bool {
		if wf.State != storage.StateCompleted {
			c.lost++
			fail("lost", "workflow %s is %s (last error %q), not completed", wf.Key, wf.State, wf.LastError)
			return false
		}
		return true
	}
	// runResult checks a sequential workflow or a child: the right sum, computed from the
	// executions its committed steps hold, each of them logged.
	runResult := func(wf storage.Workflow, steps []string, sum int) {
		if !completed(wf) {
			return
		}
		var out runOut
		if err := json.Unmarshal(wf.Output, &out); err != nil || out.Sum != sum || len(out.Execs) != len(steps) {
			c.lost++
			fail("lost", "workflow %s completed with %s, want the sum %d of %d steps", wf.Key, wf.Output, sum, len(steps))
			return
		}
		_, stored, err := s.Load(ctx, wf.ID)
		if err != nil {
			t.Fatalf("load %s: %v", wf.Key, err)
		}
		held := map[string]string{}
		for _, st := range stored {
			var so stepOut
			if st.State == storage.StepCompleted && json.Unmarshal(st.Result, &so) == nil {
				held[st.Name] = so.Exec
			}
		}
		for k, step := range steps {
			switch {
			case held[step] == "":
				c.lost++
				fail("lost", "workflow %s completed without a committed step %s", wf.Key, step)
			case held[step] != out.Execs[k]:
				c.duplicated++
				fail("duplicated", "workflow %s: its result holds execution %s of step %s, its committed step execution %s: two executions took effect", wf.Key, out.Execs[k], step, held[step])
			case !ids[wf.Key+" "+step+" "+held[step]]:
				c.lost++
				fail("lost", "workflow %s: step %s holds execution %s, which no worker logged", wf.Key, step, held[step])
			}
		}
	}

	if w.seq > 0 {
		ws, err := listAll(ctx, s, storage.ListFilter{Name: seqName})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, wf := range ws {
			seen[wf.Key]++
			if seen[wf.Key] > 1 {
				c.duplicated++
				fail("duplicated", "workflow %s stored twice", wf.Key)
				continue
			}
			i, err := strconv.Atoi(strings.TrimPrefix(wf.Key, "seq-"))
			if err != nil || i < 0 || i >= w.seq {
				c.duplicated++
				fail("duplicated", "workflow %s was never started", wf.Key)
				continue
			}
			runResult(wf, seqSteps, seqResult(i))
			want[wf.Key] = seqSteps
		}
		for i := range w.seq {
			if seen[seqKey(i)] == 0 {
				c.lost++
				fail("lost", "workflow %s is missing", seqKey(i))
			}
		}
	}

	if w.fan > 0 {
		parents, err := listAll(ctx, s, storage.ListFilter{Name: fanName})
		if err != nil {
			t.Fatal(err)
		}
		if len(parents) != 1 || parents[0].Key != fanKey {
			c.lost++
			fail("lost", "want the one fan-out %s, found %d fan-outs", fanKey, len(parents))
		} else if wf := parents[0]; completed(wf) {
			var sum int
			if err := json.Unmarshal(wf.Output, &sum); err != nil || sum != fanResult(w.fan) {
				c.lost++
				fail("lost", "fan-out %s merged %s, want %d", wf.Key, wf.Output, fanResult(w.fan))
			}
		}
		kids, err := listAll(ctx, s, storage.ListFilter{Name: itemName})
		if err != nil {
			t.Fatal(err)
		}
		per := make([]int, w.fan)
		for _, wf := range kids {
			item, ok := strings.CutPrefix(wf.Key, childPrefix)
			i, err := strconv.Atoi(item)
			if !ok || err != nil || i < 0 || i >= w.fan || itemKey(i) != item {
				c.duplicated++
				fail("duplicated", "child %s is of no item", wf.Key)
				continue
			}
			if per[i]++; per[i] > 1 {
				c.duplicated++
				fail("duplicated", "item %d has %d children", i, per[i])
				continue
			}
			runResult(wf, itemSteps, itemResult(i))
			want[wf.Key] = itemSteps
		}
		for i, n := range per {
			if n == 0 {
				c.lost++
				fail("lost", "item %d has no child", i)
			}
		}
	}

	for key, steps := range want {
		for _, step := range steps {
			n := execs[key+" "+step]
			c.executions += n
			if n == 0 {
				c.lost++
				fail("lost", "step %s of %s is completed but never executed", step, key)
				continue
			}
			c.excess += n - 1
			if n > 1 && os.Getenv("CHRONOFORGE_CHAOS_VERBOSE") != "" {
				t.Logf("step %s of %s ran %d times", step, key, n)
			}
		}
	}
	for ks, n := range execs {
		key, _, _ := strings.Cut(ks, " ")
		if _, ok := want[key]; !ok {
			c.duplicated += n
			fail("duplicated", "%d executions of %q, of no workflow of the workload", n, ks)
		}
	}

	// No workflow left running without a live lease (by this machine's clock, which is the
	// store's: every server here runs on it).
	running, err := listAll(ctx, s, storage.ListFilter{States: []storage.State{storage.StateRunning}})
	if err != nil {
		t.Fatal(err)
	}
	for _, wf := range running {
		if !wf.LeaseUntil.After(time.Now()) {
			fail("stranded", "workflow %s is running with a lease that expired at %s", wf.Key, wf.LeaseUntil)
		}
	}
	return c
}

// readExecs reads the lines "key step exec" of every execution log in dir: how often each
// "key step" ran, and the set of lines.
func readExecs(dir string) (execs map[string]int, ids map[string]bool, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "execs-*.log"))
	if err != nil {
		return nil, nil, err
	}
	execs, ids = map[string]int{}, map[string]bool{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				f.Close()
				return nil, nil, fmt.Errorf("%s: malformed line %q", name, line)
			}
			execs[line[:i]]++
			ids[line] = true
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return execs, ids, nil
}
