package bolt

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// base is an arbitrary instant with nanoseconds, so precision loss would show.
var base = time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chrono.db")
	s, err := Open(path, WithNoSync())
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	setClock(s, base)
	return s, path
}

// setClock stops s's own clock, by which its leases expire, at t: the tests move it as they
// move their requests' times. Call it only while no other goroutine uses s.
func setClock(s *Store, t time.Time) { s.clock = func() time.Time { return t } }

// newStore opens a store in a temporary file, its lease clock stopped at base.
func newStore(t testing.TB) *Store {
	s, _ := openTemp(t)
	return s
}

func create(t testing.TB, s *Store, name, key string, runAt time.Time) storage.Workflow {
	t.Helper()
	w, created, err := s.CreateWorkflow(context.Background(), storage.NewWorkflow{Name: name, Key: key, Input: []byte(`"in"`), RunAt: runAt, Now: base})
	require.NoError(t, err)
	require.True(t, created)
	return w
}

func claimOne(t testing.TB, s *Store, now time.Time, ttl time.Duration) storage.Workflow {
	t.Helper()
	got, err := s.Claim(context.Background(), storage.ClaimRequest{Owner: "w1", Limit: 1, TTL: ttl, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 1)
	return got[0]
}

// dump returns every key and value of every bucket, to prove that nothing was written.
func dump(t testing.TB, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			out[string(name)+"/$seq"] = fmt.Sprint(b.Sequence())
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			})
		})
	}))
	return out
}

// checkIndexes rebuilds every index from the workflow rows and compares it with the stored one.
func checkIndexes(t testing.TB, s *Store) {
	t.Helper()
	indexes := []string{"keys", "runnable", "states", "finished", "children", "flowrunnable", "flowdue", "flowrunning", "flowcount"}
	want, got := map[string]map[string]string{}, map[string]map[string]string{}
	for _, name := range indexes {
		want[name], got[name] = map[string]string{}, map[string]string{}
	}
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		err := tx.Bucket(bucketWorkflows).ForEach(func(k, v []byte) error {
			r, err := decodeWorkflow(v)
			if err != nil {
				return err
			}
			want["keys"][string(nameKey(r.Name, r.Key))] = string(idKey(r.ID))
			want["states"][string(stateKey(r.State, r.ID))] = ""
			switch {
			case runnable(r) && r.Flow == "":
				want["runnable"][string(timeIDKey(r.RunAt, r.ID))] = r.Name
			case runnable(r):
				want["flowrunnable"][string(flowPairPrefix(r.Name, r.Flow))+string(timeIDKey(r.RunAt, r.ID))] = ""
				want["flowdue"][string(timeIDKey(r.RunAt, r.ID))] = r.Name
			}
			if r.Flow != "" && r.State == storage.StateRunning {
				want["flowrunning"][r.Flow+"\x00"+string(timeIDKey(r.LeaseUntil, r.ID))] = ""
				n := int64(0)
				if v, ok := want["flowcount"][r.Flow]; ok {
					n = int64(beUint([]byte(v)))
				}
				want["flowcount"][r.Flow] = string(idKey(n + 1))
			}
			if finished(r) {
				want["finished"][string(timeIDKey(r.FinishedAt, r.ID))] = ""
			}
			if r.ParentStepID != 0 {
				want["children"][string(parentKey(r.ParentStepID, r.State, r.ID))] = ""
			}
			return nil
		})
		if err != nil {
			return err
		}
		for name := range got {
			err := tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
				got[name][string(k)] = string(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}))
	require.Equal(t, want, got)
}

func TestOpenLockedByAnotherStore(t *testing.T) {
	t.Parallel()
	_, path := openTemp(t)

	start := time.Now()
	s2, err := Open(path, WithTimeout(50*time.Millisecond))
	require.ErrorIs(t, err, storage.ErrLocked)
	require.Nil(t, s2)
	require.Contains(t, err.Error(), path)
	require.Contains(t, err.Error(), "another process")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestOpenAfterCloseReleasesLock(t *testing.T) {
	t.Parallel()
	s, path := openTemp(t)
	require.NoError(t, s.Close())
	s2, err := Open(path, WithTimeout(50*time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, s2.Close())
}

func TestCreateOrGet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	w, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "order.charge", Key: "o-1", Input: []byte("first"), Now: base})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, storage.StateIdle, w.State)
	require.Equal(t, base, w.RunAt, "zero RunAt means now")
	require.Equal(t, base, w.CreatedAt)
	require.Equal(t, base, w.UpdatedAt)
	require.Positive(t, w.ID)

	again, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "order.charge", Key: "o-1", Input: []byte("second"), Now: at(time.Hour)})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, w, again, "the existing row is returned unchanged")
	require.Equal(t, []byte("first"), again.Input)

	other, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "order.refund", Key: "o-1", RunAt: at(time.Minute), Now: base})
	require.NoError(t, err)
	require.True(t, created)
	require.NotEqual(t, w.ID, other.ID)
	require.Equal(t, at(time.Minute), other.RunAt)

	found, err := s.FindWorkflow(ctx, "order.charge", "o-1")
	require.NoError(t, err)
	require.Equal(t, w, found)
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, w, got)

	_, err = s.FindWorkflow(ctx, "order.charge", "o-2")
	require.ErrorIs(t, err, storage.ErrNotFound)
	_, err = s.GetWorkflow(ctx, 999)
	require.ErrorIs(t, err, storage.ErrNotFound)
	_, _, err = s.Load(ctx, 999)
	require.ErrorIs(t, err, storage.ErrNotFound)
	checkIndexes(t, s)
}

