package storagetest_test

import (
	"bufio"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
	"github.com/chronoforge/chronoforge/storagetest"
)

// The suite's own tests. A case that must fail cannot run on the test's own testing.T (its
// failure would fail the test), and the cases take a *testing.T, which no fake can stand in
// for. So TestSuiteCatchesMutants runs this test binary again as a child process, in which
// TestSuiteChild runs the suite against each scenario (the correct store, each mutant, each
// way of declaring a capability), and reads the outcome of every case from the child's
// verbose output: the same report a backend author reads.

// childEnv set to 1 makes TestSuiteChild run; only TestSuiteCatchesMutants sets it.
const childEnv = "STORAGETEST_SELF_CHECK_CHILD"

// timeCases and notifyCases are the cases the self-check runs in the child; every other
// case is filtered out.
func timeCases() []string {
	return []string{"TimesRun", "TimesControl", "TimesSteps", "TimesErrors", "TimesUTC"}
}

func notifyCases() []string {
	return []string{"NotifyCreate", "NotifyWake", "NotifyRetry", "NotifyRelease", "NotifyCoalesced", "NotifyListeners", "NotifyCreateBatch", "NotifySendMessage"}
}

// openBolt is the correct store every scenario starts from.
func openBolt(t *testing.T) storage.Storage {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "suite.db"), bolt.WithNoSync())
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// wrapped is a factory of correct stores wrapped by wrap.
func wrapped(wrap func(storage.Storage) storage.Storage) storagetest.Factory {
	return func(t *testing.T) storage.Storage { return wrap(openBolt(t)) }
}

// scenario is one run of the suite in the child process.
type scenario struct {
	name    string
	factory storagetest.Factory
	opts    []storagetest.Option
}

func scenarios() []scenario {
	out := []scenario{
		{name: "correct", factory: openBolt},
		{name: "correct-notifier", factory: wrapped(correctNotifier)},
		{name: "declared-without-notifier", factory: wrapped(correctNotifier), opts: []storagetest.Option{storagetest.Without(storagetest.Notifier)}},
		{name: "unknown-capability", factory: openBolt, opts: []storagetest.Option{storagetest.Without("Notifer")}},
	}
	for _, m := range allMutants() {
		out = append(out, scenario{name: m.name, factory: wrapped(m.wrap)})
	}
	return out
}

// allMutants is every mutant the self-check runs.
func allMutants() []mutant {
	return slices.Concat(timeMutants(), notifierMutants(), mailMutants())
}

// names returns the names of ms.
func names(ms []mutant) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.name)
	}
	return out
}

// TestSuiteChild runs the suite against every scenario; it runs only in the child process
// of TestSuiteCatchesMutants, where failing cases are the point.
func TestSuiteChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("runs only in the child process of TestSuiteCatchesMutants")
	}
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			storagetest.Run(t, sc.factory, sc.opts...)
		})
	}
}

// outcome is what the child reported of one test: PASS, FAIL or SKIP ("" if it did not
// run), and the lines it logged.
type outcome struct {
	result string
	log    []string
}

var (
	headerLine = regexp.MustCompile(`^=== (?:RUN|PAUSE|CONT|NAME)\s+(\S+)`)
	resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)
)

// runChild runs the scenarios named (each a subtest of TestSuiteChild) with the cases named
// in a child process and returns the outcome of every test by its full name.
func runChild(t *testing.T, scenarioNames, caseNames []string) map[string]*outcome {
	t.Helper()
	quote := func(ss []string) string {
		q := make([]string, 0, len(ss))
		for _, s := range ss {
			q = append(q, regexp.QuoteMeta(s))
		}
		return "^(" + strings.Join(q, "|") + ")$"
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0],
		"-test.run=^TestSuiteChild$/"+quote(scenarioNames)+"/^storage$/"+quote(caseNames),
		"-test.v", "-test.count=1", "-test.parallel=64", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		require.NoError(t, err, "running the child process: %s", out)
	}
	got := map[string]*outcome{}
	of := func(name string) *outcome {
		if got[name] == nil {
			got[name] = &outcome{}
		}
		return got[name]
	}
	current := ""
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := headerLine.FindStringSubmatch(line); m != nil {
			current = m[1]
			continue
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			of(m[2]).result = m[1]
			continue
		}
		if current != "" {
			of(current).log = append(of(current).log, line)
		}
	}
	require.NoError(t, sc.Err())
	require.NotNil(t, got["TestSuiteChild/correct"], "the child ran no scenario:\n%s", out)
	return got
}

// requireOutcome requires that case c of scenario sc ended with result, and, when says is
// given, that its log says it.
func requireOutcome(t *testing.T, got map[string]*outcome, sc, c, result, says string) {
	t.Helper()
	name := "TestSuiteChild/" + sc + "/storage/" + c
	o := got[name]
	if o == nil {
		o = &outcome{}
	}
	log := strings.Join(o.log, "\n")
	require.Equal(t, result, o.result, "%s: its log:\n%s", name, log)
	if says != "" {
		require.Contains(t, log, says, "%s ended with %s for another reason", name, result)
	}
}

// TestSuiteCatchesMutants proves the suite: against the correct store every case checked
// here passes (or skips for a capability the store lacks), and against every mutant each case
// named with it fails, saying why. It also proves the capability declarations: a declared
// capability's cases are skipped by name, an unknown name fails the test.
func TestSuiteCatchesMutants(t *testing.T) {
	t.Parallel()
	controls := []string{"correct", "correct-notifier", "declared-without-notifier", "unknown-capability"}
	got := runChild(t, append(slices.Clone(controls), names(slices.Concat(timeMutants(), notifierMutants()))...), append(timeCases(), notifyCases()...))
	// The mailbox mutants are checked on their own cases only, in a second child.
	maps.Copy(got, runChild(t, append([]string{"correct"}, names(mailMutants())...), mailCases()))

	t.Run("controls", func(t *testing.T) {
		for _, c := range timeCases() {
			requireOutcome(t, got, "correct", c, "PASS", "")
			requireOutcome(t, got, "correct-notifier", c, "PASS", "")
			requireOutcome(t, got, "declared-without-notifier", c, "PASS", "")
		}
		for _, c := range notifyCases() {
			requireOutcome(t, got, "correct-notifier", c, "PASS", "")
		}
		for _, c := range mailCases() {
			requireOutcome(t, got, "correct", c, "PASS", "")
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		for _, c := range notifyCases() {
			requireOutcome(t, got, "correct", c, "SKIP", "capability Notifier: the store does not implement storage.Notifier")
			requireOutcome(t, got, "declared-without-notifier", c, "SKIP", "capability Notifier: the backend declared it missing")
		}
		unknown := got["TestSuiteChild/unknown-capability"]
		require.NotNil(t, unknown, "the scenario with an unknown capability did not run")
		require.Equal(t, "FAIL", unknown.result, "Run with Without(\"Notifer\") must fail the test")
		require.Contains(t, strings.Join(unknown.log, "\n"), `Without("Notifer"): unknown capability`)
		require.Nil(t, got["TestSuiteChild/unknown-capability/storage"], "Run with an unknown capability ran cases")
	})

	for _, m := range allMutants() {
		t.Run(m.name, func(t *testing.T) {
			require.NotEmpty(t, m.caughtBy)
			for _, c := range m.caughtBy {
				requireOutcome(t, got, m.name, c, "FAIL", m.says)
			}
		})
	}
}
