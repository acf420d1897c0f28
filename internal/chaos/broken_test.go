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
// workers that took over already ran, and the invariants must catch it. (It is missed only
// if every one of the frozen worker's runs was in its last step: about (1/3)^8.)
func TestBrokenFencingIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the suite again")
	}
	requireDB(t, "CHRONOFORGE_MYSQL_DSN")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "test", "-tags", "chronoforge_nofencing",
		"-count=1", "-v", "-run", "^TestChaos$/^mysql$/^pause$", ".")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHRONOFORGE_CHAOS") { // no result rows
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The full size (5,000 workflows): the frozen worker is surely busy when it freezes.
	cmd.Env = append(cmd.Env, "CHRONOFORGE_CHAOS=full")
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err == nil {
		t.Fatalf("the suite passed on a build without fencing; it must fail:\n%s", lastLines(text, 40))
	}
	caught := strings.Contains(text, "excess executions, more than the bound") || strings.Contains(text, "duplicated: ")
	if !strings.Contains(text, "--- FAIL: TestChaos/mysql/pause") || !caught {
		t.Fatalf("the broken build failed, but not by an invariant (%v):\n%s", err, lastLines(text, 40))
	}
	for line := range strings.Lines(text) {
		if strings.Contains(line, "chaos pause on mysql") {
			t.Logf("broken build: %s", strings.TrimSpace(line))
		}
	}
}
