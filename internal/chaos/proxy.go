package chaos

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is an in-process TCP proxy that a test puts between its clients (worker processes)
// and a server (a database) to inject network faults: latency (SetLatency), connections cut
// mid-statement (Cut), and partitions (Partition, Heal).
//
// Each accepted connection is dialed to the upstream, then forwarded in both directions by
// a reader, which reads chunks and stamps them with the time they are due, and a writer,
// which writes them in order once they are due and no partition holds them. A reader holds
// at most a few chunks ahead of its writer, so a stalled writer stalls its reader and, past
// the sockets' buffers, the sender: held bytes wait, they are never dropped.
//
// A Proxy is safe for use by several goroutines.
type Proxy struct {
	t        testing.TB
	upstream string
	ln       net.Listener
	// ctx ends when the proxy is closed; every link's context derives from it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the accept loop and every goroutine of every link.
	wg sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	latency time.Duration
	// gate is closed while no partition holds: writers and pending dials wait on it.
	gate     chan struct{}
	links    map[*proxyLink]struct{}
	accepted int
	cut      int
}

// ProxyStats are a Proxy's counts of connections.
type ProxyStats struct {
	// Accepted and Cut are totals: the connections accepted, and those closed by Cut.
	Accepted int
	Cut      int
	// Open is how many connections are open now, including the ones accepted during a
	// partition and waiting for Heal to be connected upstream.
	Open int
}

// proxyLink is one client connection and, once dialed, its upstream connection.
type proxyLink struct {
	client net.Conn
	// ctx ends when the link is closed, normally or not.
	ctx    context.Context
	cancel context.CancelFunc
	// up and done are guarded by Proxy.mu. done is set once the link is closed (it is then
	// out of Proxy.links); up is the upstream connection, nil until dialed.
	up   net.Conn
	done bool
}

// proxyChunk is a piece of a stream held by the proxy: the bytes read and when they are due.
type proxyChunk struct {
	data []byte
	due  time.Time
}

const (
	// proxyChunkSize is the most a reader reads at once.
	proxyChunkSize = 32 << 10
	// proxyQueued is how many chunks a reader may read ahead of its writer.
	proxyQueued = 16
	// proxyDialTimeout bounds a dial of the upstream once no partition holds it.
	proxyDialTimeout = 30 * time.Second
)

// StartProxy listens on 127.0.0.1:0 and forwards every accepted connection to upstream
// (host:port). It is closed (listener and every connection) by t.Cleanup, which waits for
// all of its goroutines to end.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("chaos proxy to %s: listen: %v", upstream, err)
	}
	healed := make(chan struct{})
	close(healed)
	p := &Proxy{t: t, upstream: upstream, ln: ln, gate: healed, links: map[*proxyLink]struct{}{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr returns the address ("127.0.0.1:port") to dial instead of the upstream.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency sets the delay added to every chunk forwarded, in both directions, from when
// the proxy reads it; 0 means none. Chunks keep their order: a chunk never overtakes the
// one before it, even when the latency is lowered. It applies to chunks read from now on.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = max(d, 0)
}

// Cut closes every open connection at once, abruptly on both sides (SO_LINGER 0, so each
// peer sees a reset, not an orderly end), including connections still waiting for Heal.
// The proxy keeps accepting. Cut returns how many connections it closed.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	var cut []*proxyLink
	var ups []net.Conn
	for l := range p.links {
		cut = append(cut, l)
		ups = append(ups, p.detach(l))
	}
	p.cut += len(cut)
	p.mu.Unlock()
	for i, l := range cut {
		resetConns(l.client, ups[i])
	}
	return len(cut)
}

// Partition stops everything from crossing the proxy until Heal: open connections stall
// (their bytes are held, neither forwarded nor dropped), and new connections are accepted
// but not connected upstream. A chunk already being written when Partition is called may
// still arrive. Partitioning a partitioned proxy does nothing.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

// Heal ends a partition: the held bytes flow again, in order, and the connections accepted
// meanwhile are dialed upstream. A connection whose client gave up during the partition is
// dialed too, and closed once the bytes it had sent are forwarded; call Cut before Heal to
// drop such connections instead. Healing a proxy that is not partitioned does nothing.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// Stats returns the proxy's counts of connections.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ProxyStats{Accepted: p.accepted, Cut: p.cut, Open: len(p.links)}
}

// close stops accepting, closes every connection abruptly and waits for every goroutine.
func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	var open []*proxyLink
	var ups []net.Conn
	for l := range p.links {
		open = append(open, l)
		ups = append(ups, p.detach(l))
	}
	p.mu.Unlock()
	p.cancel()
	p.ln.Close()
	for i, l := range open {
		resetConns(l.client, ups[i])
	}
	p.wg.Wait()
}

