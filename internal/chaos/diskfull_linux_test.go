package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The disk-full scenario needs a file system it may boltFill. As root it mounts a small tmpfs
// and fills it with a filler file; where mounting is not permitted (a loop-mounted ext4
// would need the same privilege) the worker lowers its own RLIMIT_FSIZE instead, so its
// writes past the file's size fail with EFBIG, and raises it again to free the space.

// boltDiskFullEnv set to "rlimit" forces the RLIMIT_FSIZE fallback even where mounting works.
const boltDiskFullEnv = "CHRONOFORGE_CHAOS_DISKFULL"

// boltTmpfsMiB is the size of the tmpfs the scenario fills, in MiB: room for the whole
// workload's file once the filler is gone (the short workload's file takes about 2 MiB, the
// full one's up to 8 MiB).
func boltTmpfsMiB() int { return size(8, 32) }

func init() { boltWorkerCommand = boltRlimitCommand }

// boltSavedFSize is the soft RLIMIT_FSIZE the worker had before "boltFill" lowered it.
var boltSavedFSize uint64

// boltRlimitCommand carries out the fallback's commands in the worker: "boltFill" lowers the soft
// RLIMIT_FSIZE to the store file's size (SIGXFSZ ignored, so a write beyond it fails with
// EFBIG rather than killing the process) and "free" restores it.
func boltRlimitCommand(path, cmd string) string {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		return "chaos-bolt-worker: getrlimit: " + err.Error()
	}
	switch cmd {
	case "boltFill":
		signal.Ignore(syscall.SIGXFSZ)
		fi, err := os.Stat(path)
		if err != nil {
			return "chaos-bolt-worker: boltFill: " + err.Error()
		}
		boltSavedFSize = lim.Cur
		lim.Cur = uint64(fi.Size())
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			return "chaos-bolt-worker: boltFill: setrlimit: " + err.Error()
		}
		return fmt.Sprintf("chaos-bolt-worker: filled at %d bytes", fi.Size())
	case "free":
		lim.Cur = boltSavedFSize
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			return "chaos-bolt-worker: free: setrlimit: " + err.Error()
		}
		return "chaos-bolt-worker: freed"
	}
	return "chaos-bolt-worker: unknown command " + strconv.Quote(cmd)
}

// boltMountTmpfs mounts a tmpfs of tmpfsSize on a new directory, unmounted at the end of the
// test, and returns the directory.
func boltMountTmpfs(t *testing.T) (string, error) {
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", boltTmpfsMiB())); err != nil {
		return "", fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v; detaching it", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir, nil
}

// boltFill writes the file at path until the file system is full, and requires that the write
// fails with ENOSPC.
func boltFill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatalf("filler: %v", err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		m, err := f.Write(chunk)
		n += int64(m)
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filler: after %d bytes: %v, want ENOSPC", n, err)
		}
		return n
	}
}

// boltIsFailure reports whether a line of a worker's output is a logged error or warning, or a
// run aborted (by a write that failed: the engine logs that at Debug).
func boltIsFailure(line string) bool {
	return strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") || boltIsAbort(line)
}

// boltIsAbort reports whether a line of a worker's output is a run aborted.
func boltIsAbort(line string) bool { return strings.Contains(line, `msg="run aborted"`) }

// boltFullFailures is how many failures the worker must log before the space comes back.
const boltFullFailures = 5

// boltIndexOf returns the index of line in lines, looking from from on (-1 if it is not there).
func boltIndexOf(lines []string, line string, from int) int {
	for i := from; i < len(lines); i++ {
		if lines[i] == line {
			return i
		}
	}
	return -1
}

