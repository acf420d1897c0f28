package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
)

// The workloads: seqWorkflow runs three steps one after another; fanWorkflow opens a branch,
// spawns one itemWorkflow child per item of a keyset source, merges the branch and sums the
// children's results. Every step records its execution in the process's execution log before
// it returns, so the checker can count how often each step ran.

const (
	seqName  = "chaos.seq"
	fanName  = "chaos.fan"
	itemName = "chaos.item"
)

// seqSteps and itemSteps are the steps each workflow runs, in order.
var (
	seqSteps  = []string{"s0", "s1", "s2"}
	itemSteps = []string{"s0", "s1"}
)

// stepOut is a step's result: its value, the ID of the execution that computed it, and a
// padding that makes every step grow the store (the disk-full scenario's workers pad).
type stepOut struct {
	V    int    `json:"v"`
	Exec string `json:"e"`
	Pad  string `json:"p,omitempty"`
}

// runOut is the result of a sequential workflow or a child: the sum of its steps' values and
// the executions they came from, in step order.
type runOut struct {
	Sum   int      `json:"sum"`
	Execs []string `json:"execs"`
}

// seqResult is what seqWorkflow returns for input i: step k returns i+k.
func seqResult(i int) int { return 3*i + 3 }

// itemResult is what itemWorkflow returns for input i: step k returns i+k.
func itemResult(i int) int { return 2*i + 1 }

// fanResult is what fanWorkflow returns for n items: the sum of its children's results.
func fanResult(n int) int { return n*(n-1) + n }

// itemKey is the keyset key of item i: fixed width, so byte order is numeric order.
func itemKey(i int) string { return fmt.Sprintf("%07d", i) }

// execLog appends one line "key step exec" per step execution to a file of its own process.
// A line is one write(2) on an O_APPEND file: it reaches the kernel before the step returns,
// so a kill -9 of the process after that cannot lose it, and no database fault can fail it.
type execLog struct {
	mu sync.Mutex
	f  *os.File
	n  int
}

// openExecLog opens the execution log of this process in dir.
func openExecLog(dir string) (*execLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("execs-%d.log", os.Getpid())), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("execution log: %w", err)
	}
	return &execLog{f: f}, nil
}

// record logs one execution of step of the workflow with key and returns its ID, unique
// across processes: "pid.n".
func (l *execLog) record(key, step string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	id := fmt.Sprintf("%d.%d", os.Getpid(), l.n)
	_, err := l.f.WriteString(key + " " + step + " " + id + "\n")
	return id, err
}

// stepDelay widens the window in which a fault finds a step in flight.
const stepDelay = 20 * time.Millisecond

// workflows returns the three workflow definitions, recording executions in log; every
// step's result carries pad bytes of padding.
func workflows(log *execLog, pad int) (seq, item *sdk.Workflow[int, runOut], fan *sdk.Workflow[int, int]) {
	steps := func(c *sdk.Context, in int, names []string) (runOut, error) {
		var out runOut
		for k, name := range names {
			v, err := sdk.Step(c, name, func(ctx context.Context) (stepOut, error) {
				id, err := log.record(c.Key(), name)
				if err != nil {
					return stepOut{}, err
				}
				select {
				case <-time.After(stepDelay):
				case <-ctx.Done():
					return stepOut{}, ctx.Err()
				}
				return stepOut{V: in + k, Exec: id, Pad: strings.Repeat("p", pad)}, nil
			})
			if err != nil {
				return runOut{}, err
			}
			out.Sum += v.V
			out.Execs = append(out.Execs, v.Exec)
		}
		return out, nil
	}
	seq = sdk.New(seqName, func(c *sdk.Context, in int) (runOut, error) { return steps(c, in, seqSteps) })
	item = sdk.New(itemName, func(c *sdk.Context, in int) (runOut, error) { return steps(c, in, itemSteps) })
	fan = sdk.New(fanName, func(c *sdk.Context, n int) (int, error) {
		source := sdk.KeysetSource(func(_ context.Context, after string, limit int) ([]int, error) {
			next := 0
			if after != "" {
				i, err := strconv.Atoi(after)
				if err != nil {
					return nil, sdk.Permanent(fmt.Errorf("keyset cursor %q: %w", after, err))
				}
				next = i + 1
			}
			var page []int
			for i := next; i < n && len(page) < limit; i++ {
				page = append(page, i)
			}
			return page, nil
		}, itemKey)
		if err := sdk.Branch(c, "b", func(b *sdk.BranchScope) error {
			return sdk.SpawnEach(b, "items", source, func(i int) (sdk.Child, error) { return sdk.NewChild(item, i), nil })
		}); err != nil {
			return 0, err
		}
		if err := sdk.Merge(c, "b"); err != nil {
			return 0, err
		}
		total := 0
		for res, err := range sdk.BranchResults[runOut](c, "b", 1000) {
			if err != nil {
				return 0, err
			}
			total += res.Output.Sum
		}
		return total, nil
	})
	return seq, item, fan
}
