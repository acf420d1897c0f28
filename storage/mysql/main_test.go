package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/chronoforge/chronoforge/internal/dbtest"
	"github.com/chronoforge/chronoforge/storage"
)

// TestMain closes the package's pools and then fails the package if any test left a
// goroutine running: the store starts none, and the end-to-end conformance cases must stop
// every worker they start.
func TestMain(m *testing.M) {
	code := m.Run()
	pools.closeAll()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// pools tracks every *sql.DB the tests open, so TestMain can close them (their connections
// each run a goroutine).
var pools = &poolSet{}

type poolSet struct {
	mu     sync.Mutex
	dbs    []*sql.DB
	shared *sql.DB
}

func (p *poolSet) add(db *sql.DB) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dbs = append(p.dbs, db)
}

func (p *poolSet) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, db := range p.dbs {
		_ = db.Close()
	}
	p.dbs, p.shared = nil, nil
}

// serverConfig returns the driver configuration of the test server (skipping or failing t
// without one, see dbtest), normalised the way these tests want it whatever the DSN said:
// times parsed, UTC, parameters interpolated (one round trip per statement), the server's
// max_allowed_packet, and the server's default database kept for administrative statements.
func serverConfig(t testing.TB) *gomysql.Config {
	t.Helper()
	cfg, err := gomysql.ParseDSN(dbtest.DSN(t, dbtest.MySQL))
	require.NoError(t, err, "parse %s", dbtest.MySQL.Env)
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.InterpolateParams = true
	cfg.MaxAllowedPacket = 0
	return cfg
}

// openDB opens a pool over the connector of cfg, closed when the test binary ends.
func openDB(t testing.TB, cfg *gomysql.Config, maxConns int) *sql.DB {
	t.Helper()
	c, err := gomysql.NewConnector(cfg)
	require.NoError(t, err)
	return openConnector(c, maxConns)
}

func openConnector(c driver.Connector, maxConns int) *sql.DB {
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(time.Minute)
	pools.add(db)
	return db
}

// sharedDB is the one pool of the package that the conformance cases share: every case has
// a database of its own, and the tables are qualified by it.
func sharedDB(t testing.TB) *sql.DB {
	t.Helper()
	cfg := serverConfig(t)
	pools.mu.Lock()
	db := pools.shared
	pools.mu.Unlock()
	if db != nil {
		return db
	}
	db = openDB(t, cfg, 8)
	pools.mu.Lock()
	defer pools.mu.Unlock()
	if pools.shared != nil {
		return pools.shared
	}
	pools.shared = db
	return db
}

// newSchema returns the name of a database for one test, dropped when the test ends. Migrate
// creates it.
func newSchema(t testing.TB, db *sql.DB) string {
	t.Helper()
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	name := "chrono_t_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return name
}

// newStore returns a migrated store in a fresh database of its own over db.
func newStore(t testing.TB, db *sql.DB, opts ...Option) *Store {
	t.Helper()
	schema := newSchema(t, db)
	s, err := New(db, append([]Option{WithSchema(schema)}, opts...)...)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()), "migrate %s", schema)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// base is the tests' fixed time; at(d) is base plus d.
var base = time.Date(2030, time.January, 2, 3, 4, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

func create(t testing.TB, s storage.Storage, name, key string, runAt time.Time) storage.Workflow {
	t.Helper()
	w, created, err := s.CreateWorkflow(context.Background(), storage.NewWorkflow{Name: name, Key: key, Input: []byte(`{}`), RunAt: runAt, Now: at(0)})
	require.NoError(t, err)
	require.True(t, created)
	return w
}

func claimAll(t testing.TB, s storage.Storage, now time.Time, limit int, names ...string) []storage.Workflow {
	t.Helper()
	got, err := s.Claim(context.Background(), storage.ClaimRequest{Owner: "test", Limit: limit, Names: names, TTL: time.Minute, Now: now})
	require.NoError(t, err)
	return got
}
