package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the "mysql" driver of database/sql
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver of database/sql
)

// TestServer starts a private PostgreSQL and a private MariaDB server, each on a port taken
// first (it must try another), restarts each both ways and checks that it keeps every
// committed row and no uncommitted one.
func TestServer(t *testing.T) {
	for _, tc := range []struct {
		name, kind, driver string
		start              func(testing.TB, func() (int, error)) *Server
		dsn                func(addr string) string
	}{
		{"postgres", "postgres", "pgx", startPostgres, func(addr string) string { return "postgres://postgres@" + addr + "/test?sslmode=disable" }},
		{"mariadb", "mysql", "mysql", startMariaDB, func(addr string) string { return "root@tcp(" + addr + ")/test?parseTime=true&multiStatements=false" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			taken, ports := takenFirst(t)
			begun := time.Now()
			s := tc.start(t, ports)
			t.Logf("starting took %s", time.Since(begun).Round(time.Millisecond))
			checkMovedOn(t, s, taken)
			if s.Kind() != tc.kind {
				t.Errorf("Kind() = %q, want %s", s.Kind(), tc.kind)
			}
			if want := tc.dsn(s.Addr()); s.DSN() != want {
				t.Errorf("DSN() = %q, want %q", s.DSN(), want)
			}
			exerciseServer(t, s, tc.driver)
		})
	}
}

// TestServerMissingBinaries checks that missing binaries skip a test, unless
// CHRONOFORGE_REQUIRE_DB is set, when they fail it.
func TestServerMissingBinaries(t *testing.T) {
	notFound := errors.New("mariadbd is not installed")
	t.Setenv("CHRONOFORGE_REQUIRE_DB", "")
	if r := callMissing(t, notFound); r.skipped == "" || r.failed != "" || !strings.Contains(r.skipped, "mariadbd is not installed") {
		t.Errorf("binaries missing, CHRONOFORGE_REQUIRE_DB unset: skipped %q, failed %q; want a skip naming mariadbd", r.skipped, r.failed)
	}
	t.Setenv("CHRONOFORGE_REQUIRE_DB", "1")
	if r := callMissing(t, notFound); r.failed == "" || r.skipped != "" || !strings.Contains(r.failed, "CHRONOFORGE_REQUIRE_DB") {
		t.Errorf("binaries missing, CHRONOFORGE_REQUIRE_DB=1: skipped %q, failed %q; want a failure", r.skipped, r.failed)
	}
}

// tbRecorder is a testing.TB that records Skipf and Fatalf and ends its goroutine at them,
// as the real ones do.
type tbRecorder struct {
	testing.TB
	skipped, failed string
}

// Skipf records the skip and ends the goroutine.
func (r *tbRecorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Fatalf records the failure and ends the goroutine.
func (r *tbRecorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// callMissing calls missing with err on a recorder, in a goroutine of its own, and returns
// what it recorded.
func callMissing(t *testing.T, err error) *tbRecorder {
	r := &tbRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		missing(r, "MariaDB", err)
	}()
	<-done
	return r
}

// takenFirst returns a port this test listens on, and a port chooser that returns it first
// and free ports after, as if another process had taken the first port chosen.
func takenFirst(t *testing.T) (taken int, ports func() (int, error)) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("take a port: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	taken = l.Addr().(*net.TCPAddr).Port
	first := true
	return taken, func() (int, error) {
		if first {
			first = false
			return taken, nil
		}
		return freePort()
	}
}

// checkMovedOn checks that s, started on the port taken first, moved on to another port and
// its log says why.
func checkMovedOn(t *testing.T, s *Server, taken int) {
	t.Helper()
	if s.Addr() == net.JoinHostPort("127.0.0.1", strconv.Itoa(taken)) {
		t.Fatalf("the server runs on %s, the port this test holds", s.Addr())
	}
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatalf("read the log: %v", err)
	}
	if !strings.Contains(string(b), "already in use") {
		t.Errorf("the log of the server does not say port %d was in use", taken)
	}
}

