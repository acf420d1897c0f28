package mysql

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func TestTransientClassification(t *testing.T) {
	t.Parallel()
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	for _, tc := range []struct {
		name             string
		err              error
		idempotent, once bool
	}{
		{"deadlock", &gomysql.MySQLError{Number: erLockDeadlock}, true, true},
		{"lock wait timeout", fmt.Errorf("wrapped: %w", &gomysql.MySQLError{Number: erLockWaitTimeout}), true, true},
		{"bad conn (nothing sent)", driver.ErrBadConn, true, true},
		{"dial refused", dial, true, true},
		{"invalid conn (outcome unknown)", gomysql.ErrInvalidConn, true, false},
		{"read reset", read, true, false},
		{"unexpected EOF", io.ErrUnexpectedEOF, true, false},
		{"server shutdown", &gomysql.MySQLError{Number: erServerShutdown}, true, false},
		{"connection killed", &gomysql.MySQLError{Number: erConnectionKilled}, true, false},
		{"failed commit", commitError{gomysql.ErrInvalidConn}, false, false},
		{"duplicate key", &gomysql.MySQLError{Number: erDupEntry}, false, false},
		{"syntax", &gomysql.MySQLError{Number: 1064}, false, false},
		{"lease lost", storage.ErrLeaseLost, false, false},
		{"context", context.Canceled, false, false},
		{"row vanished", errVanished, true, true},
	} {
		require.Equal(t, tc.idempotent, transient(tc.err, idempotent), "%s, idempotent unit", tc.name)
		require.Equal(t, tc.once, transient(tc.err, once), "%s, unit that must not run twice", tc.name)
	}
}

// TestDroppedConnections breaks the connection at chosen statements of each unit, before the
// statement reaches the server or after it was applied, and checks that the unit either
// succeeds with its effect applied exactly once, or, where the outcome cannot be known (a
// COMMIT whose reply was lost), reports an error without applying anything twice.
func TestDroppedConnections(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	ctx := context.Background()

	// SaveSteps is fence, step upsert, error insert, workflow update, commit (1..5).
	commit := func(i int) storage.Commit {
		return storage.Commit{
			Steps:  []storage.Step{{Name: fmt.Sprint("s", i), State: storage.StepCompleted, Attempts: 1, Result: []byte("1"), CompletedAt: at(time.Second)}},
			Values: []byte(fmt.Sprintf(`{"i":%d}`, i)),
			Errors: []storage.ErrorRecord{{Step: fmt.Sprint("s", i), Attempt: 1, Message: fmt.Sprint("e", i)}},
			Now:    at(time.Second),
		}
	}
	for i, tc := range []struct {
		at    int64
		after bool
	}{{1, false}, {2, false}, {3, true}, {4, true}, {5, false}} {
		w := create(t, s, "save", fmt.Sprint(i), at(0))
		l := claimAll(t, s, at(0), 1, "save")[0].Lease()
		c.dropConnection(tc.at, tc.after)
		require.NoError(t, s.SaveSteps(ctx, l, commit(i)), "connection dropped at statement %d (after: %v)", tc.at, tc.after)
		loaded, steps, err := s.Load(ctx, w.ID)
		require.NoError(t, err)
		require.Len(t, steps, 1)
		require.JSONEq(t, fmt.Sprintf(`{"i":%d}`, i), string(loaded.Values))
		errs, err := s.ListErrors(ctx, w.ID, 0)
		require.NoError(t, err)
		require.Len(t, errs, 1, "the retried transaction wrote its error record once")
	}

	// A COMMIT whose reply is lost is not retried: the error says so, and nothing is doubled.
	w := create(t, s, "save", "lost-commit", at(0))
	l := claimAll(t, s, at(0), 1, "save")[0].Lease()
	c.dropConnection(5, true)
	err := s.SaveSteps(ctx, l, commit(9))
	require.Error(t, err, "a COMMIT with an unknown outcome is reported")
	require.ErrorIs(t, err, gomysql.ErrInvalidConn)
	errs, err := s.ListErrors(ctx, w.ID, 0)
	require.NoError(t, err)
	require.Len(t, errs, 1, "it was applied once")

	// Claim: lost before the UPDATE ran, it claims again; lost after it was applied, the
	// nonce finds the claimed rows instead of claiming a second batch.
	for _, after := range []bool{false, true} {
		name := fmt.Sprint("claim-", after)
		for i := range 3 {
			create(t, s, name, fmt.Sprint(i), at(time.Duration(i)))
		}
		c.dropConnection(1, after)
		got := claimAll(t, s, at(time.Second), 2, name)
		require.Len(t, got, 2, "after: %v", after)
		for _, w := range got {
			require.EqualValues(t, 1, w.LeaseToken, "claimed once")
		}
		rest := claimAll(t, s, at(time.Second), 10, name)
		require.Len(t, rest, 1, "the third workflow is still there to claim")
	}

	// Reads and an idempotent create.
	c.dropConnection(1, false)
	_, _, err = s.Load(ctx, w.ID)
	require.NoError(t, err)
	c.dropConnection(1, true)
	_, _, err = s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "create", Key: "k", Now: at(0)})
	require.NoError(t, err)
	all, err := s.ListWorkflows(ctx, storage.ListFilter{Name: "create"})
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Positive(t, c.drops.Load())
}

