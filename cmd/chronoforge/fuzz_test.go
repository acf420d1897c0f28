package main

import (
	"bytes"
	"context"
	"errors"
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

// FuzzStoreSpec parses any --store value, with any --schema and --prefix, without opening
// anything. It never panics, and every error is a usage error (exit 2) that names the flag.
func FuzzStoreSpec(f *testing.F) {
	f.Add("bolt:/tmp/cf.db", "", "")
	f.Add("bolt:x", "app", "")
	f.Add("bolt:", "", "")
	f.Add("postgres://u:pw@127.0.0.1:5432/test?sslmode=disable", "app", "cf_")
	f.Add("postgres://u:pw@h:99999/db", "", "")
	f.Add("postgres:host=h password=pw port=x", "", "")
	f.Add("postgresql:host=h sslmode=bogus", "", "")
	f.Add("postgres:%zz", "", "")
	f.Add("mysql:root:pw@tcp(127.0.0.1:3306)/test", "", "")
	f.Add("mysql:root@tcp(h)/db?parseTime=maybe", "", "")
	f.Add("mysql:u@unix(/x)/d?timeout=-", "", "")
	f.Add("sqlite:x.db", "", "")
	f.Add("", "", "")
	f.Add("postgres", "", "")
	f.Fuzz(func(t *testing.T, spec, schema, prefix string) {
		got, err := parseStore(spec, schema, prefix)
		if err == nil {
			if got.kind != "bolt" && got.kind != "postgres" && got.kind != "mysql" {
				t.Fatalf("parseStore(%q) = kind %q", spec, got.kind)
			}
			return
		}
		var ue usageError
		if !errors.As(err, &ue) {
			t.Fatalf("parseStore(%q, %q, %q): %v is not a usage error", spec, schema, prefix, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "--store") && !strings.Contains(msg, "--schema") && !strings.Contains(msg, "no store") {
			t.Fatalf("parseStore(%q, %q, %q): %q names neither --store nor --schema", spec, schema, prefix, msg)
		}
	})
}

// FuzzStorePassword builds a --store value whose password stands where each form of DSN
// puts it (a postgres URL, postgres key=value, a mysql DSN) around any other text, and parses
// it: an error never shows the password. The password is letters and digits, at least 8,
// the user and the rest have no character that could move where the password ends, and the
// password stands nowhere else in the value.
func FuzzStorePassword(f *testing.F) {
	f.Add(uint8(0), "u", "s3cretPassw0rd", "127.0.0.1:5432/test?sslmode=bogus")
	f.Add(uint8(0), "u", "s3cretPassw0rd", "h:port/db")
	f.Add(uint8(0), "u", "s3cretPassw0rd", "h/db?x=%zz")
	f.Add(uint8(1), "u", "s3cretPassw0rd", "host=h port=x")
	f.Add(uint8(1), "u", "s3cretPassw0rd", "sslmode=bogus")
	f.Add(uint8(2), "root", "s3cretPassw0rd", "tcp(h:3306)")
	f.Add(uint8(2), "root", "s3cretPassw0rd", "tcp(h)/db?parseTime=maybe")
	f.Fuzz(func(t *testing.T, form uint8, user, password, rest string) {
		if len(password) < 8 || strings.ContainsAny(user, ":@/?# %=") || strings.Contains(rest, "@") || strings.Contains(user+rest, password) {
			return
		}
		for _, r := range password {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return
			}
		}
		var spec string
		switch form % 3 {
		case 0:
			spec = "postgres://" + user + ":" + password + "@" + rest
		case 1:
			spec = "postgres:user=" + user + " password=" + password + " " + rest
		case 2:
			spec = "mysql:" + user + ":" + password + "@" + rest
		}
		if _, err := parseStore(spec, "", ""); err != nil && strings.Contains(err.Error(), password) {
			t.Fatalf("parseStore(%q): the error shows the password: %q", spec, err)
		}
	})
}
