// Command reliability turns the result rows of a full chaos run (the JSON lines the suite
// appends to CHRONOFORGE_CHAOS_RESULTS) into the table of RELIABILITY.md: it replaces what
// lies between the markers "<!-- chaos:begin -->" and "<!-- chaos:end -->" of that file.
//
//	go run ./internal/chaos/reliability -results chaos-results.jsonl -doc RELIABILITY.md
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/internal/chaos"
)

const (
	begin = "<!-- chaos:begin -->"
	end   = "<!-- chaos:end -->"
)

// row is one scenario on one backend, as the suite writes it.
type row = chaos.Result

func main() {
	results := flag.String("results", "chaos-results.jsonl", "the result rows of the run")
	doc := flag.String("doc", "RELIABILITY.md", "the document whose table to replace")
	flag.Parse()
	if err := run(*results, *doc); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		os.Exit(1)
	}
}

func run(results, doc string) error {
	f, err := os.Open(results)
	if err != nil {
		return err
	}
	defer f.Close()
	rows, err := readRows(f)
	if err != nil {
		return fmt.Errorf("%s: %w", results, err)
	}
	text, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	out, err := splice(string(text), table(rows))
	if err != nil {
		return fmt.Errorf("%s: %w", doc, err)
	}
	return os.WriteFile(doc, []byte(out), 0o644)
}

// readRows reads one JSON row per line.
func readRows(r io.Reader) ([]row, error) {
	var rows []row
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var x row
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		rows = append(rows, x)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("no result rows")
	}
	return rows, nil
}

// table renders rows as a Markdown table, in the order of the run.
func table(rows []row) string {
	var b strings.Builder
	b.WriteString("| Scenario | Backend | Faults | Workflows | Step executions | Excess (bound) | Lost | Duplicated | Time | Note |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d (%d) | %d | %d | %s | %s |\n",
			r.Scenario, r.Backend, r.Faults, r.Workflows, r.Executions, r.Excess, r.Bound, r.Lost, r.Duplicated,
			r.Elapsed.Round(100*time.Millisecond), strings.ReplaceAll(r.Note, "|", `\|`))
	}
	return b.String()
}

// splice puts body between the markers of doc.
func splice(doc, body string) (string, error) {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return "", fmt.Errorf("no %q ... %q markers", begin, end)
	}
	return doc[:i+len(begin)] + "\n" + body + doc[j:], nil
}