// TestKilledConnections: the server kills every connection of the pool (as a restart does);
// the next calls reconnect and succeed.
func TestKilledConnections(t *testing.T) {
	t.Parallel()
	cfg := serverConfig(t)
	cfg.Logger = &gomysql.NopLogger{} // the driver logs every killed connection it finds
	db := openDB(t, cfg, 4)
	s := newStore(t, db)
	ctx := context.Background()
	w := create(t, s, "job", "k", at(0))

	for round := range 3 {
		// Fill the pool with idle connections, then kill them all from another pool.
		conns := make([]int64, 4)
		var held []func()
		for i := range conns {
			conn, err := db.Conn(ctx)
			require.NoError(t, err)
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&conns[i]))
			held = append(held, func() { _ = conn.Close() })
		}
		for _, release := range held {
			release()
		}
		for _, id := range conns {
			_, err := sharedDB(t).ExecContext(ctx, fmt.Sprintf("KILL %d", id))
			require.NoError(t, err)
		}

		got, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err, "round %d: read after the kill", round)
		require.Equal(t, w.ID, got.ID)
		claimed := claimAll(t, s, at(time.Duration(round)*time.Hour), 1, "job")
		require.Len(t, claimed, 1, "round %d: claim after the kill", round)
		require.NoError(t, s.FinishRun(ctx, claimed[0].Lease(), storage.Finish{
			Commit: storage.Commit{Steps: []storage.Step{{Name: fmt.Sprint("r", round), State: storage.StepCompleted}}, Now: at(time.Duration(round) * time.Hour)},
			State:  storage.StateIdle, RunAt: at(time.Duration(round+1) * time.Hour),
		}), "round %d: finish after the kill", round)
	}
	_, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Len(t, steps, 3)
}

// outage plays a database server that goes away and comes back: while down, dials are
// refused, and going down breaks every open connection.
type outage struct {
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func (o *outage) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused (outage)")}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		o.conns = append(o.conns, c)
	}
	return c, err
}

func (o *outage) set(down bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down = down
	if down {
		for _, c := range o.conns {
			_ = c.Close()
		}
		o.conns = nil
	}
}

// TestWorkerSurvivesOutage: a worker whose database goes away keeps running (its claims fail
// and back off) and runs new work once the database is back.
func TestWorkerSurvivesOutage(t *testing.T) {
	t.Parallel()
	cfg := serverConfig(t)
	cfg.Logger = &gomysql.NopLogger{}
	var o outage
	cfg.DialFunc = o.dial
	s := newStore(t, sharedDB(t)) // migrated over a healthy pool
	flaky, err := New(openDB(t, cfg, 4), WithSchema(s.Schema()))
	require.NoError(t, err)

	wf := sdk.New("outage.job", func(c *sdk.Context, in int) (int, error) {
		return sdk.Step(c, "double", func(context.Context) (int, error) { return 2 * in, nil })
	})
	workerEng, err := sdk.NewEngine(flaky, sdk.WithWorkflows(wf), sdk.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	w, err := dispatch.New(workerEng, dispatch.PollInterval(5*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(runCtx) }()
	defer func() {
		stop()
		require.NoError(t, <-stopped)
	}()

	// Work is started from another process's engine, on a healthy pool.
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(wf))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(key string, in int) {
		t.Helper()
		h, err := wf.Start(ctx, eng, key, in)
		require.NoError(t, err)
		out, err := h.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 2*in, out)
	}
	run("before", 1)

	o.set(true)
	require.Eventually(t, func() bool { return w.Stats().ClaimErrors >= 3 }, 30*time.Second, 5*time.Millisecond,
		"the worker keeps claiming (and failing) while the database is away")
	o.set(false)
	run("after", 2)
}