// TestBoltDiskFull fills the file system under a worker process that runs workflows, then
// frees the space. The worker's writes must fail with an error naming the cause, nothing may
// panic, the file must pass bbolt's consistency check, and once there is space again the
// same worker must complete every workflow, exactly as after kills.
func TestBoltDiskFull(t *testing.T) {
	n := size(200, 1000)
	mode := "tmpfs"
	dir, err := "", error(nil)
	if os.Getenv(boltDiskFullEnv) == "rlimit" {
		mode = "rlimit"
	} else if dir, err = boltMountTmpfs(t); err != nil {
		if !errors.Is(err, syscall.EPERM) {
			t.Fatal(err)
		}
		t.Logf("%v: falling back to RLIMIT_FSIZE", err)
		mode = "rlimit"
	}
	if mode == "rlimit" {
		dir = t.TempDir() // the limit, not the disk, runs out: nothing is filled
	}
	path, execLog := filepath.Join(dir, "chaos.db"), filepath.Join(t.TempDir(), "executions.log")
	createBoltWorkflows(t, path, n)

	began := time.Now()
	w := boltStartWorker(t, path, execLog, boltFinishEnv+"=1")
	w.waitReady()
	// Let it get going: some steps executed, so the disk fills under running workflows.
	for deadline := time.Now().Add(time.Minute); boltCountLines(execLog) < boltSteps*boltConcurrency; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the worker executed %d steps in a minute, want %d\n%s", boltCountLines(execLog), boltSteps*boltConcurrency, w.tail(30))
		}
	}

	cause, how := "no space left on device", ""
	from := len(w.output()) // failures count from the boltFill on
	filler := filepath.Join(dir, "filler")
	if mode == "tmpfs" {
		how = fmt.Sprintf("tmpfs of %d MiB filled by a %d KiB filler", boltTmpfsMiB(), boltFill(t, filler)>>10)
	} else {
		cause = "file too large"
		w.send("boltFill")
		how = "RLIMIT_FSIZE lowered to the file's size (" + strings.TrimPrefix(w.waitLine(from, time.Minute, "filled", func(l string) bool { return strings.Contains(l, "filled at") }), "chaos-bolt-worker: ") + ")"
	}
	// The disk stays full until the worker has logged boltFullFailures failures (runs and claims
	// that could not write), each of which must name the cause.
	var failed []string
	for len(failed) < boltFullFailures {
		l := w.waitLine(from, 2*time.Minute, "a failed write", boltIsFailure)
		from = boltIndexOf(w.output(), l, from) + 1
		failed = append(failed, l)
		t.Logf("failure while full: %s", l)
		if !strings.Contains(l, cause) {
			t.Errorf("a failure while the disk is full does not name the cause %q: %s", cause, l)
		}
	}
	done := boltCountLines(execLog)

	if mode == "tmpfs" {
		if err := os.Remove(filler); err != nil {
			t.Fatalf("remove the filler: %v", err)
		}
	} else {
		w.send("free")
	}
	w.wait(10 * time.Minute)
	for _, l := range w.output() {
		if strings.Contains(l, "panic") || strings.Contains(l, "fatal error") {
			t.Errorf("the worker panicked: %s", l)
		}
	}
	failures, aborted := 0, 0
	for _, l := range w.output() {
		if boltIsFailure(l) {
			failures++
		}
		if boltIsAbort(l) {
			aborted++
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err == nil {
		t.Logf("the store's file: %d KiB long, %d KiB on disk", st.Size>>10, st.Blocks*512>>10)
	}
	if left := checkBoltFile(t, path); left != 0 {
		t.Fatalf("%d workflows boltUnfinished after the worker finished", left)
	}
	r := checkBoltOutcome(t, path, execLog, n)
	// A run broken by the full disk (aborted, failed or stopped by a lost lease) leaves at
	// most its one step in flight to run again.
	broken := aborted + w.stat("runerrors") + w.stat("heartbeatslost")
	report(t, Result{
		Scenario: "disk-full", Backend: "bolt", Faults: 1, Workflows: r.workflows,
		Executions: r.executions, Excess: r.excess, Bound: broken,
		Lost: r.lost, Duplicated: r.duplicated, Elapsed: time.Since(began),
		Note: fmt.Sprintf("%s after %d step executions; %d failures logged, naming %q; %d runs broken (%d aborted by a failed write), each may repeat one step; bbolt Check clean; the same worker finished after the space came back",
			how, done, failures, cause, broken, aborted),
	})
}
