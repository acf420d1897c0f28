package memory

import (
	"context"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Claim takes up to r.Limit runnable workflows, earliest RunAt first, and returns them leased
// to r.Owner. It walks the due queue (the queues of r.Names, when given) from the earliest
// RunAt up to r.Now, so its cost grows with the due workflows it looks at, not with the
// store; it steps over due rows whose lease is still live by the store's clock.
func (s *Store) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	if err := storage.ValidateClaim(r); err != nil {
		return nil, err
	}
	if err := s.begin(ctx, "claim"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()

	now, storeNow := stamp(r.Now), s.storeNow()
	bound := micros(now)
	collect := func(q *queue, into []entry) []entry {
		n := 0
		q.ascend(func(e entry) bool {
			if e.at > bound || n == r.Limit {
				return false
			}
			w := &s.byID[e.id].w
			if w.State == storage.StateIdle || (w.State == storage.StateRunning && !storeNow.Before(w.LeaseUntil)) {
				into = append(into, e)
				n++
			}
			return true
		})
		return into
	}
	var picked []entry
	if len(r.Names) == 0 {
		picked = collect(&s.due, nil)
	} else {
		names := uniq(r.Names)
		for _, name := range names {
			if q := s.dueByName[name]; q != nil {
				picked = collect(q, picked)
			}
		}
		if len(names) > 1 {
			// The first Limit of each name's queue, merged: the first Limit of them all.
			slices.SortFunc(picked, entry.compare)
			picked = picked[:min(len(picked), r.Limit)]
		}
	}

	until, runAt := stamp(storeNow.Add(r.TTL)), stamp(now.Add(r.TTL))
	out := make([]storage.Workflow, 0, len(picked))
	for _, e := range picked {
		rec := s.byID[e.id]
		s.update(rec, func(w *storage.Workflow) {
			w.State = storage.StateRunning
			w.LeaseOwner = r.Owner
			w.LeaseToken++
			w.LeaseUntil = until
			w.RunAt = runAt
			w.UpdatedAt = now
		})
		// A wake kept from an earlier run that is due by now is covered by this run.
		if !rec.wake.IsZero() && !rec.wake.After(now) {
			rec.wake = time.Time{}
		}
		out = append(out, rec.out())
	}
	return out, nil
}
