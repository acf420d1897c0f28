package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// terminate ends every server session of the pool tagged with app and returns how many.
func terminate(t *testing.T, app string) int {
	t.Helper()
	var n int
	require.NoError(t, testPool(t).QueryRow(t.Context(),
		`SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) AS t`, app).Scan(&n))
	return n
}

// TestRecoversFromTerminatedSessions: when the server ends every session of the pool (a
// restart, a failover, an administrator), the next calls (reads and writes) succeed on new
// connections: the failed attempt was never executed, so the store runs it again.
func TestRecoversFromTerminatedSessions(t *testing.T) {
	t.Parallel()
	var b [4]byte
	_, _ = rand.Read(b[:])
	app := "chrono_recover_" + hex.EncodeToString(b[:])
	pool := ownPool(t, 4, func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["application_name"] = app })
	s := newStore(t, pool)
	ctx := t.Context()
	now := time.Now()

	// Fill the pool with open sessions, then kill them all between each call.
	warm := func() {
		conns := make([]*pgxpool.Conn, 4)
		for i := range conns {
			c, err := pool.Acquire(ctx)
			require.NoError(t, err)
			conns[i] = c
		}
		for _, c := range conns {
			c.Release()
		}
		require.GreaterOrEqual(t, terminate(t, app), 1)
	}

	warm()
	w, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "recover", Key: "k", Now: now})
	require.NoError(t, err, "CreateWorkflow after the sessions ended")
	require.True(t, created)
	warm()
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: now})
	require.NoError(t, err, "Claim after the sessions ended")
	require.Len(t, got, 1)
	warm()
	require.NoError(t, s.SaveSteps(ctx, got[0].Lease(), storage.Commit{Steps: []storage.Step{{Name: "a", State: storage.StepCompleted, Attempts: 1}}, Now: now}), "SaveSteps after the sessions ended")
	warm()
	_, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err, "Load after the sessions ended")
	require.Len(t, steps, 1)
	warm()
	require.NoError(t, s.FinishRun(ctx, got[0].Lease(), storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted}), "FinishRun after the sessions ended")
}

// TestTransientClassification: which failures a unit is repeated after.
func TestTransientClassification(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err         error
		write, read failure
	}{
		{&pgconn.PgError{Code: "40001"}, transient, transient},
		{&pgconn.PgError{Code: "40P01"}, transient, transient},
		{&pgconn.PgError{Code: "57P03"}, transient, transient},
		{&pgconn.PgError{Code: "57P01"}, deadConn, deadConn},
		{&pgconn.PgError{Code: "08006"}, deadConn, deadConn},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "40001"}), transient, transient},
		{&pgconn.PgError{Code: "23505"}, permanent, permanent}, // unique violation
		{&pgconn.PgError{Code: "42P01"}, permanent, permanent}, // undefined table
		{io.ErrUnexpectedEOF, permanent, deadConn},             // broken after sending: outcome unknown
		{context.Canceled, permanent, permanent},
		{context.DeadlineExceeded, permanent, permanent},
		{errors.New("something else"), permanent, permanent},
	} {
		require.Equal(t, tc.write, classify(tc.err, once), "write after %v", tc.err)
		require.Equal(t, tc.read, classify(tc.err, idempotent), "read after %v", tc.err)
	}
}

// TestRetryGivesUp: a transient failure that persists is returned after a few attempts, and
// a context that ends stops the attempts.
func TestRetryGivesUp(t *testing.T) {
	t.Parallel()
	calls := 0
	err := retry(t.Context(), once, func(context.Context) error {
		calls++
		return &pgconn.PgError{Code: "40P01"}
	})
	require.Error(t, err)
	require.Equal(t, len(retryDelays)+1, calls, "a conflict is tried again after pauses, a few times")

	calls = 0
	err = retry(t.Context(), once, func(context.Context) error {
		calls++
		return &pgconn.PgError{Code: "57P01"}
	})
	require.Error(t, err)
	require.Equal(t, maxDeadConns+1, calls, "a dead connection is replaced at once, a bounded number of times")

	calls = 0
	err = retry(t.Context(), once, func(context.Context) error {
		calls++
		return &pgconn.PgError{Code: "23505"}
	})
	require.Error(t, err)
	require.Equal(t, 1, calls, "a permanent error is not repeated")

	ctx, cancel := context.WithCancel(t.Context())
	calls = 0
	err = retry(ctx, once, func(context.Context) error {
		calls++
		cancel()
		return &pgconn.PgError{Code: "40001"}
	})
	require.Error(t, err)
	require.Equal(t, 1, calls, "an ended context stops the attempts")
}

// TestWorkerSurvivesTerminatedSessions: a worker whose every database session is ended (as by
// a server restart) keeps working: its next claims and writes run on new connections and
// its listener reconnects.
func TestWorkerSurvivesTerminatedSessions(t *testing.T) {
	t.Parallel()
	var b [4]byte
	_, _ = rand.Read(b[:])
	app := "chrono_worker_" + hex.EncodeToString(b[:])
	pool := ownPool(t, 4, func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["application_name"] = app })
	s := newStore(t, pool)
	wf := sdk.New("survivor", func(c *sdk.Context, in int) (int, error) {
		return sdk.Step(c, "double", func(context.Context) (int, error) { return 2 * in, nil })
	})
	eng, err := sdk.NewEngine(s, sdk.WithWorkflows(wf))
	require.NoError(t, err)
	worker, err := dispatch.New(eng, dispatch.PollInterval(5*time.Millisecond, 100*time.Millisecond))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { require.NoError(t, worker.Run(ctx)) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	for i := range 3 {
		eventually(t, 10*time.Second, func() bool { return len(listenerPIDs(t, s)) == 1 }, "the worker listens")
		h, err := wf.Start(t.Context(), eng, fmt.Sprint(i), i)
		require.NoError(t, err)
		rctx, rcancel := context.WithTimeout(t.Context(), 30*time.Second)
		out, err := h.Result(rctx)
		rcancel()
		require.NoError(t, err, "workflow started after %d rounds of ended sessions", i)
		require.Equal(t, 2*i, out)
		require.GreaterOrEqual(t, terminate(t, app), 1, "sessions to end")
	}
}
