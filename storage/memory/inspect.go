package memory

import (
	"context"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

var _ storage.Inspector = (*Store)(nil)

// CountStates counts the newest q.Sample workflows (of q.Name) by name and state.
func (s *Store) CountStates(ctx context.Context, q storage.CountStatesQuery) (storage.StateCounts, error) {
	var out storage.StateCounts
	if err := storage.ValidateCountStates(q); err != nil {
		return out, err
	}
	if err := s.begin(ctx, "count states"); err != nil {
		return out, err
	}
	defer s.mu.Unlock()
	sample := storage.CountSample(q)
	type nameState struct {
		name  string
		state storage.State
	}
	counts := map[nameState]int{}
	for i := len(s.order) - 1; i >= 0; i-- {
		w := &s.byID[s.order[i]].w
		if q.Name != "" && w.Name != q.Name {
			continue
		}
		if out.Counted == sample {
			out.Sampled = true
			break
		}
		counts[nameState{w.Name, w.State}]++
		out.Counted++
	}
	for k, n := range counts {
		out.Counts = append(out.Counts, storage.StateCount{Name: k.name, State: k.state, Count: n})
	}
	storage.SortStateCounts(out.Counts)
	return out, nil
}

// BranchCounts counts the children of q.StepID by state, capped, with the finish times of
// the newest final ones.
func (s *Store) BranchCounts(ctx context.Context, q storage.BranchQuery) (storage.BranchStats, error) {
	var out storage.BranchStats
	if err := storage.ValidateBranchQuery(q); err != nil {
		return out, err
	}
	if err := s.begin(ctx, "branch counts"); err != nil {
		return out, err
	}
	defer s.mu.Unlock()
	limit, recent := storage.BranchCap(q), storage.BranchRecent(q)
	b := s.children[q.StepID]
	for _, st := range storage.States {
		n := 0
		if b != nil {
			n = min(len(b.byState[st]), limit)
		}
		out.Counts = append(out.Counts, storage.StateCount{State: st, Count: n})
		if n == limit {
			out.Capped = append(out.Capped, st)
		}
	}
	if b != nil && recent > 0 {
		var final []int64
		for _, st := range storage.States {
			if st.Final() {
				for id := range b.byState[st] {
					final = append(final, id)
				}
			}
		}
		slices.Sort(final)
		for i := len(final) - 1; i >= 0 && len(out.RecentFinished) < recent; i-- {
			out.RecentFinished = append(out.RecentFinished, s.byID[final[i]].w.FinishedAt)
		}
	}
	return out, nil
}

// Backlog walks the due queue from the earliest RunAt, looking at most at BacklogProbe due
// rows.
func (s *Store) Backlog(ctx context.Context, now time.Time, limit int) (storage.Backlog, error) {
	var out storage.Backlog
	if err := storage.ValidateBacklog(now); err != nil {
		return out, err
	}
	if err := s.begin(ctx, "backlog"); err != nil {
		return out, err
	}
	defer s.mu.Unlock()
	limit = storage.BacklogLimit(limit)
	bound, storeNow := micros(stamp(now)), s.storeNow()
	probed := 0
	s.due.ascend(func(e entry) bool {
		if e.at > bound {
			return false
		}
		if probed == storage.BacklogProbe {
			out.Probed = true
			return false
		}
		probed++
		w := &s.byID[e.id].w
		expired := w.State == storage.StateRunning && !storeNow.Before(w.LeaseUntil)
		if w.State != storage.StateIdle && !expired {
			return true
		}
		if out.Due == 0 {
			out.OldestDue = w.RunAt
		}
		out.Due++
		if expired && len(out.Expired) < limit {
			out.Expired = append(out.Expired, s.byID[e.id].out())
		}
		return true
	})
	return out, nil
}
