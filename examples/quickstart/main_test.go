package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary act as the quickstart program, so the test can kill a real
// process mid-workflow and start another on the same database file.
func TestMain(m *testing.M) {
	if os.Getenv("QUICKSTART_AS_MAIN") == "1" {
		os.Args = append([]string{os.Args[0]}, strings.Fields(os.Getenv("QUICKSTART_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func quickstart(t *testing.T, db string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "QUICKSTART_AS_MAIN=1", "QUICKSTART_ARGS=-db "+db)
	return cmd
}

func TestKilledMidWorkflowResumesWithoutRepeatingSteps(t *testing.T) {
	db := filepath.Join(t.TempDir(), "qs.db")

	// First process: killed (SIGKILL, no cleanup) once it is past the sleep, so the first step
	// was committed before the kill.
	first := quickstart(t, db)
	out, err := first.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, first.Start())
	lines := bufio.NewScanner(out)
	var seen []string
	for lines.Scan() {
		seen = append(seen, lines.Text())
		if strings.Contains(lines.Text(), "step send-welcome") {
			break
		}
	}
	require.NoError(t, first.Process.Kill())
	_ = first.Wait()
	require.Contains(t, strings.Join(seen, "\n"), "step create-account")

	// Second process on the same file: it takes over the dead process's lease at once and
	// finishes the workflow without creating the account again.
	second := quickstart(t, db)
	second.WaitDelay = time.Second
	res, err := second.CombinedOutput()
	require.NoError(t, err, string(res))
	text := string(res)
	require.NotContains(t, text, "step create-account", "a committed step must not run again after a crash")
	require.Contains(t, text, "step activate")
	require.Contains(t, text, "result: account acct-")
}
