package mysql

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

var stressNames = []string{"stress.a", "stress.b", "stress.c"}

// TestClaimStress: 16 claimers over 8 connections take 1,000 due workflows in batches of
// uneven sizes while the runs they got finish (half of them suspending for a later round) and
// new workflows are created. In every round each due workflow is claimed exactly once, with
// the next token, and the rows come back in run_at order within each batch.
func TestClaimStress(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	const n, claimers, rounds = 1000, 16, 3
	runAt := map[int64]time.Time{} // before the first round
	for i := range n {
		w := create(t, s, stressNames[i%len(stressNames)], fmt.Sprint(i), at(time.Duration(i%37)*time.Millisecond))
		runAt[w.ID] = w.RunAt
	}

	tokens := map[int64]int64{}
	for round := range rounds {
		now := at(time.Duration(round)*time.Hour + time.Second)
		var (
			mu     sync.Mutex
			got    = map[int64]string{}
			errs   []error
			wg     sync.WaitGroup
			extras int
		)
		for c := range claimers {
			owner := fmt.Sprintf("r%d-c%d", round, c)
			wg.Go(func() {
				for i := 0; ; i++ {
					batch, err := s.Claim(ctx, storage.ClaimRequest{Owner: owner, Limit: 1 + (c*7+i)%23, TTL: time.Minute, Names: stressNames, Now: now})
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
					if len(batch) == 0 {
						return
					}
					for j, w := range batch {
						if round == 0 && j > 0 {
							prev, cur := batch[j-1], w
							if runAt[cur.ID].Before(runAt[prev.ID]) || runAt[cur.ID].Equal(runAt[prev.ID]) && cur.ID < prev.ID {
								mu.Lock()
								errs = append(errs, fmt.Errorf("batch of %s out of run_at order: %d before %d", owner, prev.ID, cur.ID))
								mu.Unlock()
							}
						}
						// Finish the run: half suspend to the next round, half complete.
						fin := storage.Finish{Commit: storage.Commit{Now: now.Add(time.Second)}, State: storage.StateIdle, RunAt: now.Add(time.Hour)}
						if w.ID%2 == 0 && round == rounds-1 {
							fin.State, fin.RunAt = storage.StateCompleted, time.Time{}
						}
						if err := s.FinishRun(ctx, w.Lease(), fin); err != nil {
							mu.Lock()
							errs = append(errs, err)
							mu.Unlock()
						}
					}
					mu.Lock()
					for _, w := range batch {
						if prev, dup := got[w.ID]; dup {
							errs = append(errs, fmt.Errorf("round %d: workflow %d claimed by %s and %s", round, w.ID, prev, owner))
						}
						got[w.ID] = owner
						if w.LeaseToken != tokens[w.ID]+1 {
							errs = append(errs, fmt.Errorf("round %d: workflow %d token %d after %d", round, w.ID, w.LeaseToken, tokens[w.ID]))
						}
					}
					mu.Unlock()
				}
			})
		}
		// Meanwhile, new work arrives (not due until the next round).
		wg.Go(func() {
			for i := range 50 {
				_, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: stressNames[i%len(stressNames)], Key: fmt.Sprintf("late-%d-%d", round, i), RunAt: now.Add(time.Hour), Now: now})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				extras++
				mu.Unlock()
			}
		})
		wg.Wait()
		require.Empty(t, errs, "round %d", round)
		require.Len(t, got, n+50*round, "round %d: every due workflow claimed once", round)
		for id := range got {
			tokens[id]++
		}
		require.Equal(t, 50, extras)
	}
}

// TestClaimRetriesDeadlocks: concurrent claims deadlock with each other by design (see
// claimQuery), and InnoDB rolls the victim back, so a claim retries a deadlock with the same
// budget as every other unit, more than the budget for other transient failures, and only
// gives up when that is spent.
func TestClaimRetriesDeadlocks(t *testing.T) {
	t.Parallel()
	s, c := countingStore(t)
	for i := range 3 {
		create(t, s, "deadlock", fmt.Sprint(i), at(time.Duration(i)))
	}
	c.deadlocks.Store(maxAttempts + 2)
	got := claimAll(t, s, at(time.Second), 2, "deadlock")
	require.Len(t, got, 2, "the claim outlasted %d deadlocks", maxAttempts+2)
	require.Zero(t, c.deadlocks.Load())

	c.deadlocks.Store(maxDeadlockAttempts)
	_, err := s.Claim(context.Background(), storage.ClaimRequest{Owner: "test", Limit: 2, Names: []string{"deadlock"}, TTL: time.Minute, Now: at(time.Second)})
	var my *gomysql.MySQLError
	require.ErrorAs(t, err, &my, "a claim that deadlocks %d times in a row reports it", maxDeadlockAttempts)
	require.EqualValues(t, erLockDeadlock, my.Number)
	require.Len(t, claimAll(t, s, at(time.Second), 2, "deadlock"), 1, "the failed claim took nothing")
}

// TestClaimLocksOnlyItsNames: while a claim for some names holds the rows it picked, a claim
// for other names, whose due rows come first in run_at order, can still pick all of them:
// InnoDB keeps the lock of every row a locking read passes (even one its WHERE rejects), so a
// claim must only pass rows of its own names.
func TestClaimLocksOnlyItsNames(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()
	for i := range 100 {
		create(t, s, "early", fmt.Sprint(i), at(time.Duration(i)*time.Millisecond))
	}
	for i := range 5 {
		create(t, s, "late", fmt.Sprint(i), at(time.Second+time.Duration(i)*time.Millisecond))
		create(t, s, "later", fmt.Sprint(i), at(2*time.Second+time.Duration(i)*time.Millisecond))
	}
	now := at(time.Minute)

	// pick runs the row-picking part of a claim in a transaction of its own, which keeps its
	// locks until it ends, and returns how many rows it picked.
	pick := func(limit int, names ...string) (int, func()) {
		claim, args := s.claimQuery(storage.ClaimRequest{Owner: "o", Limit: limit, Names: names, TTL: time.Minute}, names, nil, now, now.Add(time.Minute), 1)
		query := claim[len("UPDATE ("):strings.Index(claim, ") AS c STRAIGHT_JOIN")]
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		rows, err := tx.QueryContext(ctx, query, args[:strings.Count(query, "?")]...)
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			n++
		}
		require.NoError(t, rows.Err())
		return n, func() { _ = tx.Rollback() }
	}
	for _, names := range [][]string{{"late"}, {"late", "later"}} {
		func() {
			held, release := pick(3, names...)
			defer release()
			require.Equal(t, 3, held, "names %v", names)
			n, releaseEarly := pick(50, "early")
			defer releaseEarly()
			require.Equal(t, 50, n, "while a claim of %v holds its rows, a claim of other names finds all of its own", names)
		}()
	}
	require.Len(t, claimAll(t, s, now, 200, "early", "late", "later"), 110, "nothing stayed locked")
}