// accept accepts connections until the listener is closed, and starts a link for each.
func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.t.Errorf("chaos proxy to %s: accept: %v", p.upstream, err)
			}
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			resetConns(c, nil)
			return
		}
		l := &proxyLink{client: c}
		l.ctx, l.cancel = context.WithCancel(p.ctx)
		p.links[l] = struct{}{}
		p.accepted++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// serve waits until no partition holds, dials the upstream for l and forwards both ways
// until both directions have ended. A direction that fails closes the link abruptly; when
// both end cleanly (each side closed its writing half), it is closed normally.
func (p *Proxy) serve(l *proxyLink) {
	defer p.wg.Done()
	if !p.wait(l.ctx) {
		return
	}
	d := net.Dialer{Timeout: proxyDialTimeout}
	up, err := d.DialContext(l.ctx, "tcp", p.upstream)
	if err != nil {
		if l.ctx.Err() == nil {
			p.t.Logf("chaos proxy: dial upstream %s: %v", p.upstream, err)
			p.end(l, true)
		}
		return
	}
	p.mu.Lock()
	if l.done {
		p.mu.Unlock()
		resetConns(up, nil) // cut or closed while dialing
		return
	}
	l.up = up
	p.mu.Unlock()

	errs := make(chan error, 2)
	p.wg.Add(2)
	go p.forward(l, l.client, up, errs)
	go p.forward(l, up, l.client, errs)
	for range 2 {
		if err := <-errs; err != nil {
			p.end(l, true)
			return
		}
	}
	p.end(l, false)
}

// forward copies src to dst for l, through a reader goroutine that stamps each chunk with
// its due time. It sends nil to errs when src ended and dst was told so (its writing half
// closed), or the error that ended the copy; an ended link is an error.
func (p *Proxy) forward(l *proxyLink, src, dst net.Conn, errs chan<- error) {
	defer p.wg.Done()
	chunks := make(chan proxyChunk, proxyQueued)
	readErr := make(chan error, 1)
	p.wg.Add(1)
	go p.read(l, src, chunks, readErr)
	errs <- p.write(l, dst, chunks, readErr)
}

// read reads src into chunks until src fails or ends, then closes chunks and sends to
// readErr nil for a clean end (EOF) or the error.
func (p *Proxy) read(l *proxyLink, src net.Conn, chunks chan<- proxyChunk, readErr chan<- error) {
	defer p.wg.Done()
	defer close(chunks)
	buf := make([]byte, proxyChunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			c := proxyChunk{data: bytes.Clone(buf[:n]), due: time.Now().Add(p.currentLatency())}
			select {
			case chunks <- c:
			case <-l.ctx.Done():
				readErr <- l.ctx.Err()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			readErr <- err
			return
		}
	}
}

// write writes every chunk to dst once it is due and no partition holds, in order. When
// chunks is closed after a clean end of its source, it closes dst's writing half so that
// the peer sees the end too.
func (p *Proxy) write(l *proxyLink, dst net.Conn, chunks <-chan proxyChunk, readErr <-chan error) error {
	for c := range chunks {
		if err := proxySleepUntil(l.ctx, c.due); err != nil {
			return err
		}
		if !p.wait(l.ctx) {
			return l.ctx.Err()
		}
		if _, err := dst.Write(c.data); err != nil {
			return err
		}
	}
	if err := <-readErr; err != nil {
		return err
	}
	if !p.wait(l.ctx) { // the end crosses no partition either
		return l.ctx.Err()
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// wait waits until no partition holds, and reports whether that happened before ctx ended.
func (p *Proxy) wait(ctx context.Context) bool {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	select {
	case <-gate:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// currentLatency returns the latency set by SetLatency.
func (p *Proxy) currentLatency() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latency
}

// end closes l, abruptly on both sides (resets) or, after both directions ended cleanly,
// normally, unless it is closed already.
func (p *Proxy) end(l *proxyLink, abrupt bool) {
	p.mu.Lock()
	if l.done {
		p.mu.Unlock()
		return
	}
	up := p.detach(l)
	p.mu.Unlock()
	if abrupt {
		resetConns(l.client, up)
		return
	}
	l.client.Close()
	up.Close()
}

// detach marks l closed, removes it from the open links, ends its context and returns its
// upstream connection (nil if not dialed yet). The caller holds p.mu and closes the
// connections after releasing it.
func (p *Proxy) detach(l *proxyLink) net.Conn {
	l.done = true
	delete(p.links, l)
	l.cancel()
	return l.up
}

// resetConns closes the connections given (up may be nil) abruptly: with SO_LINGER 0 a TCP
// connection's close sends a reset, and the bytes not yet sent are discarded.
func resetConns(client, up net.Conn) {
	for _, c := range []net.Conn{client, up} {
		if c == nil {
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// proxySleepUntil waits until t, or returns ctx's error if ctx ends first.
func proxySleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