func TestCreateConcurrentOneRow(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	const n = 16
	ids := make(chan int64, n)
	created := make(chan bool, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			w, c, err := s.CreateWorkflow(context.Background(), storage.NewWorkflow{Name: "wf", Key: "k", Input: []byte{byte(i)}, Now: base})
			ids <- w.ID
			created <- c
			errs <- err
		}()
	}
	first := <-ids
	creates := 0
	for range n {
		require.NoError(t, <-errs)
		if <-created {
			creates++
		}
	}
	for range n - 1 {
		require.Equal(t, first, <-ids)
	}
	require.Equal(t, 1, creates)
}

func TestClaimOrderLeaseAndNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	late := create(t, s, "a", "late", at(3*time.Second))
	early := create(t, s, "b", "early", at(time.Second))
	mid := create(t, s, "a", "mid", at(2*time.Second))
	create(t, s, "a", "future", at(time.Hour))

	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w1", Limit: 10, TTL: time.Minute, Now: at(5 * time.Second)})
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, []int64{early.ID, mid.ID, late.ID}, []int64{got[0].ID, got[1].ID, got[2].ID}, "RunAt order")
	for _, w := range got {
		require.Equal(t, storage.StateRunning, w.State)
		require.Equal(t, "w1", w.LeaseOwner)
		require.Equal(t, int64(1), w.LeaseToken)
		require.Equal(t, at(time.Minute), w.LeaseUntil, "the store's clock (base) plus the TTL")
		require.Equal(t, at(5*time.Second+time.Minute), w.RunAt, "the claim's Now plus the TTL")
		stored, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, w, stored)
	}

	again, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 10, TTL: time.Minute, Now: at(6 * time.Second)})
	require.NoError(t, err)
	require.Empty(t, again, "valid leases are not claimed")
	again, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 10, TTL: time.Minute, Now: at(59 * time.Minute)})
	require.NoError(t, err)
	require.Empty(t, again, "valid leases are not claimed by a caller whose clock runs ahead")
	checkIndexes(t, s)

	// After expiry by the store's clock the rows come back by themselves; the name filter
	// selects among them.
	setClock(s, at(time.Minute))
	taken, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 10, Names: []string{"b"}, TTL: time.Minute, Now: at(2 * time.Minute)})
	require.NoError(t, err)
	require.Len(t, taken, 1)
	require.Equal(t, early.ID, taken[0].ID)
	require.Equal(t, int64(2), taken[0].LeaseToken, "tokens grow with every claim")
	require.Equal(t, "w2", taken[0].LeaseOwner)
	checkIndexes(t, s)
}

func TestClaimSkipsUnknownNamesBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	for i := range 1200 {
		create(t, s, "other", fmt.Sprint(i), at(time.Duration(i)))
	}
	target := create(t, s, "mine", "x", at(time.Hour))
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, Names: []string{"mine"}, TTL: time.Minute, Now: at(2 * time.Hour)})
	require.NoError(t, err)
	require.Empty(t, got, "the walk stops after 10*Limit+1000 entries")
	got, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 100, Names: []string{"mine"}, TTL: time.Minute, Now: at(2 * time.Hour)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, target.ID, got[0].ID)
}

func TestClaimExclusiveUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const total, workers = 600, 12
	for i := range total {
		create(t, s, "wf", fmt.Sprint(i), at(time.Duration(i)*time.Millisecond))
	}
	type result struct {
		ids []int64
		err error
	}
	results := make(chan result, workers)
	for w := range workers {
		go func() {
			var r result
			for {
				got, err := s.Claim(ctx, storage.ClaimRequest{Owner: fmt.Sprint("w", w), Limit: 7, TTL: time.Hour, Now: at(time.Minute)})
				if err != nil || len(got) == 0 {
					r.err = err
					break
				}
				for _, g := range got {
					r.ids = append(r.ids, g.ID)
				}
			}
			results <- r
		}()
	}
	seen := map[int64]bool{}
	for range workers {
		r := <-results
		require.NoError(t, r.err)
		for _, id := range r.ids {
			require.False(t, seen[id], "workflow %d claimed twice", id)
			seen[id] = true
		}
	}
	require.Len(t, seen, total)
	checkIndexes(t, s)
}

