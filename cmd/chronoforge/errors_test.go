package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStoreErrors covers the clear one-line errors for a missing, unknown or bad store.
func TestStoreErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.db")
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no store", []string{"list"}, 2, "no store: give --store"},
		{"unknown scheme", []string{"--store", "redis:x", "list"}, 2, `unknown scheme "redis"`},
		{"no address", []string{"--store", "bolt", "list"}, 2, "want bolt:PATH"},
		{"missing bolt file", []string{"--store", "bolt:" + missing, "list"}, 1, "does not exist (run 'chronoforge migrate'"},
		{"bad postgres DSN", []string{"--store", "postgres:postgres://u@127.0.0.1:5432/x?sslmode=bogus", "list"}, 2, "bad postgres DSN"},
		{"unreachable postgres", []string{"--store", "postgres:postgres://u@127.0.0.1:1/x?connect_timeout=2", "list"}, 1, "postgres: cannot reach the server"},
		{"bad mysql DSN", []string{"--store", "mysql:no-slash", "list"}, 2, "bad mysql DSN"},
		{"unreachable mysql", []string{"--store", "mysql:u@tcp(127.0.0.1:1)/x?timeout=2s", "list"}, 1, "mysql: cannot reach the server"},
		{"bolt with prefix", []string{"--store", "bolt:" + missing, "--prefix", "x_", "list"}, 2, "apply to postgres and mysql"},
		{"unknown command", []string{"frob"}, 2, `unknown command "frob"`},
		{"bad global flag", []string{"--frob", "list"}, 2, "flag provided but not defined: -frob"},
		{"bad output", []string{"version", "-o", "yaml"}, 2, `-o "yaml": want table or json`},
		{"no command", nil, 2, "no command given"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CHRONOFORGE_STORE", "")
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			require.Equal(t, tc.code, code, "stderr: %s", errb.String())
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			require.Contains(t, lines[len(lines)-1], tc.want)
		})
	}
}

// TestStoreFromEnvironment reads the store from CHRONOFORGE_STORE when --store is absent.
func TestStoreFromEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env.db")
	t.Setenv("CHRONOFORGE_STORE", "bolt:"+path)
	var out, errb bytes.Buffer
	require.Equal(t, 0, run([]string{"migrate"}, &out, &errb), errb.String())
	require.Contains(t, out.String(), "bbolt needs no migration")
	out.Reset()
	require.Equal(t, 0, run([]string{"list"}, &out, &errb), errb.String())
	require.Contains(t, out.String(), "(no workflows)")
}

// TestHelp lists every command, for help, -h and a command's -h.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"-h"}} {
		var out, errb bytes.Buffer
		require.Equal(t, 0, run(args, &out, &errb))
		for _, name := range commandOrder {
			require.Contains(t, out.String(), "\n  "+name, "usage lists %s", name)
		}
	}
	var out, errb bytes.Buffer
	require.Equal(t, 0, run([]string{"cleanup", "-h"}, &out, &errb))
	require.Contains(t, out.String(), "-dry-run")
}

// TestParseCutoff reads durations and RFC 3339 times and refuses the rest.
func TestParseCutoff(t *testing.T) {
	t.Parallel()
	now := mustTime(t, "2026-06-01T00:00:00Z")
	got, err := parseCutoff("24h", now)
	require.NoError(t, err)
	require.Equal(t, now.Add(-24*time.Hour), got)
	got, err = parseCutoff("2026-05-01T00:00:00Z", now)
	require.NoError(t, err)
	require.Equal(t, mustTime(t, "2026-05-01T00:00:00Z"), got)
	for _, bad := range []string{"-1h", "0s", "May 1", "1000-01-01T00:00:00Z"} {
		_, err := parseCutoff(bad, now)
		require.Error(t, err, bad)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	require.NoError(t, err)
	return tm
}
