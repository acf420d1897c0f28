package chaos

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestBrokenFencingIsCaught proves that the suite can fail: it runs the pause scenario on
// MariaDB again, in a deliberately broken build whose storage.Fence accepts every write
// (-tags chronoforge_nofencing; MariaDB and bbolt fence through it, PostgreSQL in its SQL).
// A worker frozen past its lease then wakes up and goes on writing and executing steps the
// workers that took over already ran, and the invariants must catch it.
func TestBrokenFencingIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the suite again")
	}
	requireDB(t, "CHRONOFORGE_MYSQL_DSN")
	// A pause catches the broken build only if the frozen worker had runs in flight that it
	// can go on with when it wakes (on a loaded machine it may have had none, or MariaDB may
	// have ended its transactions): up to three tries, of which one must fail the suite, and
	// every failure must be an invariant's.
	var text string
	for try := 1; try <= 3; try++ {
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "test", "-tags", "chronoforge_nofencing",
			"-count=1", "-v", "-run", "^TestChaos$/^mysql$/^pause$", ".")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "CHRONOFORGE_CHAOS") { // no result rows, the short size
				cmd.Env = append(cmd.Env, kv)
			}
		}
		out, err := cmd.CombinedOutput()
		text = string(out)
		if err == nil {
			t.Logf("try %d: the broken build passed:\n%s", try, lastLines(text, 8))
			continue
		}
		caught := strings.Contains(text, "excess executions, more than the bound") || strings.Contains(text, "duplicated: ")
		if !strings.Contains(text, "--- FAIL: TestChaos/mysql/pause") || !caught {
			t.Fatalf("the broken build failed, but not by an invariant (%v):\n%s", err, lastLines(text, 40))
		}
		break
	}
	if !strings.Contains(text, "--- FAIL: TestChaos/mysql/pause") {
		t.Fatalf("the suite passed three times on a build without fencing; it must fail")
	}
	for line := range strings.Lines(text) {
		if strings.Contains(line, "chaos pause on mysql") {
			t.Logf("broken build: %s", strings.TrimSpace(line))
		}
	}
}