func TestFencing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	step := storage.Step{Name: "charge", State: storage.StepCompleted, Result: []byte("ok")}

	t.Run("expired lease cannot write", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		w := create(t, s, "wf", "k", base)
		c := claimOne(t, s, base, time.Minute)
		l := c.Lease()
		setClock(s, at(30*time.Second))
		require.NoError(t, s.Heartbeat(ctx, l, 90*time.Second, at(time.Hour)))
		hb, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, at(2*time.Minute), hb.LeaseUntil, "the store's clock plus the TTL")
		require.Equal(t, at(time.Hour+90*time.Second), hb.RunAt, "the heartbeat's now plus the TTL")

		setClock(s, at(3*time.Minute))
		before := dump(t, s)
		for _, late := range []time.Time{base, at(3 * time.Minute), at(-time.Hour)} {
			require.ErrorIs(t, s.Heartbeat(ctx, l, time.Minute, late), storage.ErrLeaseLost)
			require.ErrorIs(t, s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{step}, Now: late}), storage.ErrLeaseLost)
			require.ErrorIs(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: late}, State: storage.StateCompleted}), storage.ErrLeaseLost)
			require.ErrorIs(t, s.Release(ctx, l, late), storage.ErrLeaseLost)
		}
		require.Equal(t, before, dump(t, s), "nothing written")
		// At exactly LeaseUntil by the store's clock the lease is expired (and claimable); just
		// before, it holds, whatever the request's now.
		setClock(s, at(2*time.Minute))
		err = s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{step}, Now: base})
		require.ErrorIs(t, err, storage.ErrLeaseLost)
		require.ErrorContains(t, err, "expired")
		setClock(s, at(2*time.Minute-time.Nanosecond))
		require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{step}, Now: at(24 * time.Hour)}))
	})

	t.Run("takeover fences the old token", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		create(t, s, "wf", "k", base)
		first := leaseOf(claimOne(t, s, base, time.Minute))
		setClock(s, at(time.Minute))
		claimed, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 1, TTL: time.Minute, Now: at(2 * time.Minute)})
		require.NoError(t, err)
		require.Len(t, claimed, 1)
		second := claimed[0]
		require.Greater(t, second.LeaseToken, first.Token)

		now := at(2*time.Minute + time.Second)
		err = s.SaveSteps(ctx, first, storage.Commit{Steps: []storage.Step{step}, Now: now})
		require.ErrorIs(t, err, storage.ErrLeaseLost)
		require.ErrorContains(t, err, fmt.Sprintf(`workflow %d is now leased by "w2" (token %d)`, first.WorkflowID, second.LeaseToken))
		require.NoError(t, s.SaveSteps(ctx, second.Lease(), storage.Commit{Steps: []storage.Step{step}, Now: now}))
		require.NoError(t, s.FinishRun(ctx, second.Lease(), storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted}))
		// A released lease is not current any more, even before its old expiry.
		require.ErrorIs(t, s.Release(ctx, second.Lease(), now), storage.ErrLeaseLost)
		checkIndexes(t, s)
	})

	t.Run("cancel refuses writes", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		w := create(t, s, "wf", "k", base)
		l := leaseOf(claimOne(t, s, base, time.Minute))
		require.NoError(t, s.Cancel(ctx, w.ID, at(time.Second)))
		before := dump(t, s)
		now := at(2 * time.Second)
		require.ErrorIs(t, s.Heartbeat(ctx, l, time.Minute, now), storage.ErrCancelled)
		require.ErrorIs(t, s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{step}, Now: now}), storage.ErrCancelled)
		require.ErrorIs(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateIdle}), storage.ErrCancelled)
		require.ErrorIs(t, s.Release(ctx, l, now), storage.ErrCancelled)
		require.Equal(t, before, dump(t, s))
		got, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, storage.StateCancelled, got.State)
		require.True(t, got.RunAt.IsZero())
		require.Equal(t, at(time.Second), got.FinishedAt)
		require.ErrorIs(t, s.Cancel(ctx, w.ID, now), storage.ErrWrongState)
		checkIndexes(t, s)
	})

	t.Run("unknown workflow", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		err := s.SaveSteps(ctx, storage.Lease{WorkflowID: 42, Token: 1}, storage.Commit{Now: base})
		require.ErrorIs(t, err, storage.ErrLeaseLost)
		require.ErrorIs(t, err, storage.ErrNotFound)
	})
}

func TestSaveStepsAndLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	w := create(t, s, "wf", "k", base)
	other := create(t, s, "wf", "k2", base) // its steps must not leak into w's Load
	l := leaseOf(claimOne(t, s, base, time.Hour))
	require.Equal(t, w.ID, l.WorkflowID)
	lo := leaseOf(claimOne(t, s, base, time.Hour))
	require.Equal(t, other.ID, lo.WorkflowID)

	// "z" is recorded first, so it must come first although it sorts last by name.
	require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{
		Steps:  []storage.Step{{Name: "z", State: storage.StepPending, Attempts: 1, Meta: []byte("m")}},
		Values: []byte(`{"a":1}`),
		Errors: []storage.ErrorRecord{{Step: "z", Attempt: 1, Type: "*errors.errorString", Message: "boom"}},
		Now:    at(time.Second),
	}))
	require.NoError(t, s.SaveSteps(ctx, lo, storage.Commit{Steps: []storage.Step{{Name: "z", State: storage.StepPending}}, Now: at(time.Second)}))
	require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{
		Steps: []storage.Step{
			{Name: "a", State: storage.StepCompleted, Result: []byte("1")},
			{Name: "z", State: storage.StepCompleted, Attempts: 2, Result: []byte("2")},
		},
		Errors: []storage.ErrorRecord{{Step: "a", Message: "first"}, {Step: "a", Message: "second", CreatedAt: at(time.Millisecond)}},
		Now:    at(2 * time.Second),
	}))

	got, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, []byte(`{"a":1}`), got.Values, "nil Values keeps the stored ones")
	require.Equal(t, "second", got.LastError)
	require.Equal(t, at(2*time.Second), got.UpdatedAt)
	require.Len(t, steps, 2)
	z, a := steps[0], steps[1]
	require.Equal(t, "z", z.Name)
	require.Equal(t, "a", a.Name)
	require.Less(t, z.ID, a.ID)
	require.Equal(t, w.ID, z.WorkflowID)
	require.Equal(t, at(time.Second), z.CreatedAt, "replace keeps CreatedAt")
	require.Equal(t, at(2*time.Second), z.UpdatedAt)
	require.Equal(t, at(2*time.Second), z.CompletedAt, "completed without a time gets now")
	require.Equal(t, 2, z.Attempts)
	require.Equal(t, []byte("2"), z.Result)
	require.Nil(t, z.Meta, "replace writes the whole record")

	_, otherSteps, err := s.Load(ctx, other.ID)
	require.NoError(t, err)
	require.Len(t, otherSteps, 1)
	require.NotEqual(t, z.ID, otherSteps[0].ID)

	errs, err := s.ListErrors(ctx, w.ID, 0)
	require.NoError(t, err)
	require.Len(t, errs, 3)
	require.Equal(t, []string{"boom", "first", "second"}, []string{errs[0].Message, errs[1].Message, errs[2].Message})
	require.Equal(t, at(time.Second), errs[0].CreatedAt)
	require.Equal(t, at(time.Millisecond), errs[2].CreatedAt, "a given CreatedAt is kept")
	require.Equal(t, w.ID, errs[1].WorkflowID)
	require.Less(t, errs[0].ID, errs[1].ID)
	limited, err := s.ListErrors(ctx, w.ID, 2)
	require.NoError(t, err)
	require.Equal(t, errs[:2], limited)
	_, err = s.ListErrors(ctx, 999, 0)
	require.ErrorIs(t, err, storage.ErrNotFound)
}

func TestWakeDuringRunCoalescesIntoFinish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("earlier wake wins over the run's RunAt", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		w := create(t, s, "wf", "k", base)
		l := leaseOf(claimOne(t, s, base, time.Minute))

		woken, err := s.Wake(ctx, w.ID, at(10*time.Second))
		require.NoError(t, err)
		require.True(t, woken)
		woken, err = s.Wake(ctx, w.ID, at(20*time.Second))
		require.NoError(t, err)
		require.True(t, woken)
		running, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, at(time.Minute), running.RunAt, "a wake does not move a leased row")

		require.NoError(t, s.FinishRun(ctx, l, storage.Finish{
			Commit: storage.Commit{Now: at(5 * time.Second)},
			State:  storage.StateIdle,
			RunAt:  at(time.Hour),
			Wait:   storage.Wait{Kind: "sleep", Step: "sleep$nap"},
		}))
		got, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, storage.StateIdle, got.State)
		require.Equal(t, at(10*time.Second), got.RunAt)
		require.Equal(t, storage.Wait{Kind: "sleep", Step: "sleep$nap"}, got.Wait)
		require.Equal(t, "w1", got.LeaseOwner, "the owner of the last lease stays on record")
		require.True(t, got.LeaseUntil.IsZero(), "the lease is released")
		require.Equal(t, l.Token, got.LeaseToken, "the token is kept so it keeps growing")
		checkIndexes(t, s)

		// The wake was used up: the next run suspending on a signal is not woken again.
		l2 := claimOne(t, s, at(10*time.Second), time.Minute)
		require.Equal(t, l.Token+1, l2.LeaseToken)
		require.NoError(t, s.FinishRun(ctx, l2.Lease(), storage.Finish{Commit: storage.Commit{Now: at(11 * time.Second)}, State: storage.StateIdle}))
		got, err = s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.True(t, got.RunAt.IsZero())
		checkIndexes(t, s)
	})

	t.Run("signal wait woken during the run", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		w := create(t, s, "wf", "k", base)
		l := leaseOf(claimOne(t, s, base, time.Minute))
		_, err := s.Wake(ctx, w.ID, at(time.Second))
		require.NoError(t, err)
		require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: at(2 * time.Second)}, State: storage.StateIdle, Wait: storage.Wait{Kind: "signal"}}))
		got, err := s.GetWorkflow(ctx, w.ID)
		require.NoError(t, err)
		require.Equal(t, at(time.Second), got.RunAt, "the wake is not lost")
		again := claimOne(t, s, at(3*time.Second), time.Minute)
		require.Equal(t, w.ID, again.ID)
	})

	t.Run("wake idle, final and stalled", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		idle := create(t, s, "wf", "idle", at(time.Hour))
		woken, err := s.Wake(ctx, idle.ID, at(time.Minute))
		require.NoError(t, err)
		require.True(t, woken)
		woken, err = s.Wake(ctx, idle.ID, at(2*time.Minute))
		require.NoError(t, err)
		require.True(t, woken)
		got, err := s.GetWorkflow(ctx, idle.ID)
		require.NoError(t, err)
		require.Equal(t, at(time.Minute), got.RunAt, "wake-ups coalesce to the earliest")

		done := create(t, s, "wf", "done", base)
		stalled := create(t, s, "wf", "stalled", base)
		for _, c := range []struct {
			id    int64
			state storage.State
		}{{done.ID, storage.StateCompleted}, {stalled.ID, storage.StateStalled}} {
			l := claimOne(t, s, base, time.Minute)
			require.Equal(t, c.id, l.ID)
			require.NoError(t, s.FinishRun(ctx, l.Lease(), storage.Finish{Commit: storage.Commit{Now: base}, State: c.state, RunAt: at(time.Hour)}))
			before, err := s.GetWorkflow(ctx, c.id)
			require.NoError(t, err)
			require.True(t, before.RunAt.IsZero())
			woken, err := s.Wake(ctx, c.id, base)
			require.NoError(t, err)
			require.False(t, woken)
			after, err := s.GetWorkflow(ctx, c.id)
			require.NoError(t, err)
			require.Equal(t, before, after)
		}
		_, err = s.Wake(ctx, 999, base)
		require.ErrorIs(t, err, storage.ErrNotFound)
		checkIndexes(t, s)
	})
}

func TestFinishRunStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	for _, st := range []storage.State{storage.StateCompleted, storage.StateFailed, storage.StateStalled} {
		w := create(t, s, "wf", string(st), base)
		l := claimOne(t, s, base, time.Minute)
		require.Equal(t, w.ID, l.ID)
		now := at(time.Second)
		require.NoError(t, s.FinishRun(ctx, l.Lease(), storage.Finish{
			Commit:  storage.Commit{Now: now, Steps: []storage.Step{{Name: "s", State: storage.StepCompleted}}, Values: []byte(`{}`)},
			State:   st,
			Output:  []byte(`"out"`),
			Attempt: 3,
			RunAt:   at(time.Hour),
			Wait:    storage.Wait{Kind: "retry"},
		}))
		got, steps, err := s.Load(ctx, w.ID)
		require.NoError(t, err)
		require.Len(t, steps, 1)
		require.Equal(t, st, got.State)
		require.Equal(t, []byte(`"out"`), got.Output)
		require.Equal(t, []byte(`{}`), got.Values)
		require.Equal(t, 3, got.Attempt)
		require.True(t, got.RunAt.IsZero())
		require.Equal(t, storage.Wait{}, got.Wait)
		if st.Final() {
			require.Equal(t, now, got.FinishedAt)
		} else {
			require.True(t, got.FinishedAt.IsZero())
		}
	}
	checkIndexes(t, s)
}

func TestReleaseRetryCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	w := create(t, s, "wf", "k", base)
	l := claimOne(t, s, base, time.Minute)
	require.NoError(t, s.Release(ctx, l.Lease(), at(time.Second)))
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, got.State)
	require.Equal(t, at(time.Second), got.RunAt)
	require.Equal(t, "w1", got.LeaseOwner)
	require.True(t, got.LeaseUntil.IsZero())
	require.Equal(t, l.LeaseToken, got.LeaseToken)

	_, err = s.Retry(ctx, w.ID, storage.RetryRequest{Now: at(time.Second)})
	require.ErrorIs(t, err, storage.ErrWrongState)
	require.Contains(t, err.Error(), "idle")

	l = claimOne(t, s, at(time.Second), time.Minute)
	require.NoError(t, s.FinishRun(ctx, l.Lease(), storage.Finish{
		Commit:  storage.Commit{Now: at(2 * time.Second), Steps: []storage.Step{{Name: "pay", State: storage.StepFailed, Attempts: 3}}},
		State:   storage.StateFailed,
		Attempt: 10,
	}))
	_, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	payID := steps[0].ID

	retried, err := s.Retry(ctx, w.ID, storage.RetryRequest{
		Steps: []storage.Step{{Name: "retry$1", State: storage.StepCompleted}, {Name: "pay", State: storage.StepPending}},
		Now:   at(time.Minute),
	})
	require.NoError(t, err)
	require.Equal(t, storage.StateIdle, retried.State)
	require.Equal(t, at(time.Minute), retried.RunAt)
	require.Zero(t, retried.Attempt)
	require.True(t, retried.FinishedAt.IsZero())
	stored, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, retried, stored)
	require.Len(t, steps, 2)
	require.Equal(t, payID, steps[0].ID)
	require.Equal(t, storage.StepPending, steps[0].State)
	require.Equal(t, "retry$1", steps[1].Name)
	_, err = s.Retry(ctx, w.ID, storage.RetryRequest{Now: at(time.Minute)})
	require.ErrorIs(t, err, storage.ErrWrongState, "of two retries one wins")

	require.NoError(t, s.Cancel(ctx, w.ID, at(2*time.Minute)))
	_, err = s.Retry(ctx, w.ID, storage.RetryRequest{Now: at(3 * time.Minute)})
	require.ErrorIs(t, err, storage.ErrWrongState)
	require.ErrorIs(t, s.Cancel(ctx, 999, base), storage.ErrNotFound)
	_, err = s.Retry(ctx, 999, storage.RetryRequest{Now: base})
	require.ErrorIs(t, err, storage.ErrNotFound)
	checkIndexes(t, s)
}