// exerciseServer runs the checks common to both kinds on s, through the database/sql driver
// named driver.
func exerciseServer(t *testing.T, s *Server, driver string) {
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.Addr() == "127.0.0.1:5432" || s.Addr() == "127.0.0.1:3306" {
		t.Fatalf("Addr() = %q: not a private port of 127.0.0.1", s.Addr())
	}
	db := openDB(t, driver, s.DSN())
	mustExec(t, db, "CREATE TABLE chaos_rows (id BIGINT PRIMARY KEY)")
	committed := make(map[int]bool)
	for id := 1; id <= 50; id++ {
		mustExec(t, db, fmt.Sprintf("INSERT INTO chaos_rows (id) VALUES (%d)", id))
		committed[id] = true
	}
	checkProxy(t, s, driver)

	// Fast: a clean shutdown.
	held := holdConn(t, db)
	open := openTx(t, db, -1)
	begun := time.Now()
	s.Restart(t, Fast, 200*time.Millisecond)
	t.Logf("%s Restart(Fast, 200ms) took %s", s.Kind(), time.Since(begun).Round(time.Millisecond))
	checkStale(t, held, open)
	db = openDB(t, driver, s.DSN())
	checkRows(t, db, committed, -1)

	// Immediate: a crash while a writer commits rows one by one and a transaction is open.
	for id := 51; id <= 100; id++ {
		mustExec(t, db, fmt.Sprintf("INSERT INTO chaos_rows (id) VALUES (%d)", id))
		committed[id] = true
	}
	held = holdConn(t, db)
	open = openTx(t, db, -2)
	w := startWriter(openDB(t, driver, s.DSN()), 1000)
	select {
	case <-w.running:
	case <-time.After(readyTimeout):
		t.Fatalf("the writer did not commit %d rows within %s", writerHead, readyTimeout)
	}
	select {
	case <-w.done:
		t.Fatalf("the writer stopped before the crash: %v", w.err)
	default:
	}
	begun = time.Now()
	s.Restart(t, Immediate, 0)
	t.Logf("%s Restart(Immediate, 0) took %s", s.Kind(), time.Since(begun).Round(time.Millisecond))
	close(w.stop)
	werr := w.wait()
	t.Logf("the writer had %d rows committed, %d in flight, when it stopped: %v", len(w.acked), len(w.tried)-len(w.acked), werr)
	for id := range w.acked {
		committed[id] = true
	}
	checkStale(t, held, open)
	db = openDB(t, driver, s.DSN())
	extra := checkRows(t, db, committed, -2, w.tried...)
	if len(extra) > 0 {
		t.Logf("rows whose commit was in flight at the crash, found committed: %v", extra)
	}
	mustExec(t, db, "INSERT INTO chaos_rows (id) VALUES (100000)")
}

// openDB opens a database/sql pool on dsn, closed by t.Cleanup, and checks it connects.
func openDB(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("a new connection to %s: %v", dsn, err)
	}
	return db
}

// mustExec runs stmt on db, failing t on an error.
func mustExec(t *testing.T, db *sql.DB, stmt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

// holdConn takes a connection of db out of its pool and uses it once, so that it is open
// across the restart that follows.
func holdConn(t *testing.T, db *sql.DB) *sql.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("take a connection: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	var one int
	if err := conn.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 on a held connection: %d, %v", one, err)
	}
	return conn
}

// openTx begins a transaction that inserts the row id and leaves it uncommitted.
func openTx(t *testing.T, db *sql.DB, id int) *sql.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	t.Cleanup(func() { tx.Rollback() })
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO chaos_rows (id) VALUES (%d)", id)); err != nil {
		t.Fatalf("insert %d in an open transaction: %v", id, err)
	}
	return tx
}

// checkStale checks that a connection and a transaction open across a restart fail on
// their next use.
func checkStale(t *testing.T, conn *sql.Conn, tx *sql.Tx) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var one int
	if err := conn.QueryRowContext(ctx, "SELECT 1").Scan(&one); err == nil {
		t.Errorf("a connection open across the restart still answers SELECT 1")
	} else {
		t.Logf("a connection open across the restart fails, as it should: %v", err)
	}
	if err := tx.Commit(); err == nil {
		t.Errorf("a transaction open across the restart committed")
	}
}

