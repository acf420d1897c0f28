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

// The disk-full scenario needs a file system it may fill. As root it mounts a small tmpfs
// and fills it with a filler file; where mounting is not permitted (a loop-mounted ext4
// would need the same privilege) the worker lowers its own RLIMIT_FSIZE instead, so its
// writes past the file's size fail with EFBIG, and raises it again to free the space.

// diskFullEnv set to "rlimit" forces the RLIMIT_FSIZE fallback even where mounting works.
const diskFullEnv = "CHRONOFORGE_CHAOS_DISKFULL"

// Shape of the workload: size(200, 1000) sequential workflows whose steps' results are padded,
// so that the file keeps growing, on a tmpfs with room for all of them once the filler is
// gone (the short workload's file takes about 2 MiB, the full one's up to 8 MiB).
const diskPad = 1024

func tmpfsMiB() int { return size(8, 32) }

func init() { workerCommand = rlimitCommand }

// savedFSize is the soft RLIMIT_FSIZE the worker had before "fill" lowered it.
var savedFSize uint64

// rlimitCommand carries out the fallback's commands in the worker: "fill" lowers the soft
// RLIMIT_FSIZE to the store file's size (SIGXFSZ ignored, so a write beyond it fails with
// EFBIG rather than killing the process) and "free" restores it.
func rlimitCommand(cfg workerConfig, cmd string) string {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		return "chaos-worker: getrlimit: " + err.Error()
	}
	switch cmd {
	case "fill":
		signal.Ignore(syscall.SIGXFSZ)
		fi, err := os.Stat(cfg.Path)
		if err != nil {
			return "chaos-worker: fill: " + err.Error()
		}
		savedFSize = lim.Cur
		lim.Cur = uint64(fi.Size())
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			return "chaos-worker: fill: setrlimit: " + err.Error()
		}
		return fmt.Sprintf("chaos-worker: filled at %d bytes", fi.Size())
	case "free":
		lim.Cur = savedFSize
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			return "chaos-worker: free: setrlimit: " + err.Error()
		}
		return "chaos-worker: freed"
	}
	return "chaos-worker: unknown command " + strconv.Quote(cmd)
}

