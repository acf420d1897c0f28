package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/internal/dbtest"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// proxyPatience bounds every wait of these tests: generous, so that a loaded machine is never
// mistaken for a broken proxy, and finite, so that a broken proxy fails with a message.
const proxyPatience = time.Minute

// echoServer is the upstream of most tests: it writes back whatever it reads, and closes its
// writing half when the client closes its own.
type echoServer struct {
	ln net.Listener
	wg sync.WaitGroup
	// ended receives, for each connection, the error that ended it (nil for a clean end).
	ended chan error

	mu       sync.Mutex
	accepted int
	conns    map[net.Conn]struct{}
}

// startEcho starts an echo server on 127.0.0.1:0; t.Cleanup closes it and waits for its
// goroutines.
func startEcho(t testing.TB) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("echo server: listen: %v", err)
	}
	e := &echoServer{ln: ln, ended: make(chan error, 4096), conns: map[net.Conn]struct{}{}}
	e.wg.Add(1)
	go e.accept()
	t.Cleanup(e.close)
	return e
}

// addr returns the echo server's address.
func (e *echoServer) addr() string { return e.ln.Addr().String() }

// connections returns how many connections the echo server has accepted.
func (e *echoServer) connections() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.accepted
}

// accept serves every connection until the listener is closed.
func (e *echoServer) accept() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		e.accepted++
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		e.wg.Add(1)
		go e.serve(c)
	}
}

// serve echoes c until it ends, then reports how it ended on e.ended (never blocking).
func (e *echoServer) serve(c net.Conn) {
	defer e.wg.Done()
	err := echoConn(c)
	if err == nil {
		err = c.(*net.TCPConn).CloseWrite()
	}
	select {
	case e.ended <- err:
	default:
	}
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	c.Close()
}

// echoConn writes back to c what it reads, until c ends; it returns nil for a clean end.
func echoConn(c net.Conn) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// close closes the listener and every connection, and waits for the goroutines.
func (e *echoServer) close() {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// dialTCP connects to addr with a deadline of proxyPatience for every later read and write;
// t.Cleanup closes the connection.
func dialTCP(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, proxyPatience)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(proxyPatience))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// echoRoundTrip writes msg to c and reads the reply, which must be msg.
func echoRoundTrip(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("read %q, want %q", got, msg)
	}
	return nil
}

// randomBytes returns n pseudo-random bytes, different for each seed.
func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	copy(key[:], strconv.FormatUint(seed, 10))
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// sendAndCloseWrite writes data to c and closes c's writing half, in the background (the
// proxy and the echo server hold only so much before the sender must wait for the reader);
// the returned channel receives the outcome.
func sendAndCloseWrite(c *net.TCPConn, data []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		if _, err := c.Write(data); err != nil {
			done <- fmt.Errorf("write: %w", err)
			return
		}
		done <- c.CloseWrite()
	}()
	return done
}

