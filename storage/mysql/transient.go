package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// Server error numbers the backend acts on.
const (
	erServerShutdown    = 1053 // the server is shutting down
	erBadDB             = 1049 // unknown database
	erDupEntry          = 1062 // duplicate key
	erDupFieldName      = 1060 // duplicate column name (ALTER TABLE ... ADD COLUMN)
	erDupKeyName        = 1061 // duplicate key name (ALTER TABLE ... ADD INDEX)
	erNoSuchTable       = 1146 // table does not exist
	erLockWaitTimeout   = 1205 // innodb_lock_wait_timeout passed; the statement was rolled back
	erLockDeadlock      = 1213 // deadlock; the whole transaction was rolled back
	erConnectionKilled  = 1927 // MariaDB: the connection was killed
	erClientIdleTimeout = 4031 // MySQL 8: the server closed an idle connection
)

// safety says whether a unit may run again after a failure whose outcome is unknown (the
// connection broke while a statement or COMMIT was on the wire).
type safety int

const (
	// idempotent: running the unit again is harmless whatever happened the first time:
	// reads, and writes whose second application changes nothing.
	idempotent safety = iota
	// once: the unit is retried only when the failure proves it changed nothing (a deadlock,
	// a lock wait timeout, a connection that failed before anything was sent).
	once
)

// Retry budget for transient failures: a few attempts with a short, jittered, growing pause,
// so deadlocks and a dropped pooled connection are absorbed, while an unreachable server is
// reported quickly to the caller (a worker backs off and tries again later).
const (
	maxAttempts  = 5
	firstBackoff = 5 * time.Millisecond
	// maxDeadlockAttempts is larger: a deadlock proves the server rolled the unit back, and
	// under many concurrent claimers and finishers InnoDB picks victims often; giving up
	// would only move the retry to the worker's (slower) backoff.
	maxDeadlockAttempts = 20
	maxBackoff          = 100 * time.Millisecond
)

// retry runs fn until it succeeds, fails for good, or the attempts are spent. Transactions
// (see inTx) are idempotent units: a failure before COMMIT leaves nothing behind, since the
// server rolls back the transaction of a lost connection.
func (s *Store) retry(ctx context.Context, safe safety, fn func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || attempt >= attempts(err) || ctx.Err() != nil || !transient(err, safe) {
			return err
		}
		if pause(ctx, attempt) != nil {
			return err
		}
	}
}

// attempts is the retry budget for a unit whose last attempt failed with err: larger for a
// deadlock. Every retry loop of the package (retry, and Claim's own) asks it, so none gives up
// on a deadlock sooner than the others.
func attempts(err error) int {
	if isDeadlock(err) {
		return maxDeadlockAttempts
	}
	return maxAttempts
}

// isDeadlock reports whether err is InnoDB's deadlock error (the transaction was rolled back).
func isDeadlock(err error) bool {
	var my *gomysql.MySQLError
	return errors.As(err, &my) && my.Number == erLockDeadlock
}

// errVanished: a row one statement found was gone by the next (deleted by cleanup); the unit
// runs again from the start.
var errVanished = errors.New("mysql: the row changed between two statements")

// commitError marks a COMMIT that was sent but whose reply was lost: whether the transaction
// was applied is unknown, so it is not retried.
type commitError struct{ err error }

func (e commitError) Error() string { return "commit: " + e.err.Error() }
func (e commitError) Unwrap() error { return e.err }

// transient reports whether err is worth another attempt of a unit of the given safety.
func transient(err error, safe safety) bool {
	var ce commitError
	if errors.As(err, &ce) {
		return false
	}
	if errors.Is(err, errVanished) {
		return true
	}
	var my *gomysql.MySQLError
	if errors.As(err, &my) {
		switch my.Number {
		case erLockDeadlock, erLockWaitTimeout:
			return true // rolled back by the server
		case erServerShutdown, erConnectionKilled, erClientIdleTimeout:
			return safe == idempotent
		}
		return false
	}
	if errors.Is(err, driver.ErrBadConn) {
		return true // database/sql returns it only when nothing was sent
	}
	if errors.Is(err, gomysql.ErrInvalidConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return safe == idempotent
	}
	var ne net.Error
	if errors.As(err, &ne) {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return true // nothing reached the server
		}
		return safe == idempotent
	}
	return false
}

// inTx runs fn in one transaction and commits it, retrying the whole transaction on
// transient failures before COMMIT. fn must be repeatable: it runs again from the start on a
// fresh transaction, so it must reset whatever it computes.
func (s *Store) inTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.retry(ctx, idempotent, func(ctx context.Context) error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(ctx, tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			if errors.Is(err, driver.ErrBadConn) {
				return err // COMMIT was never sent: the server rolls the transaction back
			}
			return commitError{err}
		}
		return nil
	})
}

// isDup reports whether err is a duplicate-key error.
func isDup(err error) bool {
	var my *gomysql.MySQLError
	return errors.As(err, &my) && my.Number == erDupEntry
}
