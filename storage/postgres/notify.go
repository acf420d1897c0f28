package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/puddle/v2"
)

// Pushed wake-ups. Statements that make a workflow runnable at once call pg_notify on the
// store's channel in the same statement, so the notification is sent when (and only when)
// the write commits. One listener per store holds a dedicated connection, taken from the pool
// and hijacked so that it does not count against the pool's size, runs LISTEN on it and fans
// every notification out to the channels Listen returned.

// Reconnection backoff of the listener.
const (
	listenBackoffMin = 50 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// listener is the store's one LISTEN connection and its subscribers.
type listener struct {
	s *Store

	mu     sync.Mutex
	subs   map[chan struct{}]struct{}
	cancel context.CancelFunc // stops the running listener goroutine; nil when none runs
	closed bool
	wg     sync.WaitGroup // the listener goroutines, for Close
}

// Listen returns a channel that receives a value, coalesced, whenever a workflow may have
// become runnable in any process using these tables: created, woken, retried, released,
// spawned, or finished to run again at once. Sends never block. The store keeps one
// listening connection for all its subscribers: the first Listen opens it (and returns its
// error if it cannot), and when it breaks it reconnects with backoff and then sends a value,
// since notifications may have been missed meanwhile. The channel is closed when ctx ends,
// when the store is closed, or when the listener fails for good: it finds the pool closed
// when it reconnects.
func (s *Store) Listen(ctx context.Context) (<-chan struct{}, error) {
	return s.listen.subscribe(ctx)
}

func (l *listener) subscribe(ctx context.Context) (<-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("postgres: listen: the store is closed")
	}
	if l.cancel == nil {
		// The first subscriber waits for the connection, so a broken setup is reported.
		conn, err := l.connect(ctx)
		if err != nil {
			return nil, fmt.Errorf("postgres: listen on %q: %w", l.s.channel, err)
		}
		runCtx, cancel := context.WithCancel(context.Background())
		l.cancel = cancel
		l.wg.Add(1)
		go l.run(runCtx, conn)
	}
	ch := make(chan struct{}, 1)
	if l.subs == nil {
		l.subs = map[chan struct{}]struct{}{}
	}
	l.subs[ch] = struct{}{}
	context.AfterFunc(ctx, func() { l.unsubscribe(ch) })
	return ch, nil
}

// unsubscribe closes ch and stops the listener when it was the last subscriber.
func (l *listener) unsubscribe(ch chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.subs[ch]; !ok {
		return // already closed by close or a failed listener
	}
	delete(l.subs, ch)
	close(ch)
	if len(l.subs) == 0 && l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
}

// broadcast sends a coalesced value to every subscriber without blocking.
func (l *listener) broadcast() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// stop closes every subscriber's channel and stops the listener; with final, for good.
func (l *listener) stop(final bool) {
	l.mu.Lock()
	for ch := range l.subs {
		close(ch)
	}
	l.subs = nil
	if l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
	if final {
		l.closed = true
	}
	l.mu.Unlock()
}

// close stops the listener for good and waits for its goroutine.
func (l *listener) close() {
	l.stop(true)
	l.wg.Wait()
}

// connect takes a connection out of the pool and listens on the store's channel with it.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	pc, err := l.s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := pc.Hijack()
	if _, err := conn.Exec(ctx, `LISTEN "`+l.s.channel+`"`); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

// run waits for notifications on conn until ctx ends, reconnecting when the connection
// breaks. It ends for good, closing the subscribers' channels, when the pool is closed.
func (l *listener) run(ctx context.Context, conn *pgx.Conn) {
	defer l.wg.Done()
	backoff := listenBackoffMin
	for {
		if conn == nil {
			var err error
			conn, err = l.connect(ctx)
			switch {
			case ctx.Err() != nil:
				if conn != nil {
					closeConn(conn)
				}
				return
			case errors.Is(err, puddle.ErrClosedPool):
				l.stop(false)
				return
			case err != nil:
				t := time.NewTimer(backoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				backoff = min(2*backoff, listenBackoffMax)
				continue
			}
			backoff = listenBackoffMin
			l.broadcast() // notifications sent while we were away are lost: look anyway
		}
		if _, err := conn.WaitForNotification(ctx); err != nil {
			closeConn(conn)
			conn = nil
			if ctx.Err() != nil {
				return
			}
			continue
		}
		l.broadcast()
	}
}

// closeConn closes a listening connection, bounded in time: it may already be broken.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
