package chaos

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"
)

// Result is one scenario run on one backend: a row of RELIABILITY.md.
type Result struct {
	Scenario string `json:"scenario"`
	Backend  string `json:"backend"`
	// Faults is how many faults were injected (kills, restarts, cuts, ...).
	Faults int `json:"faults"`
	// Workflows is how many workflows had to complete: parents, children and plain ones.
	Workflows int `json:"workflows"`
	// Executions is how many step executions were recorded; Excess how many of them ran a
	// step again, and Bound the most the faults allow (faults × in-flight runs).
	Executions int `json:"executions"`
	Excess     int `json:"excess"`
	Bound      int `json:"bound"`
	// Lost and Duplicated must be 0.
	Lost       int           `json:"lost"`
	Duplicated int           `json:"duplicated"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	// Note says what the row checked that the columns do not (for example "clear ENOSPC error").
	Note string `json:"note,omitempty"`
}

// full reports whether the full run (`make chaos`) was asked for.
func full() bool { return os.Getenv("CHRONOFORGE_CHAOS") == "full" }

// size picks the short or the full size of a workload.
func size(short, long int) int {
	if full() {
		return long
	}
	return short
}

var resultsMu sync.Mutex

// report logs r and, when CHRONOFORGE_CHAOS_RESULTS names a file, appends r to it as a line
// of JSON. It fails t when r lost or duplicated anything or exceeded its bound.
func report(t testing.TB, r Result) {
	t.Helper()
	t.Logf("chaos %s on %s: %d faults, %d workflows, %d executions, %d excess (bound %d), %d lost, %d duplicated, %s %s",
		r.Scenario, r.Backend, r.Faults, r.Workflows, r.Executions, r.Excess, r.Bound, r.Lost, r.Duplicated, r.Elapsed.Round(time.Millisecond), r.Note)
	if r.Lost != 0 || r.Duplicated != 0 {
		t.Errorf("chaos %s on %s: %d lost, %d duplicated; both must be 0", r.Scenario, r.Backend, r.Lost, r.Duplicated)
	}
	if r.Excess > r.Bound {
		t.Errorf("chaos %s on %s: %d excess executions, more than the bound of %d (faults × in-flight runs)", r.Scenario, r.Backend, r.Excess, r.Bound)
	}
	path := os.Getenv("CHRONOFORGE_CHAOS_RESULTS")
	if path == "" {
		return
	}
	line, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("encode result: %v", err)
	}
	resultsMu.Lock()
	defer resultsMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("results file: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		t.Fatalf("results file: %v", err)
	}
}
