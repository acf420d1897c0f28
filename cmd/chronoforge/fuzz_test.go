package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// fuzzCommands are the commands FuzzCommand runs: all but dashboard, which would listen.
var fuzzCommands = []string{"list", "show", "children", "retry", "resume", "cancel", "cleanup", "stats", "flows", "migrate", "version", "help", "bogus"}

// FuzzCommand runs the tool in process (run) with a command and up to four arguments of any
// text, over a copy of a seeded bolt store. Whatever the arguments, it exits 0, 1 (the
// command failed) or 2 (the command line is wrong) without a panic; a failure prints one line
// on stderr; and a wrong command line (exit 2) changes nothing in the store. Arguments that
// name another store (--store) are skipped, so the tool never reaches for a server.
func FuzzCommand(f *testing.F) {
	template := filepath.Join(f.TempDir(), "template.db")
	var once sync.Once
	f.Add(uint8(0), "--state", "failed,stalled", "--limit", "2")
	f.Add(uint8(0), "--name", "a$b", "--key-prefix", "k")
	f.Add(uint8(0), "--before", "-1", "--after", "x")
	f.Add(uint8(1), "1", "--payloads", "", "")
	f.Add(uint8(1), "done/k-done", "", "", "")
	f.Add(uint8(1), "9223372036854775807", "", "", "")
	f.Add(uint8(2), "5", "--branch", "items", "--cap=-1")
	f.Add(uint8(3), "2", "3", "x", "")
	f.Add(uint8(3), "--state", "failed", "--yes", "")
	f.Add(uint8(5), "--children", "5", "-1", "")
	f.Add(uint8(6), "--before", "1h", "--dry-run", "")
	f.Add(uint8(6), "--before", "2030-01-01T00:00:00Z", "--state", "idle")
	f.Add(uint8(6), "--before", "-87600h", "--limit", "-5")
	f.Add(uint8(7), "--sample", "0", "--name", "\x00")
	f.Add(uint8(8), "set", "orders", "--rate", "5")
	f.Add(uint8(8), "set", "orders", "--per", "1s")
	f.Add(uint8(8), "set", "a\x00b", "--priority", "999999999999")
	f.Add(uint8(8), "delete", "", "", "")
	f.Add(uint8(9), "--status", "-o", "yaml", "")
	f.Add(uint8(12), "-h", "", "", "")
	f.Fuzz(func(t *testing.T, cmd uint8, a1, a2, a3, a4 string) {
		once.Do(func() { seedTemplate(t, template) })
		args := []string{fuzzCommands[int(cmd)%len(fuzzCommands)]}
		for _, a := range []string{a1, a2, a3, a4} {
			if strings.Contains(a, "store") {
				return // another store: maybe a server somewhere
			}
			if a != "" {
				args = append(args, a)
			}
		}
		path := filepath.Join(t.TempDir(), "cf.db")
		data, err := os.ReadFile(template)
		if err != nil {
			t.Fatalf("read the template store: %v", err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatalf("copy the template store: %v", err)
		}
		before := snapshot(t, path)
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"--store", "bolt:" + path}, args...), &stdout, &stderr)
		if code != 0 && code != exitFailure && code != exitUsage {
			t.Fatalf("chronoforge %q exited %d", args, code)
		}
		if code != 0 && strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Fatalf("chronoforge %q exited %d with more than one line on stderr: %q", args, code, stderr.String())
		}
		if code != 0 && stderr.Len() == 0 {
			t.Fatalf("chronoforge %q exited %d saying nothing", args, code)
		}
		if after := snapshot(t, path); code == exitUsage && after != before {
			t.Fatalf("chronoforge %q: a wrong command line (exit 2: %s) changed the store:\nbefore %s\nafter  %s", args, strings.TrimSpace(stderr.String()), before, after)
		}
	})
}

// seedTemplate writes the workflows of seed into a new bolt file at path.
func seedTemplate(t *testing.T, path string) {
	s, err := bolt.Open(path, bolt.WithNoSync())
	if err != nil {
		t.Fatalf("create the template store: %v", err)
	}
	defer func() { _ = s.Close() }()
	seed(t, s)
	if _, _, err := s.PutFlow(context.Background(), storage.Flow{Key: "done", Concurrency: 2}, false, time.Now()); err != nil {
		t.Fatalf("seed a flow: %v", err)
	}
}

// snapshot describes what a command could change in the bolt store at path: every
// workflow's state, run time and update time, and every flow.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	s, err := bolt.Open(path, bolt.WithNoSync())
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer func() { _ = s.Close() }()
	ws, err := s.ListWorkflows(context.Background(), storage.ListFilter{Limit: storage.MaxListLimit})
	if err != nil {
		t.Fatalf("list the workflows of %s: %v", path, err)
	}
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "%d %s %s %s; ", w.ID, w.State, w.RunAt.Format(time.RFC3339Nano), w.UpdatedAt.Format(time.RFC3339Nano))
	}
	flows, err := s.ListFlows(context.Background(), time.Now())
	if err != nil {
		t.Fatalf("list the flows of %s: %v", path, err)
	}
	for _, fl := range flows {
		fmt.Fprintf(&b, "flow %+v; ", fl.Flow)
	}
	return b.String()
}