func TestListWorkflows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var ids []int64
	for i := range 30 {
		name := []string{"a", "b", "c"}[i%3]
		ids = append(ids, create(t, s, name, fmt.Sprint(i), at(time.Duration(i)*time.Minute)).ID)
	}
	// Complete the first five claimed (ids[0..4]), cancel ids[5], leave ids[6..9] running.
	for i := range 10 {
		l := claimOne(t, s, at(time.Hour), time.Hour)
		require.Equal(t, ids[i], l.ID)
		if i < 5 {
			require.NoError(t, s.FinishRun(ctx, l.Lease(), storage.Finish{Commit: storage.Commit{Now: at(time.Hour)}, State: storage.StateCompleted}))
		}
	}
	require.NoError(t, s.Cancel(ctx, ids[5], at(time.Hour)))

	list := func(f storage.ListFilter) []int64 {
		t.Helper()
		ws, err := s.ListWorkflows(ctx, f)
		require.NoError(t, err)
		out := []int64{}
		for _, w := range ws {
			out = append(out, w.ID)
		}
		return out
	}
	require.Equal(t, ids, list(storage.ListFilter{}))
	require.Equal(t, ids[10:15], list(storage.ListFilter{AfterID: ids[9], Limit: 5}))
	require.Equal(t, []int64{ids[0], ids[3], ids[6], ids[9]}, list(storage.ListFilter{Name: "a", Limit: 4}))
	require.Equal(t, ids[:6], list(storage.ListFilter{States: []storage.State{storage.StateCancelled, storage.StateCompleted}}), "states merge in ID order")
	require.Equal(t, []int64{ids[3], ids[4], ids[5]}, list(storage.ListFilter{States: []storage.State{storage.StateCompleted, storage.StateCancelled, storage.StateCompleted}, AfterID: ids[2]}))
	require.Equal(t, []int64{ids[7], ids[8]}, list(storage.ListFilter{States: []storage.State{storage.StateRunning}, NotNames: []string{"a"}}))
	require.Equal(t, []int64{ids[10], ids[11], ids[12]}, list(storage.ListFilter{DueBy: at(12 * time.Minute)}), "DueBy skips rows without RunAt and leased rows due later")
	require.Len(t, list(storage.ListFilter{Limit: 5000}), 30)

	_, err := s.ListWorkflows(ctx, storage.ListFilter{States: []storage.State{"bogus"}})
	require.ErrorIs(t, err, storage.ErrInvalid)
}