// checkRows checks that table chaos_rows holds every row of want and not the row absent;
// a row of maybe (rows whose commit was in flight at a crash) may be there or not. It
// returns the rows of maybe found, failing t for any other row.
func checkRows(t *testing.T, db *sql.DB, want map[int]bool, absent int, maybe ...int) (extra []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT id FROM chaos_rows ORDER BY id")
	if err != nil {
		t.Fatalf("read the rows: %v", err)
	}
	defer rows.Close()
	allowed := make(map[int]bool)
	for _, id := range maybe {
		allowed[id] = true
	}
	got := make(map[int]bool)
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("read the rows: %v", err)
		}
		got[id] = true
		switch {
		case id == absent:
			t.Errorf("row %d, inserted by a transaction open at the restart, is there", id)
		case want[id]:
		case allowed[id]:
			extra = append(extra, id)
		default:
			t.Errorf("row %d is there; nothing inserted it", id)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read the rows: %v", err)
	}
	lost := 0
	for id := range want {
		if !got[id] {
			lost++
			if lost <= 10 {
				t.Errorf("committed row %d is lost", id)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d committed rows lost", lost, len(want))
	}
	return extra
}

// writerHead is how many rows the writer commits before it says it runs.
const writerHead = 20

// writer inserts rows one by one (each its own transaction) until stopped or refused.
type writer struct {
	running chan struct{} // closed once writerHead rows are committed
	stop    chan struct{} // closed to stop the writer
	done    chan struct{} // closed when the writer has stopped; then acked, tried and err are set
	acked   map[int]bool  // the rows whose INSERT returned no error
	tried   []int         // every row whose INSERT was sent
	err     error         // the error that stopped the writer, if any
}

// startWriter starts a writer of rows first, first+1, ... on db.
func startWriter(db *sql.DB, first int) *writer {
	w := &writer{running: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), acked: make(map[int]bool)}
	var once sync.Once
	go func() {
		defer close(w.done)
		defer once.Do(func() { close(w.running) }) // never leave the test waiting
		for id := first; ; id++ {
			select {
			case <-w.stop:
				return
			default:
			}
			w.tried = append(w.tried, id)
			ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
			_, err := db.ExecContext(ctx, fmt.Sprintf("INSERT INTO chaos_rows (id) VALUES (%d)", id))
			cancel()
			if err != nil {
				w.err = err
				return
			}
			w.acked[id] = true
			if len(w.acked) == writerHead {
				once.Do(func() { close(w.running) })
			}
		}
	}()
	return w
}

// wait waits for the writer to stop and returns the error that stopped it.
func (w *writer) wait() error {
	<-w.done
	return w.err
}

// checkProxy checks that DSNAt dials the address it is given: a connection through a TCP
// proxy in front of s answers.
func checkProxy(t *testing.T, s *Server, driver string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	var proxied sync.WaitGroup
	var accepted int
	var mu sync.Mutex
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			proxied.Add(1)
			go func() {
				defer proxied.Done()
				pipe(in, s.Addr())
			}()
		}
	}()
	dsn := s.DSNAt(l.Addr().String())
	if !strings.Contains(dsn, l.Addr().String()) || strings.Contains(dsn, s.Addr()) {
		t.Errorf("DSNAt(%s) = %q", l.Addr(), dsn)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	var one int
	err = db.QueryRow("SELECT 1").Scan(&one)
	db.Close()
	l.Close()
	proxied.Wait()
	if err != nil || one != 1 {
		t.Fatalf("SELECT 1 through a proxy, by DSNAt: %d, %v", one, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if accepted == 0 {
		t.Errorf("DSNAt(%s): no connection went through the proxy", l.Addr())
	}
}

// pipe copies between the client connection in and a new connection to addr until either
// side closes.
func pipe(in net.Conn, addr string) {
	defer in.Close()
	out, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	copyHalf := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go copyHalf(out, in)
	go copyHalf(in, out)
	<-done // one side closed: close both, which ends the other copy
	in.Close()
	out.Close()
	<-done
}