// proxyWaitFor waits, up to proxyPatience, until cond holds; it fails t naming what it waited for.
func proxyWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(proxyPatience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", proxyPatience, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isConnReset reports whether err is a connection reset.
func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// isDeadlineExceeded reports whether err is a read or write deadline passing.
func isDeadlineExceeded(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// TestProxyRoundTrip sends a large payload over many connections at once and gets each back
// unchanged.
func TestProxyRoundTrip(t *testing.T) {
	e := startEcho(t)
	p := StartProxy(t, e.addr())
	conns, size := size(16, 32), size(1<<20, 4<<20)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		c := dialTCP(t, p.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := randomBytes(uint64(i), size)
			sent := sendAndCloseWrite(c, want)
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- fmt.Errorf("connection %d: read: %w", i, err)
				return
			}
			if err := <-sent; err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("connection %d: got %d bytes back, not the %d sent (first difference at %d)", i, len(got), len(want), firstDifference(got, want))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	proxyWaitFor(t, "every proxied connection to close", func() bool { return p.Stats().Open == 0 })
	if s := p.Stats(); s.Accepted != conns || s.Cut != 0 {
		t.Errorf("stats %+v, want %d accepted and none cut", s, conns)
	}
	if got := e.connections(); got != conns {
		t.Errorf("the upstream accepted %d connections, want %d", got, conns)
	}
}

// firstDifference returns the index of the first byte where a and b differ.
func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestProxyLatency checks that a round trip takes at least the latency twice (once each way),
// and that changing the latency while bytes flow never reorders them.
func TestProxyLatency(t *testing.T) {
	e := startEcho(t)
	p := StartProxy(t, e.addr())
	c := dialTCP(t, p.Addr())
	const latency = 50 * time.Millisecond
	p.SetLatency(latency)
	for i := range 3 {
		start := time.Now()
		if err := echoRoundTrip(c, []byte("ping")); err != nil {
			t.Fatalf("round trip %d with latency %v: %v", i, latency, err)
		}
		if took := time.Since(start); took < 2*latency {
			t.Errorf("round trip %d took %v, less than twice the latency of %v", i, took, latency)
		}
	}

	// Stream numbered lines while the latency goes up and down; they must arrive in order.
	var want bytes.Buffer
	for i := range size(2000, 20000) {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	c2 := dialTCP(t, p.Addr())
	stop := make(chan struct{})
	varied := make(chan struct{})
	go func() {
		defer close(varied)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			p.SetLatency(time.Duration(i%3) * 5 * time.Millisecond)
		}
	}()
	sent := make(chan error, 1)
	go func() {
		// Many small writes, so that the proxy reads many chunks.
		lines := bytes.SplitAfter(want.Bytes(), []byte("\n"))
		for _, line := range lines {
			if _, err := c2.Write(line); err != nil {
				sent <- err
				return
			}
		}
		sent <- c2.CloseWrite()
	}()
	got, err := io.ReadAll(c2)
	close(stop)
	<-varied
	if err != nil {
		t.Fatalf("read back the lines: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("write the lines: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("lines came back changed or reordered: %d bytes, want %d, first difference at %d", len(got), want.Len(), firstDifference(got, want.Bytes()))
	}

	p.SetLatency(0)
	if err := echoRoundTrip(c, []byte("no latency")); err != nil {
		t.Fatalf("round trip after SetLatency(0): %v", err)
	}
}

// TestProxyCut checks that Cut resets both sides of every connection, counts them, and
// that the proxy keeps working.
func TestProxyCut(t *testing.T) {
	e := startEcho(t)
	p := StartProxy(t, e.addr())
	const open = 3
	var conns []*net.TCPConn
	for i := range open {
		c := dialTCP(t, p.Addr())
		if err := echoRoundTrip(c, []byte("before the cut")); err != nil {
			t.Fatalf("connection %d before the cut: %v", i, err)
		}
		conns = append(conns, c)
	}
	if n := p.Cut(); n != open {
		t.Fatalf("Cut() = %d, want %d", n, open)
	}
	if s := p.Stats(); s != (ProxyStats{Accepted: open, Cut: open, Open: 0}) {
		t.Errorf("stats after the cut %+v, want %d accepted, %d cut, 0 open", s, open, open)
	}
	for i, c := range conns {
		n, err := c.Read(make([]byte, 1))
		if n != 0 || !isConnReset(err) {
			t.Errorf("client %d after the cut: read %d bytes, error %v; want a connection reset", i, n, err)
		}
	}
	for i := range open {
		select {
		case err := <-e.ended:
			if !isConnReset(err) {
				t.Errorf("upstream connection %d after the cut: ended with %v, want a connection reset", i, err)
			}
		case <-time.After(proxyPatience):
			t.Fatalf("upstream connection %d still open %v after the cut", i, proxyPatience)
		}
	}

	c := dialTCP(t, p.Addr())
	if err := echoRoundTrip(c, []byte("after the cut")); err != nil {
		t.Fatalf("a new connection after the cut: %v", err)
	}
	if s := p.Stats(); s != (ProxyStats{Accepted: open + 1, Cut: open, Open: 1}) {
		t.Errorf("stats after a new connection %+v, want %d accepted, %d cut, 1 open", s, open+1, open)
	}
}

// TestProxyCutRace cuts over and over while clients connect and round-trip, and checks the
// counts add up and the proxy still works after.
func TestProxyCutRace(t *testing.T) {
	e := startEcho(t)
	p := StartProxy(t, e.addr())
	clients, rounds := 4, size(50, 500)
	var dials, survived sync.WaitGroup
	var mu sync.Mutex
	dialed, ok := 0, 0
	for i := range clients {
		dials.Add(1)
		go func() {
			defer dials.Done()
			for j := range rounds {
				c, err := net.DialTimeout("tcp", p.Addr(), proxyPatience)
				if err != nil {
					if !isConnReset(err) {
						t.Errorf("client %d round %d: dial: %v", i, j, err)
						return
					}
					// Accepted and cut before the dial returned.
					mu.Lock()
					dialed++
					mu.Unlock()
					continue
				}
				c.SetDeadline(time.Now().Add(proxyPatience))
				err = echoRoundTrip(c, []byte("racing a cut"))
				c.Close()
				mu.Lock()
				dialed++
				if err == nil {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	stop := make(chan struct{})
	cutTotal := 0
	survived.Add(1)
	go func() {
		defer survived.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			cutTotal += p.Cut()
			time.Sleep(time.Millisecond)
		}
	}()
	dials.Wait()
	close(stop)
	survived.Wait()

	proxyWaitFor(t, "the proxy to accept every connection dialed and close them all", func() bool {
		s := p.Stats()
		return s.Accepted == dialed && s.Open == 0
	})
	if s := p.Stats(); s.Cut != cutTotal {
		t.Errorf("Stats().Cut = %d, but the calls of Cut returned %d in all", s.Cut, cutTotal)
	}
	t.Logf("%d connections, %d round trips completed, %d connections cut", dialed, ok, cutTotal)
	if err := echoRoundTrip(dialTCP(t, p.Addr()), []byte("after the race")); err != nil {
		t.Fatalf("a new connection after the race: %v", err)
	}
}

// TestProxyPartition checks that a partition stalls open and new connections without losing
// a byte, and that Heal delivers everything held, in order.
func TestProxyPartition(t *testing.T) {
	e := startEcho(t)
	p := StartProxy(t, e.addr())
	open := dialTCP(t, p.Addr())
	if err := echoRoundTrip(open, []byte("before")); err != nil {
		t.Fatalf("round trip before the partition: %v", err)
	}

	p.Partition()
	// A round trip on the open connection stalls: the reply does not come.
	if _, err := open.Write([]byte("held")); err != nil {
		t.Fatalf("write during the partition: %v", err)
	}
	expectStalled(t, open, "the open connection")
	// A new connection is accepted, but not connected upstream.
	pending := dialTCP(t, p.Addr())
	if _, err := pending.Write([]byte("pending")); err != nil {
		t.Fatalf("write on a new connection during the partition: %v", err)
	}
	proxyWaitFor(t, "the proxy to accept the connection dialed during the partition", func() bool { return p.Stats().Accepted == 2 })
	expectStalled(t, pending, "a new connection")
	if got := e.connections(); got != 1 {
		t.Errorf("the upstream accepted %d connections during the partition, want 1 (the one from before)", got)
	}
	// More than every buffer on the way holds: the sender has to wait for Heal.
	big := randomBytes(1, size(4<<20, 16<<20))
	sent := sendAndCloseWrite(open, big)
	time.Sleep(time.Duration(size(0, 10)) * time.Second) // the full run holds a long partition
	if s := p.Stats(); s.Open != 2 {
		t.Errorf("stats during the partition %+v, want 2 open", s)
	}

	p.Heal()
	want := append([]byte("held"), big...)
	if err := extendDeadlines(open, pending); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(open)
	if err != nil {
		t.Fatalf("the open connection after Heal: read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the open connection after Heal: got %d bytes, want the %d held (first difference at %d)", len(got), len(want), firstDifference(got, want))
	}
	if err := <-sent; err != nil {
		t.Errorf("the open connection: sending during the partition: %v", err)
	}
	reply := make([]byte, len("pending"))
	if _, err := io.ReadFull(pending, reply); err != nil || string(reply) != "pending" {
		t.Errorf("the connection dialed during the partition, after Heal: read %q, %v; want %q", reply, err, "pending")
	}
	if err := echoRoundTrip(dialTCP(t, p.Addr()), []byte("healed")); err != nil {
		t.Errorf("a new connection after Heal: %v", err)
	}
}

// expectStalled checks that nothing arrives on c for a while: with a partition in place,
// nothing ever would. It leaves c without a read deadline.
func expectStalled(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || !isDeadlineExceeded(err) {
		t.Errorf("%s during the partition: read %d bytes, error %v; want nothing until the deadline", what, n, err)
	}
	c.SetReadDeadline(time.Time{})
}

// extendDeadlines gives every connection proxyPatience from now.
func extendDeadlines(conns ...net.Conn) error {
	for _, c := range conns {
		if err := c.SetDeadline(time.Now().Add(proxyPatience)); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
	}
	return nil
}

// TestProxyCutWhilePartitioned checks that Cut also closes the connections waiting for Heal.
func TestProxyCutWhilePartitioned(t *testing.T) {
	e := startEcho(t)
	p := StartProxy(t, e.addr())
	open := dialTCP(t, p.Addr())
	if err := echoRoundTrip(open, []byte("before")); err != nil {
		t.Fatalf("round trip before the partition: %v", err)
	}
	p.Partition()
	pending := dialTCP(t, p.Addr())
	proxyWaitFor(t, "the proxy to accept the connection dialed during the partition", func() bool { return p.Stats().Accepted == 2 })
	if n := p.Cut(); n != 2 {
		t.Fatalf("Cut() during the partition = %d, want 2 (one open, one waiting for Heal)", n)
	}
	for name, c := range map[string]net.Conn{"open": open, "pending": pending} {
		n, err := c.Read(make([]byte, 1))
		if n != 0 || !isConnReset(err) {
			t.Errorf("the %s connection after the cut: read %d bytes, error %v; want a connection reset", name, n, err)
		}
	}
	p.Heal()
	if err := echoRoundTrip(dialTCP(t, p.Addr()), []byte("healed")); err != nil {
		t.Fatalf("a new connection after Heal: %v", err)
	}
	if s := p.Stats(); s != (ProxyStats{Accepted: 3, Cut: 2, Open: 1}) {
		t.Errorf("stats %+v, want 3 accepted, 2 cut, 1 open", s)
	}
}

// TestProxyCloseLeavesNoGoroutines closes a proxy with connections in several states
// (flowing, a chunk waiting out a latency, bytes held by a partition, waiting for Heal)
// through t.Cleanup, and checks that their clients see a reset and that no goroutine is left.
func TestProxyCloseLeavesNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// dialOut dials a connection that outlives the subtest, so that its reads show what the
	// proxy's cleanup did to it.
	dialOut := func(t *testing.T, addr string) *net.TCPConn {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, proxyPatience)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		c.SetDeadline(time.Now().Add(proxyPatience))
		conns = append(conns, c)
		return c.(*net.TCPConn)
	}
	t.Run("proxy", func(t *testing.T) {
		e := startEcho(t)
		p := StartProxy(t, e.addr())
		flowing := dialOut(t, p.Addr())
		if err := echoRoundTrip(flowing, []byte("flowing")); err != nil {
			t.Fatal(err)
		}
		held := dialOut(t, p.Addr())
		if err := echoRoundTrip(held, []byte("before")); err != nil {
			t.Fatal(err)
		}
		p.SetLatency(time.Hour)
		if _, err := flowing.Write([]byte("due in an hour")); err != nil {
			t.Fatal(err)
		}
		p.Partition()
		sendAndCloseWrite(held, randomBytes(2, 4<<20)) // ends in an error once the proxy resets held
		dialOut(t, p.Addr())                           // waits for Heal
		proxyWaitFor(t, "the proxy to accept every connection", func() bool { return p.Stats().Accepted == 3 })
	})
	if t.Failed() {
		return
	}
	for i, c := range conns {
		n, err := c.Read(make([]byte, 1))
		if n != 0 || !isConnReset(err) {
			t.Errorf("connection %d after the proxy closed: read %d bytes, error %v; want a connection reset", i, n, err)
		}
	}
	goleak.VerifyNone(t, before)
}

// TestProxyPostgres puts the proxy in front of the PostgreSQL server: queries work through
// it, a cut mid-statement fails that statement and leaves the connection unusable, and a new
// connection works.
func TestProxyPostgres(t *testing.T) {
	dsn := dbtest.DSN(t, dbtest.Postgres)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %s: %v", dbtest.Postgres.Env, err)
	}
	p := StartProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	host, port, _ := net.SplitHostPort(p.Addr())
	portN, _ := strconv.Atoi(port)
	proxied := cfg.Copy()
	proxied.Host, proxied.Port, proxied.Fallbacks = host, uint16(portN), nil
	ctx, cancel := context.WithTimeout(context.Background(), proxyPatience)
	defer cancel()

	connect := func() *pgx.Conn {
		t.Helper()
		c, err := pgx.ConnectConfig(ctx, proxied)
		if err != nil {
			t.Fatalf("connect through the proxy: %v", err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	selectOne := func(c *pgx.Conn) error {
		var n int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("SELECT 1 returned %d", n)
		}
		return nil
	}

	cut := connect()
	if err := selectOne(cut); err != nil {
		t.Fatalf("a query through the proxy: %v", err)
	}

	// Cut while the server runs a statement, seen from a direct connection.
	direct, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect directly: %v", err)
	}
	defer direct.Close(context.Background())
	pid := cut.PgConn().PID()
	defer direct.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid) // end the orphaned statement
	running := make(chan error, 1)
	go func() {
		_, err := cut.Exec(ctx, "SELECT pg_sleep(60)")
		running <- err
	}()
	proxyWaitFor(t, "the statement to run on the server", func() bool {
		var active bool
		err := direct.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%')", pid).Scan(&active)
		if err != nil {
			t.Fatalf("pg_stat_activity: %v", err)
		}
		return active
	})
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut() = %d, want 1", n)
	}
	if err := <-running; err == nil {
		t.Errorf("the statement cut mid-way succeeded")
	} else {
		t.Logf("the statement cut mid-way failed: %v", err)
	}
	if err := selectOne(cut); err == nil {
		t.Errorf("a query on the cut connection succeeded")
	}
	// On a broken connection pgx sends a cancel request on a connection of its own, through
	// the proxy too: let it end.
	select {
	case <-cut.PgConn().CleanupDone():
	case <-time.After(proxyPatience):
		t.Fatalf("pgx still cleaning up the cut connection after %v", proxyPatience)
	}
	proxyWaitFor(t, "every connection through the proxy to close", func() bool { return p.Stats().Open == 0 })
	accepted := p.Stats().Accepted

	if err := selectOne(connect()); err != nil {
		t.Fatalf("a query on a new connection after the cut: %v", err)
	}
	if s := p.Stats(); s != (ProxyStats{Accepted: accepted + 1, Cut: 1, Open: 1}) {
		t.Errorf("stats %+v, want %d accepted, 1 cut, 1 open", s, accepted+1)
	}
}
