package postgres

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Transient errors. Every unit is one statement in its own implicit transaction, so when the
// server reports an error the statement's writes were rolled back and running it again is
// safe. When the connection breaks after a statement was sent, its outcome is unknown: only
// reads are repeated then, writes return the error.

// retryDelays are the pauses before the second, third and fourth attempt after a transient
// failure.
var retryDelays = []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 250 * time.Millisecond}

// maxDeadConns bounds the attempts made at once, each on another pooled connection, when the
// last one found its connection dead. After a server restart every idle connection of the
// pool is dead, and each attempt uses up (and the pool destroys) one of them.
const maxDeadConns = 32

// idempotence says whether a unit may run again after a broken connection.
type idempotence bool

const (
	// idempotent units (reads, Migrate) may run again whatever happened to the last attempt.
	idempotent idempotence = true
	// once units are writes that must not run twice; they are repeated only when the server
	// reported their failure or they were never sent.
	once idempotence = false
)

// failure is what an error says about running the unit again.
type failure int

const (
	// permanent: return the error.
	permanent failure = iota
	// deadConn: the connection was dead (or died) and the unit may run again: at once, on
	// another connection.
	deadConn
	// transient: the unit may run again after a pause (a conflict, or no server to connect to).
	transient
)

// retry runs fn until it succeeds, fails with a permanent error, the attempts are spent or
// ctx ends.
func retry(ctx context.Context, kind idempotence, fn func(ctx context.Context) error) error {
	paused, dead := 0, 0
	for {
		err := fn(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		switch classify(err, kind) {
		case deadConn:
			if dead++; dead <= maxDeadConns {
				continue
			}
			return err
		case transient:
			if paused >= len(retryDelays) {
				return err
			}
			d := retryDelays[paused]
			paused++
			d += rand.N(d / 2) // jitter, so clients that failed together do not retry together
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		default:
			return err
		}
	}
}

// classify says whether err is worth another attempt of a unit of the given kind, and when.
func classify(err error, kind idempotence) failure {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return permanent
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return transient // no connection, so nothing was sent; the server may be starting
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server reported the failure, so the statement's implicit transaction was
		// rolled back (or never began).
		switch {
		case pgErr.Code == "40001", // serialization_failure
			pgErr.Code == "40P01", // deadlock_detected
			pgErr.Code == "57P03": // cannot_connect_now: the server is starting
			return transient
		case pgErr.Code == "57P01", // admin_shutdown: the server is stopping or ended the session
			pgErr.Code == "57P02",               // crash_shutdown
			strings.HasPrefix(pgErr.Code, "08"): // connection_exception
			return deadConn
		}
		return permanent
	}
	if pgconn.SafeToRetry(err) {
		return deadConn // nothing was sent
	}
	if kind != idempotent {
		return permanent // sent on a connection that broke: the outcome is unknown
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return deadConn
	}
	return permanent
}