func TestDeleteFinished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var done []int64
	for i := range 5 {
		w := create(t, s, "wf", fmt.Sprint(i), base)
		l := claimOne(t, s, base, time.Minute)
		require.NoError(t, s.FinishRun(ctx, l.Lease(), storage.Finish{
			Commit: storage.Commit{Now: at(time.Duration(i) * time.Second), Steps: []storage.Step{{Name: "s", State: storage.StepCompleted}}, Errors: []storage.ErrorRecord{{Message: "x"}}},
			State:  storage.StateCompleted,
		}))
		done = append(done, w.ID)
	}
	keep := create(t, s, "wf", "idle", at(time.Hour))

	n, err := s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(3 * time.Second), Limit: 2})
	require.NoError(t, err)
	require.Equal(t, 2, n.Deleted)
	n, err = s.DeleteFinished(ctx, storage.CleanupRequest{Before: at(3 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, 1, n.Deleted, "FinishedAt equal to Before is not before it")
	for i, id := range done {
		_, err := s.GetWorkflow(ctx, id)
		if i < 3 {
			require.ErrorIs(t, err, storage.ErrNotFound)
			_, err = s.FindWorkflow(ctx, "wf", fmt.Sprint(i))
			require.ErrorIs(t, err, storage.ErrNotFound)
		} else {
			require.NoError(t, err)
		}
	}
	_, err = s.GetWorkflow(ctx, keep.ID)
	require.NoError(t, err)
	checkIndexes(t, s)
	d := dump(t, s)
	for k := range d {
		for _, id := range done[:3] {
			if strings.HasPrefix(k, "steps/") || strings.HasPrefix(k, "errors/") {
				require.False(t, strings.HasPrefix(k[strings.IndexByte(k, '/')+1:], string(idKey(id))), "records of workflow %d remain", id)
			}
		}
	}
	// The key is free again.
	again := create(t, s, "wf", "0", base)
	require.Greater(t, again.ID, keep.ID)
}

func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	w := create(t, s, "wf", "k", base)
	l := leaseOf(claimOne(t, s, base, time.Hour))
	big := bytes.Repeat([]byte("x"), storage.MaxPayload+1)
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	goodStep := storage.Step{Name: "ok", State: storage.StepCompleted}

	cases := []struct {
		name string
		want error
		call func() error
	}{
		{"create empty name", storage.ErrInvalid, func() error {
			_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Key: "k", Now: base})
			return err
		}},
		{"create dollar name", storage.ErrInvalid, func() error {
			_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "a$b", Key: "k", Now: base})
			return err
		}},
		{"create control key", storage.ErrInvalid, func() error {
			_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "a", Key: "k\n", Now: base})
			return err
		}},
		{"create huge input", storage.ErrTooLarge, func() error {
			_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "a", Key: "k2", Input: big, Now: base})
			return err
		}},
		{"create without now", storage.ErrInvalid, func() error {
			_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "a", Key: "k3"})
			return err
		}},
		{"create unrepresentable run time", storage.ErrInvalid, func() error {
			_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "a", Key: "k4", RunAt: far, Now: base})
			return err
		}},
		{"claim without owner", storage.ErrInvalid, func() error {
			_, err := s.Claim(ctx, storage.ClaimRequest{Limit: 1, TTL: time.Minute, Now: at(time.Hour)})
			return err
		}},
		{"claim zero limit", storage.ErrInvalid, func() error {
			_, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", TTL: time.Minute, Now: at(time.Hour)})
			return err
		}},
		{"claim overflowing ttl", storage.ErrInvalid, func() error {
			_, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: 1<<63 - 1, Now: at(time.Hour)})
			return err
		}},
		{"save invalid step name", storage.ErrInvalid, func() error {
			return s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{goodStep, {Name: "", State: storage.StepCompleted}}, Now: base})
		}},
		{"save unknown step state", storage.ErrInvalid, func() error {
			return s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{goodStep, {Name: "x", State: "done"}}, Now: base})
		}},
		{"save huge result", storage.ErrTooLarge, func() error {
			return s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{goodStep, {Name: "x", State: storage.StepCompleted, Result: big}}, Now: base})
		}},
		{"save huge values", storage.ErrTooLarge, func() error {
			return s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{goodStep}, Values: big, Now: base})
		}},
		{"save huge error", storage.ErrTooLarge, func() error {
			return s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{goodStep}, Errors: []storage.ErrorRecord{{Message: string(big)}}, Now: base})
		}},
		{"save without now", storage.ErrInvalid, func() error {
			return s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{goodStep}})
		}},
		{"finish running", storage.ErrInvalid, func() error {
			return s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Steps: []storage.Step{goodStep}, Now: base}, State: storage.StateRunning})
		}},
		{"finish cancelled", storage.ErrInvalid, func() error {
			return s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: base}, State: storage.StateCancelled})
		}},
		{"finish huge output", storage.ErrTooLarge, func() error {
			return s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: base}, State: storage.StateCompleted, Output: big})
		}},
		{"heartbeat zero ttl", storage.ErrInvalid, func() error {
			return s.Heartbeat(ctx, l, 0, at(time.Second))
		}},
		{"heartbeat ttl over MaxLeaseTTL", storage.ErrInvalid, func() error {
			return s.Heartbeat(ctx, l, storage.MaxLeaseTTL+1, at(time.Second))
		}},
		{"release without now", storage.ErrInvalid, func() error {
			return s.Release(ctx, l, time.Time{})
		}},
		{"wake zero time", storage.ErrInvalid, func() error {
			_, err := s.Wake(ctx, w.ID, time.Time{})
			return err
		}},
		{"retry bad step", storage.ErrInvalid, func() error {
			_, err := s.Retry(ctx, w.ID, storage.RetryRequest{Steps: []storage.Step{{Name: "x\x00", State: storage.StepPending}}, Now: base})
			return err
		}},
		{"cancel without now", storage.ErrInvalid, func() error {
			return s.Cancel(ctx, w.ID, time.Time{})
		}},
		{"find bad key", storage.ErrInvalid, func() error {
			_, err := s.FindWorkflow(ctx, "wf", "")
			return err
		}},
		{"cleanup without cutoff", storage.ErrInvalid, func() error {
			_, err := s.DeleteFinished(ctx, storage.CleanupRequest{})
			return err
		}},
	}
	before := dump(t, s)
	for _, c := range cases {
		err := c.call()
		require.ErrorIs(t, err, c.want, c.name)
		require.Equal(t, before, dump(t, s), "%s wrote something", c.name)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chrono.db")
	s, err := Open(path)
	require.NoError(t, err)

	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "wf", Key: "k", Input: []byte("in"), TraceContext: []byte(`{"traceparent":"x"}`), Now: base})
	require.NoError(t, err)
	l, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: base})
	require.NoError(t, err)
	require.NoError(t, s.SaveSteps(ctx, l[0].Lease(), storage.Commit{
		Steps:  []storage.Step{{Name: "a", State: storage.StepCompleted, Result: []byte{}, Meta: []byte("m")}},
		Values: []byte(`{"v":1}`),
		Errors: []storage.ErrorRecord{{Step: "a", Message: "oops", Values: []byte("snap")}},
		Now:    at(time.Nanosecond),
	}))
	require.NoError(t, s.FinishRun(ctx, l[0].Lease(), storage.Finish{State: storage.StateIdle, RunAt: at(time.Hour), Commit: storage.Commit{Now: at(time.Nanosecond)}}))
	wantW, wantSteps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	wantErrs, err := s.ListErrors(ctx, w.ID, 0)
	require.NoError(t, err)
	before := dump(t, s)
	require.NoError(t, s.Close())

	s, err = Open(path)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.Equal(t, before, dump(t, s))
	gotW, gotSteps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, wantW, gotW)
	require.Equal(t, wantSteps, gotSteps)
	require.NotNil(t, gotSteps[0].Result, "an empty result stays empty, not nil")
	require.Nil(t, gotW.Output)
	gotErrs, err := s.ListErrors(ctx, w.ID, 0)
	require.NoError(t, err)
	require.Equal(t, wantErrs, gotErrs)

	// Sequences continue after the restart.
	l = []storage.Workflow{claimOne(t, s, at(time.Hour), time.Minute)}
	require.Greater(t, l[0].LeaseToken, wantW.LeaseToken)
	require.NoError(t, s.SaveSteps(ctx, l[0].Lease(), storage.Commit{Steps: []storage.Step{{Name: "b", State: storage.StepPending}}, Now: at(time.Hour)}))
	_, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Greater(t, steps[1].ID, steps[0].ID)
	w2 := create(t, s, "wf", "k2", base)
	require.Greater(t, w2.ID, w.ID)
	checkIndexes(t, s)
}

func TestTimesRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	zone := time.FixedZone("X", 3*3600)
	epoch := time.Unix(0, 0).In(zone)
	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "wf", Key: "k", RunAt: epoch, Now: base.In(zone)})
	require.NoError(t, err)
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, w, got)
	require.Equal(t, time.Unix(0, 0).UTC(), got.RunAt, "the epoch is not the zero time")
	require.Equal(t, time.UTC, got.CreatedAt.Location())
	require.Equal(t, base, got.CreatedAt)
	require.Equal(t, time.Time{}, got.FinishedAt, "zero stays zero")
	require.Equal(t, time.Time{}, got.LeaseUntil)

	// A pre-1970 RunAt still sorts first in the runnable index.
	old := create(t, s, "wf", "old", time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC))
	c := claimOne(t, s, base, time.Minute)
	require.Equal(t, old.ID, c.ID)
}

func TestCodecRejectsCorruptRecords(t *testing.T) {
	t.Parallel()
	r := &record{Workflow: storage.Workflow{ID: 7, Name: "wf", Key: "k", Input: []byte("in"), State: storage.StateIdle, RunAt: base}, Wake: base}
	b := encodeWorkflow(r)
	got, err := decodeWorkflow(b)
	require.NoError(t, err)
	require.Equal(t, r, got)
	for n := range len(b) {
		_, err := decodeWorkflow(b[:n])
		require.ErrorIs(t, err, errCorrupt, "truncated to %d bytes", n)
	}
	_, err = decodeWorkflow(append(b, 0))
	require.ErrorIs(t, err, errCorrupt)
	bad := append([]byte{}, b...)
	bad[0] = 9
	_, err = decodeWorkflow(bad)
	require.ErrorIs(t, err, errCorrupt)
}

func FuzzDecode(f *testing.F) {
	f.Add(encodeWorkflow(&record{Workflow: storage.Workflow{ID: 1, Name: "n", RunAt: base}}))
	f.Add(encodeStep(&storage.Step{ID: 1, Name: "s", Result: []byte{}}))
	f.Add(encodeError(&storage.ErrorRecord{ID: 1, Message: "m"}))
	f.Add(golden(f, goldenWorkflowV1))
	f.Add(encodeWorkflow(&record{Workflow: storage.Workflow{ID: 1, Name: "n", Wait: storage.Wait{Kind: "merge", Data: []byte("d")}}}))
	f.Add(golden(f, goldenWorkflowV3))
	f.Add(encodeWorkflow(&record{Workflow: storage.Workflow{ID: 1, Name: "n", Flow: "f", Tags: map[string]string{"t": "v"}}}))
	f.Add(encodeFlow(&flowRecord{Flow: storage.Flow{Key: "f", Priority: -3, Concurrency: 2, Rate: 5, Per: time.Second, UpdatedAt: base}, Logged: 7}))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Must not panic, whatever the bytes.
		_, _ = decodeWorkflow(b)
		_, _ = decodeStep(b)
		_, _ = decodeError(b)
		_, _ = decodeMessage(b)
		_, _, _ = decodeNameState(b)
		_, _ = decodeFlow([]byte("f"), b)
	})
}

func TestIDsSortNumerically(t *testing.T) {
	t.Parallel()
	keys := [][]byte{idKey(256), idKey(1), idKey(255)}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i], keys[j]) < 0 })
	require.Equal(t, [][]byte{idKey(1), idKey(255), idKey(256)}, keys)
}

func leaseOf(w storage.Workflow) storage.Lease { return w.Lease() }

func TestOpenRecoversLeasesOfADeadProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chrono.db")
	s, err := Open(path, WithNoSync())
	require.NoError(t, err)
	w := create(t, s, "wf", "k", base)
	other := create(t, s, "wf", "idle", at(time.Hour))
	dead := claimOne(t, s, at(time.Second), time.Hour)
	require.Equal(t, w.ID, dead.ID)
	require.NoError(t, s.Close()) // the process dies holding the lease

	s, err = Open(path, WithNoSync())
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	// Runnable at once, not an hour later when the dead lease would have expired.
	got := claimOne(t, s, at(2*time.Second), time.Minute)
	require.Equal(t, w.ID, got.ID)
	require.Greater(t, got.LeaseToken, dead.LeaseToken)
	err = s.SaveSteps(ctx, dead.Lease(), storage.Commit{Steps: []storage.Step{{Name: "a", State: storage.StepPending}}, Now: at(2 * time.Second)})
	require.ErrorIs(t, err, storage.ErrLeaseLost, "the dead process's lease stays fenced")
	idle, err := s.GetWorkflow(ctx, other.ID)
	require.NoError(t, err)
	require.Equal(t, at(time.Hour), idle.RunAt, "idle workflows are not touched")
	checkIndexes(t, s)
}
