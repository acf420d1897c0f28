package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "r.jsonl")
	doc := filepath.Join(dir, "R.md")
	rows := `{"scenario":"kill-seq","backend":"postgres","faults":40,"workflows":5000,"executions":15040,"excess":40,"bound":320,"elapsed_ns":12000000000,"note":"a|b"}
{"scenario":"pause","backend":"bolt","faults":3,"workflows":5000,"executions":15000,"excess":0,"bound":24,"elapsed_ns":1500000000}
`
	if err := os.WriteFile(results, []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(doc, []byte("# R\n<!-- chaos:begin -->\nold\n<!-- chaos:end -->\ntail\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(results, doc); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(doc)
	for _, want := range []string{
		"| kill-seq | postgres | 40 | 5000 | 15040 | 40 (320) | 0 | 0 | 12s | a\\|b |",
		"| pause | bolt | 3 | 5000 | 15000 | 0 (24) | 0 | 0 | 1.5s |  |",
		"<!-- chaos:end -->\ntail\n",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(string(got), "old") {
		t.Errorf("the old table is still there:\n%s", got)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "R.md")
	os.WriteFile(doc, []byte("no markers"), 0o644)
	results := filepath.Join(dir, "r.jsonl")
	os.WriteFile(results, []byte(`{"scenario":"x"}`+"\n"), 0o644)
	if err := run(results, doc); err == nil || !strings.Contains(err.Error(), "markers") {
		t.Errorf("no markers: %v", err)
	}
	os.WriteFile(results, []byte("{bad\n"), 0o644)
	if err := run(results, doc); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad row: %v", err)
	}
	os.WriteFile(results, nil, 0o644)
	if err := run(results, doc); err == nil || !strings.Contains(err.Error(), "no result rows") {
		t.Errorf("empty: %v", err)
	}
	if got, _ := os.ReadFile(doc); string(got) != "no markers" {
		t.Errorf("the document changed on error: %q", got)
	}
}
