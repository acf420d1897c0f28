package bolt

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// branchStep is the branch step the bulk-made children of these tests belong to.
const branchStep = 7

// fillBranch stores n children of branchStep, much faster than spawning them: child i (from
// 0) is completed when i%10 < 6, failed when i%10 == 9 (each final one finished at at(i
// seconds)), and idle otherwise. It returns their IDs. It writes 2,000 children per
// transaction: bbolt splits a node only at commit, so one huge transaction inserts into ever
// larger nodes.
func fillBranch(t testing.TB, s *Store, n int) []int64 {
	t.Helper()
	const batch = 2000
	out := make([]int64, 0, n)
	for from := 0; from < n; from += batch {
		require.NoError(t, s.update(func(t *txn) error {
			for i := from; i < min(from+batch, n); i++ {
				w, _, err := t.create(storage.NewWorkflow{Name: "child", Key: fmt.Sprint("c", i), Now: base, ParentStepID: branchStep})
				if err != nil {
					return err
				}
				out = append(out, w.ID)
				next := &record{Workflow: w}
				switch {
				case i%10 < 6:
					next.State = storage.StateCompleted
				case i%10 == 9:
					next.State = storage.StateFailed
				default:
					continue
				}
				next.RunAt, next.FinishedAt = time.Time{}, at(time.Duration(i)*time.Second)
				if err := t.put(&record{Workflow: w}, next); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	return out
}

// TestBranchCountsBoundedByCap: on a branch of 100,000 children, BranchCounts reads at most
// cap keys of each state's range plus the recent ones, not the children; without a cap that
// binds it reads every child, which is what the cap saves.
func TestBranchCountsBoundedByCap(t *testing.T) {
	t.Parallel()
	const n, limit, recent = 100_000, 1000, 20
	s := newStore(t)
	all := fillBranch(t, s, n)
	ctx := context.Background()

	before := s.stats.childKeys.Load()
	got, err := s.BranchCounts(ctx, storage.BranchQuery{StepID: branchStep, Cap: limit, Recent: recent})
	require.NoError(t, err)
	visited := s.stats.childKeys.Load() - before
	require.LessOrEqual(t, visited, int64(3*limit+recent+3), "children index keys read: three capped states, the recent ones and one head per final state")
	require.GreaterOrEqual(t, visited, int64(3*limit+recent))
	for _, st := range storage.States {
		want := 0
		if st == storage.StateIdle || st == storage.StateCompleted || st == storage.StateFailed {
			want = limit
		}
		require.Equal(t, want, got.Count(st), "children %s", st)
	}
	require.Equal(t, []storage.State{storage.StateIdle, storage.StateCompleted, storage.StateFailed}, got.Capped)
	// The newest final children: i%10 is 9 (failed) or 0..5 (completed), counting down from n-1.
	var want []time.Time
	for i := n - 1; len(want) < recent; i-- {
		if i%10 < 6 || i%10 == 9 {
			want = append(want, at(time.Duration(i)*time.Second))
		}
	}
	require.Equal(t, want, got.RecentFinished)

	// The exact counts, for contrast: a cap above the branch reads every child.
	before = s.stats.childKeys.Load()
	got, err = s.BranchCounts(ctx, storage.BranchQuery{StepID: branchStep, Cap: storage.MaxBranchCap, Recent: -1})
	require.NoError(t, err)
	require.Equal(t, int64(n), s.stats.childKeys.Load()-before)
	require.Equal(t, 60_000, got.Count(storage.StateCompleted))
	require.Equal(t, 30_000, got.Count(storage.StateIdle))
	require.Equal(t, 10_000, got.Count(storage.StateFailed))
	require.Empty(t, got.Capped)
	require.Empty(t, got.RecentFinished)

	// Listing the branch newest first pages backwards through the same index.
	page, err := s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: branchStep, Desc: true, Limit: 3})
	require.NoError(t, err)
	require.Equal(t, []int64{all[n-1], all[n-2], all[n-3]}, ids(page))
	page, err = s.ListWorkflows(ctx, storage.ListFilter{ParentStepID: branchStep, States: []storage.State{storage.StateIdle, storage.StateFailed}, Desc: true, BeforeID: all[n-1], Limit: 3})
	require.NoError(t, err)
	require.Equal(t, []int64{all[n-2], all[n-3], all[n-4]}, ids(page), "i%10 of 8, 7 and 6: idle")
}

// BenchmarkBranchCounts measures BranchCounts with the default cap and recent count on a
// branch of 100,000 children, and with a cap of 1,000: the second reads about a tenth of the
// keys of the first.
func BenchmarkBranchCounts(b *testing.B) {
	s := newStore(b)
	fillBranch(b, s, 100_000)
	ctx := context.Background()
	for _, limit := range []int{0, 1000} {
		b.Run(fmt.Sprint("cap=", storage.BranchCap(storage.BranchQuery{Cap: limit})), func(b *testing.B) {
			before := s.stats.childKeys.Load()
			for b.Loop() {
				if _, err := s.BranchCounts(ctx, storage.BranchQuery{StepID: branchStep, Cap: limit}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(s.stats.childKeys.Load()-before)/float64(b.N), "keys/op")
		})
	}
}

// TestCountStatesSampleOfName: with a name, the sample is that name's newest workflows,
// however the names interleave, and Sampled says older ones of the name exist.
func TestCountStatesSampleOfName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	for i := range 10 {
		create(t, s, []string{"a", "b"}[i%2], fmt.Sprint(i), at(time.Duration(i)*time.Minute))
	}
	l := claimOne(t, s, at(time.Hour), time.Hour) // the oldest, an a
	require.NoError(t, s.FinishRun(ctx, l.Lease(), storage.Finish{Commit: storage.Commit{Now: at(time.Hour)}, State: storage.StateFailed}))

	got, err := s.CountStates(ctx, storage.CountStatesQuery{Name: "a", Sample: 4})
	require.NoError(t, err)
	require.Equal(t, storage.StateCounts{Counted: 4, Sampled: true, Counts: []storage.StateCount{{Name: "a", State: storage.StateIdle, Count: 4}}}, got)
	got, err = s.CountStates(ctx, storage.CountStatesQuery{Name: "a", Sample: 5})
	require.NoError(t, err)
	require.Equal(t, storage.StateCounts{Counted: 5, Counts: []storage.StateCount{
		{Name: "a", State: storage.StateIdle, Count: 4}, {Name: "a", State: storage.StateFailed, Count: 1},
	}}, got)
	got, err = s.CountStates(ctx, storage.CountStatesQuery{Sample: 3})
	require.NoError(t, err)
	require.Equal(t, storage.StateCounts{Counted: 3, Sampled: true, Counts: []storage.StateCount{
		{Name: "a", State: storage.StateIdle, Count: 1}, {Name: "b", State: storage.StateIdle, Count: 2},
	}}, got)
}

// TestDecodeNameState: the name and state read alone are those of the whole record, and a
// truncated record or an unknown state is refused as corrupt.
func TestDecodeNameState(t *testing.T) {
	t.Parallel()
	r := &record{Workflow: storage.Workflow{ID: 9, Name: "order.charge", Key: "k", Input: []byte("in"), Output: []byte{}, State: storage.StateStalled, Tags: map[string]string{"a": "b"}}}
	b := encodeWorkflow(r)
	name, st, err := decodeNameState(b)
	require.NoError(t, err)
	require.Equal(t, "order.charge", string(name))
	require.Equal(t, storage.StateStalled, st)
	// Every cut before the end of the state field is refused; the rest is not read.
	end := bytes.Index(b, []byte(storage.StateStalled)) + len(storage.StateStalled)
	for n := range end {
		_, _, err := decodeNameState(b[:n])
		require.ErrorIs(t, err, errCorrupt, "truncated to %d bytes", n)
	}
	_, st, err = decodeNameState(b[:end])
	require.NoError(t, err)
	require.Equal(t, storage.StateStalled, st)
	r.State = "bogus"
	_, _, err = decodeNameState(encodeWorkflow(r))
	require.ErrorIs(t, err, errCorrupt)
}

// TestBacklogProbe: Backlog looks at BacklogProbe due rows at most and says so; a RunAt
// equal to now is due, one a nanosecond later is not.
func TestBacklogProbe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const n = storage.BacklogProbe + 1
	for from := 0; from < n; from += 2000 {
		require.NoError(t, s.update(func(t *txn) error {
			for i := from; i < min(from+2000, n); i++ {
				if _, _, err := t.create(storage.NewWorkflow{Name: "due", Key: fmt.Sprint(i), Now: base, RunAt: at(time.Duration(i))}); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	got, err := s.Backlog(ctx, at(time.Hour), 0)
	require.NoError(t, err)
	require.True(t, got.Probed)
	require.Equal(t, storage.BacklogProbe, got.Due)
	require.Equal(t, at(0), got.OldestDue)
	require.Empty(t, got.Expired)

	got, err = s.Backlog(ctx, at(9), 0)
	require.NoError(t, err)
	require.Equal(t, storage.Backlog{OldestDue: at(0), Due: 10}, got, "RunAt at(0)..at(9): at(9) is due by at(9)")
	got, err = s.Backlog(ctx, at(-1), 0)
	require.NoError(t, err)
	require.Equal(t, storage.Backlog{}, got, "nothing due a nanosecond before the first")
}
