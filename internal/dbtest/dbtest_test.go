package dbtest

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestDSNFromEnvironment(t *testing.T) {
	k := &Kind{Env: "CHRONOFORGE_DBTEST_SELFTEST_DSN"}
	t.Setenv(k.Env, "postgres://example/db")
	if got := DSN(t, k); got != "postgres://example/db" {
		t.Fatalf("DSN = %q, want the variable's value", got)
	}
}

func TestMissingDatabaseSkipsNamingTheVariable(t *testing.T) {
	if os.Getenv("DOCKER_HOST") != "" {
		t.Skip("a Docker engine may be reachable; this checks the no-engine path")
	}
	k := &Kind{Env: "CHRONOFORGE_DBTEST_MISSING_DSN", Image: "none:invalid", Port: "1/tcp"}
	t.Setenv(RequireEnv, "")
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		DSN(t, k)
	})
	if !skipped {
		t.Fatal("without a DSN or a container the test must be skipped")
	}
}

func TestServerAtTheDefaultAddressIsUsedWithoutTheVariable(t *testing.T) {
	k := &Kind{Name: "fake", Env: "CHRONOFORGE_DBTEST_DEFAULT_DSN", Default: "fake://loopback",
		Ping: func(context.Context, string) error { return nil }}
	t.Setenv(k.Env, "")
	if got := DSN(t, k); got != "fake://loopback" {
		t.Fatalf("DSN = %q, want the default loopback DSN", got)
	}
	if got := Report(k); !strings.Contains(got, "using the server at fake://loopback") {
		t.Fatalf("Report = %q, want it to name the default server", got)
	}
}

func TestReportSaysHowToEnableAMissingServer(t *testing.T) {
	k := &Kind{Name: "fake", Env: "CHRONOFORGE_DBTEST_ABSENT_DSN", Default: "fake://nobody",
		Ping: func(context.Context, string) error { return errors.New("connection refused") }}
	t.Setenv(k.Env, "")
	got := Report(k)
	for _, want := range []string{"SKIPPED", "fake://nobody", k.Env, RequireEnv} {
		if !strings.Contains(got, want) {
			t.Fatalf("Report = %q, want it to mention %q", got, want)
		}
	}
	t.Setenv(k.Env, "fake://set")
	if got := Report(k); !strings.Contains(got, "using "+k.Env) {
		t.Fatalf("Report = %q, want it to name the variable in use", got)
	}
}
