// Package dbtest finds the database servers that the SQL backends' tests run against.
//
// A test asks for a server by kind. The DSN comes from CHRONOFORGE_POSTGRES_DSN or
// CHRONOFORGE_MYSQL_DSN; without it, and with a Docker engine reachable, a throwaway container
// is started once per test binary with testcontainers-go. Otherwise the test is skipped with a
// message naming the variable, or fails when CHRONOFORGE_REQUIRE_DB=1, so CI can never pass by
// skipping. Each test package then creates its own database or schema on that server.
package dbtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Kind names a database server.
type Kind struct {
	// Env is the variable holding its DSN.
	Env string
	// Image, Port, ContainerEnv and DSN describe the container started without Env.
	Image        string
	Port         string
	ContainerEnv map[string]string
	DSN          func(host, port string) string
}

// Servers the project tests against.
var (
	Postgres = &Kind{
		Env:          "CHRONOFORGE_POSTGRES_DSN",
		Image:        "postgres:15-alpine",
		Port:         "5432/tcp",
		ContainerEnv: map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_DB": "test"},
		DSN: func(host, port string) string {
			return fmt.Sprintf("postgres://postgres@%s:%s/test?sslmode=disable", host, port)
		},
	}
	MySQL = &Kind{
		Env:          "CHRONOFORGE_MYSQL_DSN",
		Image:        "mariadb:10.11",
		Port:         "3306/tcp",
		ContainerEnv: map[string]string{"MARIADB_ALLOW_EMPTY_ROOT_PASSWORD": "1", "MARIADB_DATABASE": "test"},
		DSN: func(host, port string) string {
			return fmt.Sprintf("root@tcp(%s:%s)/test?parseTime=true", host, port)
		},
	}
)

// RequireEnv is the variable that turns a missing database into a test failure.
const RequireEnv = "CHRONOFORGE_REQUIRE_DB"

var (
	mu         sync.Mutex
	containers = map[*Kind]*started{}
)

type started struct {
	dsn string
	err error
}

// DSN returns the DSN of a server of kind k, or skips (or fails) t as the package comment says.
func DSN(t testing.TB, k *Kind) string {
	t.Helper()
	if dsn := os.Getenv(k.Env); dsn != "" {
		return dsn
	}
	mu.Lock()
	s := containers[k]
	if s == nil {
		s = &started{}
		s.dsn, s.err = startContainer(k)
		containers[k] = s
	}
	mu.Unlock()
	if s.err == nil {
		return s.dsn
	}
	msg := fmt.Sprintf("no database: set %s (or run a Docker engine for testcontainers): %v", k.Env, s.err)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s=1 and %s", RequireEnv, msg)
	}
	t.Skip(msg)
	return ""
}

// startContainer starts a container for k; it lives until the test binary exits (the
// testcontainers reaper removes it).
func startContainer(k *Kind) (dsn string, err error) {
	defer func() {
		// testcontainers panics in some set-ups without a Docker engine; treat it as absent.
		if p := recover(); p != nil {
			err = fmt.Errorf("testcontainers: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        k.Image,
			ExposedPorts: []string{k.Port},
			Env:          k.ContainerEnv,
			WaitingFor:   wait.ForListeningPort(k.Port).WithStartupTimeout(2 * time.Minute),
		},
		Started: true,
	})
	if err != nil {
		return "", err
	}
	host, err := c.Host(ctx)
	if err != nil {
		return "", err
	}
	port, err := c.MappedPort(ctx, k.Port)
	if err != nil {
		return "", err
	}
	return k.DSN(host, port.Port()), nil
}
