package storagetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// stall runs a new workflow named name into the stalled state on a failed "charge" step.
func (f *fixture) stall(name string) (storage.Workflow, storage.Lease) {
	f.t.Helper()
	w, l := f.start(name)
	f.finish(l, storage.Finish{
		Commit: storage.Commit{
			Steps:  []storage.Step{step("authorize", []byte("ok")), {Name: "charge", State: storage.StepFailed, Attempts: 5, LastError: "declined"}},
			Errors: []storage.ErrorRecord{{Step: "charge", Attempt: 5, Message: "declined"}},
			Now:    at(10 * time.Second),
		},
		State:   storage.StateStalled,
		Attempt: 2,
	})
	return w, l
}

// testRetryStalled: retrying a stalled workflow makes it idle and runnable at once, resets
// its attempt count and writes the retry's steps in place of the failed ones.
func testRetryStalled(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.stall("stalled")
	_, before := f.load(w.ID)
	now := at(time.Hour)
	got, err := f.s.Retry(f.ctx, w.ID, storage.RetryRequest{
		Steps: []storage.Step{
			{Name: "charge", State: storage.StepPending},
			{Name: "retry$1", State: storage.StepCompleted, Result: []byte(`{"by":"operator"}`)},
		},
		Now: now,
	})
	require.NoError(t, err)
	require.Equal(t, w.ID, got.ID)
	require.Equal(t, storage.StateIdle, got.State)
	requireTime(t, now, got.RunAt, "run at returned by Retry")
	require.Zero(t, got.Attempt, "attempt returned by Retry")

	stored, steps := f.load(w.ID)
	require.Equal(t, storage.StateIdle, stored.State)
	requireTime(t, now, stored.RunAt, "stored run at after Retry")
	require.Zero(t, stored.Attempt, "stored attempt after Retry")
	require.Len(t, steps, 3)
	was, reset := stepByName(before, "charge"), stepByName(steps, "charge")
	require.NotZero(t, was.ID)
	require.Equal(t, was.ID, reset.ID, "the reset step keeps its ID")
	require.Equal(t, storage.StepPending, reset.State, "the reset step is pending again")
	require.Equal(t, "retry$1", steps[2].Name, "the new step sorts last")

	lb := f.claimOne(w, "worker-b", now)
	require.Greater(t, lb.Token, l.Token)
}

// testRetryFailed: a failed workflow can be retried too, and is then no longer finished, so
// cleanup leaves it alone.
func testRetryFailed(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.runTo("failed", storage.StateFailed, at(time.Second))
	got, err := f.s.Retry(f.ctx, w.ID, storage.RetryRequest{Now: at(time.Minute)})
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, got.State)
	require.Zero(t, got.Attempt)

	res, err := f.s.DeleteFinished(f.ctx, storage.CleanupRequest{Before: at(24 * time.Hour)})
	require.NoError(t, err)
	require.Zero(t, res.Deleted, "a retried workflow is not finished")
	f.claimOne(w, "worker-a", at(time.Minute))
}

// testRetryWrongState: only stalled and failed workflows can be retried; others are left as
// they are.
func testRetryWrongState(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	for _, state := range []storage.State{storage.StateIdle, storage.StateRunning, storage.StateCompleted, storage.StateCancelled} {
		w := f.runTo("retry-"+string(state), state, at(time.Second))
		_, err := f.s.Retry(f.ctx, w.ID, storage.RetryRequest{Steps: []storage.Step{step("retry$1", nil)}, Now: at(time.Minute)})
		require.ErrorIs(t, err, storage.ErrWrongState, "Retry of a %s workflow", state)
		got, steps := f.load(w.ID)
		requireLeaseUnchanged(t, w, got)
		require.Empty(t, steps, "a refused Retry wrote steps")
	}
	_, err := f.s.Retry(f.ctx, 1_000_000_000, storage.RetryRequest{Now: at(time.Minute)})
	require.ErrorIs(t, err, storage.ErrNotFound, "Retry of an unknown workflow")
}

// testRetryConcurrent: of concurrent retries of one workflow exactly one wins, and only the
// winner's steps are written.
func testRetryConcurrent(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, _ := f.stall("contended")
	const n = 8
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = f.s.Retry(f.ctx, w.ID, storage.RetryRequest{
				Steps: []storage.Step{{Name: fmt.Sprintf("retry$%d", i), State: storage.StepCompleted}},
				Now:   at(time.Hour),
			})
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "retries %d and %d both won", winner, i)
			winner = i
			continue
		}
		require.True(t, errors.Is(err, storage.ErrWrongState), "losing retry %d: want ErrWrongState, got %v", i, err)
	}
	require.NotEqual(t, -1, winner, "no retry won")

	_, steps := f.load(w.ID)
	var retrySteps []string
	for _, s := range steps {
		if strings.HasPrefix(s.Name, "retry$") {
			retrySteps = append(retrySteps, s.Name)
		}
	}
	require.Equal(t, []string{fmt.Sprintf("retry$%d", winner)}, retrySteps, "only the winning retry writes steps")
}

func stepByName(steps []storage.Step, name string) storage.Step {
	for _, s := range steps {
		if s.Name == name {
			return s
		}
	}
	return storage.Step{}
}