// mountTmpfs mounts a tmpfs of tmpfsMiB on a new directory, unmounted at the end of the
// test, and returns the directory.
func mountTmpfs(t *testing.T) (string, error) {
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", tmpfsMiB())); err != nil {
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

// fill writes the file at path until the file system is full, and requires that the write
// fails with ENOSPC.
func fill(t *testing.T, path string) int64 {
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

// isFailure reports whether a line of a worker's output is a logged error or warning, or a
// run aborted (by a write that failed: the engine logs that at Debug).
func isFailure(line string) bool {
	return strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") || isAbort(line)
}

// isAbort reports whether a line of a worker's output is a run aborted.
func isAbort(line string) bool { return strings.Contains(line, `msg="run aborted"`) }

// fullFailures is how many failures the worker must log before the space comes back.
const fullFailures = 5

// executed counts the step executions logged in dir so far.
func executed(t *testing.T, dir string) int {
	t.Helper()
	execs, _, err := readExecs(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range execs {
		n += k
	}
	return n
}

// TestBoltDiskFull fills the file system under a worker process that runs workflows, then
// frees the space. The worker's writes must fail with an error naming the cause, nothing may
// panic, the file must pass bbolt's consistency check, and once there is space again the
// same worker must complete every workflow, with the invariants of every other scenario.
func TestBoltDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a worker process")
	}
	n := size(200, 1000)
	mode := "tmpfs"
	dir, err := "", error(nil)
	if os.Getenv(diskFullEnv) == "rlimit" {
		mode = "rlimit"
	} else if dir, err = mountTmpfs(t); err != nil {
		if !errors.Is(err, syscall.EPERM) {
			t.Fatal(err)
		}
		t.Logf("%v: falling back to RLIMIT_FSIZE", err)
		mode = "rlimit"
	}
	if mode == "rlimit" {
		dir = t.TempDir() // the limit, not the disk, runs out: nothing is filled
	}
	tg := newTarget(t, "bolt", "")
	tg.cfg.Path = filepath.Join(dir, "chaos.db")
	startWorkload(t, tg, workload{seq: n})
	cfg := tg.cfg
	cfg.Concurrency, cfg.LeaseTTL, cfg.ExitWhenIdle, cfg.Pad, cfg.Debug = concurrency, leaseTTL, true, diskPad, true

	began := time.Now()
	c := startCluster(t, []workerConfig{cfg})
	// Let it get going: some steps executed, so the disk fills under running workflows.
	for deadline := time.Now().Add(time.Minute); executed(t, cfg.LogDir) < len(seqSteps)*concurrency; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the worker executed %d steps in a minute, want %d", executed(t, cfg.LogDir), len(seqSteps)*concurrency)
		}
	}

	cause, how := "no space left on device", ""
	from := len(c.proc(0).out.lines()) // failures count from the fill on
	filler := filepath.Join(dir, "filler")
	if mode == "tmpfs" {
		how = fmt.Sprintf("tmpfs of %d MiB filled by a %d KiB filler", tmpfsMiB(), fill(t, filler)>>10)
	} else {
		cause = "file too large"
		c.send(0, "fill")
		l, _ := c.waitLine(0, from, time.Minute, "filled", func(l string) bool { return strings.Contains(l, "filled at") })
		how = "RLIMIT_FSIZE lowered to the file's size (" + strings.TrimPrefix(l, "chaos-worker: ") + ")"
	}
	// The disk stays full until the worker has logged fullFailures failures (runs and claims
	// that could not write), each of which must name the cause.
	for range fullFailures {
		l, k := c.waitLine(0, from, 2*time.Minute, "a failed write", isFailure)
		from = k + 1
		t.Logf("failure while full: %s", l)
		if !strings.Contains(l, cause) {
			t.Errorf("a failure while the disk is full does not name the cause %q: %s", cause, l)
		}
	}
	done := executed(t, cfg.LogDir)

	if mode == "tmpfs" {
		if err := os.Remove(filler); err != nil {
			t.Fatalf("remove the filler: %v", err)
		}
	} else {
		c.send(0, "free")
	}
	c.wait(10 * time.Minute)
	elapsed := time.Since(began)
	failures, aborted := 0, 0
	for _, l := range c.proc(0).out.lines() {
		if strings.Contains(l, "panic") || strings.Contains(l, "fatal error") {
			t.Errorf("the worker panicked: %s", l)
		}
		if isFailure(l) {
			failures++
		}
		if isAbort(l) {
			aborted++
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(cfg.Path, &st); err == nil {
		t.Logf("the store's file: %d KiB long, %d KiB on disk", st.Size>>10, st.Blocks*512>>10)
	}
	if completed := checkBoltFile(t, cfg.Path); completed != n {
		t.Fatalf("%d of %d workflows completed after the worker finished", completed, n)
	}
	got := check(t, tg.open(t), cfg.LogDir, workload{seq: n})
	// A run broken by the full disk (aborted, failed or stopped by a lost lease) leaves at
	// most its one step in flight to run again.
	broken := aborted + c.stat("run_errors") + c.stat("heartbeats_lost")
	report(t, Result{
		Scenario: "disk-full", Backend: "bolt", Faults: 1, Workflows: n,
		Executions: got.executions, Excess: got.excess, Bound: broken,
		Lost: got.lost, Duplicated: got.duplicated, Elapsed: elapsed,
		Note: fmt.Sprintf("%s after %d step executions; %d failures logged, naming %q; %d runs broken (%d aborted by a failed write), each may repeat one step; bbolt Check clean; the same worker finished after the space came back",
			how, done, failures, cause, broken, aborted),
	})
}
