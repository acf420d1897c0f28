package dbtest

import (
	"os"
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
