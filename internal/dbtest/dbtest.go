// Package dbtest finds the database servers that the SQL backends' tests run against.
//
// A test asks for a server by kind. The DSN comes from CHRONOFORGE_POSTGRES_DSN or
// CHRONOFORGE_MYSQL_DSN; without it, a server answering at the default loopback address
// (PostgreSQL on 127.0.0.1:5432, MySQL/MariaDB on 127.0.0.1:3306, as a fresh developer machine
// or CI runs them) is used; failing that, with a Docker engine reachable, a throwaway container
// is started once per test binary with testcontainers-go. Otherwise the test is skipped with a
// message naming the variable, or fails when CHRONOFORGE_REQUIRE_DB=1, so CI can never pass by
// skipping. Each test package then creates its own database or schema on that server.
//
// `go test` shows nothing of a passing package's skips, so Report, which `make test` runs
// first (go run ./internal/dbtest/report), prints one line per backend saying which server its
// tests will use, or that they will skip and how to enable them.
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the MySQL kind's probe
	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Kind names a database server.
type Kind struct {
	// Name is what reports call it.
	Name string
	// Env is the variable holding its DSN.
	Env string
	// Default is the DSN of a server at the default loopback address, tried without Env;
	// Ping checks that a server answers a DSN (empty Default: none is tried).
	Default string
	Ping    func(ctx context.Context, dsn string) error
	// Image, Port, ContainerEnv and DSN describe the container started without Env.
	Image        string
	Port         string
	ContainerEnv map[string]string
	DSN          func(host, port string) string
}

// Servers the project tests against.
var (
	Postgres = &Kind{
		Name:         "PostgreSQL",
		Env:          "CHRONOFORGE_POSTGRES_DSN",
		Default:      "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		Ping:         pingPostgres,
		Image:        "postgres:15-alpine",
		Port:         "5432/tcp",
		ContainerEnv: map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_DB": "test"},
		DSN: func(host, port string) string {
			return fmt.Sprintf("postgres://postgres@%s:%s/test?sslmode=disable", host, port)
		},
	}
	MySQL = &Kind{
		Name:         "MySQL/MariaDB",
		Env:          "CHRONOFORGE_MYSQL_DSN",
		Default:      "root@tcp(127.0.0.1:3306)/test?parseTime=true",
		Ping:         pingMySQL,
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

// local returns k's default loopback DSN when a server answers it, probing once per process.
func local(k *Kind) (string, bool) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := probed[k]; ok {
		return k.Default, p
	}
	ok := false
	if k.Default != "" && k.Ping != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ok = k.Ping(ctx, k.Default) == nil
		cancel()
	}
	probed[k] = ok
	return k.Default, ok
}

var probed = map[*Kind]bool{}

// DSN returns the DSN of a server of kind k, or skips (or fails) t as the package comment says.
func DSN(t testing.TB, k *Kind) string {
	t.Helper()
	if dsn := os.Getenv(k.Env); dsn != "" {
		return dsn
	}
	if dsn, ok := local(k); ok {
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

// Report returns one line saying which server the tests of kind k will use: the one its
// variable names, the one at the default loopback address, or none (they will start a
// container if a Docker engine is reachable, else skip), with how to enable them.
func Report(k *Kind) string {
	if os.Getenv(k.Env) != "" {
		return fmt.Sprintf("%s tests: using %s", k.Name, k.Env)
	}
	if dsn, ok := local(k); ok {
		return fmt.Sprintf("%s tests: using the server at %s (%s is unset)", k.Name, dsn, k.Env)
	}
	return fmt.Sprintf("%s tests: SKIPPED unless a Docker engine is reachable: no server answers %s; "+
		"start one there or set %s to a DSN (%s=1 makes a missing server fail the tests)", k.Name, k.Default, k.Env, RequireEnv)
}

func pingPostgres(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

func pingMySQL(ctx context.Context, dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}
