package memory

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Claim takes up to r.Limit runnable workflows, highest flow priority then earliest RunAt
// first, and returns them leased to r.Owner. It walks the due queues (those of r.Names, when
// given) from the earliest RunAt up to r.Now, a flow's only as far as its limits leave room
// for, so its cost grows with the due workflows it takes, not with the store or a held-back
// backlog; it steps over due rows whose lease is still live by the store's clock.
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
	collect := func(q *queue, limit int, into []entry) []entry {
		n := 0
		q.ascend(func(e entry) bool {
			if e.at > bound || n == limit {
				return false
			}
			if s.runnable(&s.byID[e.id].w, storeNow) {
				into = append(into, e)
				n++
			}
			return true
		})
		return into
	}
	// The workflows without a flow: the first Limit of each name's queue, merged.
	var free []entry
	names := uniq(r.Names)
	if len(names) == 0 {
		free = collect(&s.dueFree, r.Limit, nil)
	} else {
		for _, name := range names {
			if q := s.dueByName[name]; q != nil {
				free = collect(q, r.Limit, free)
			}
		}
	}
	// The workflows with a flow, each flow's up to what its limits leave.
	picked := s.claimFlows(names, r.Limit, storeNow, collect)
	for _, e := range free {
		picked = append(picked, pick{e: e})
	}
	slices.SortFunc(picked, func(a, b pick) int {
		if c := cmp.Compare(b.prio, a.prio); c != 0 {
			return c
		}
		return a.e.compare(b.e)
	})
	picked = picked[:min(len(picked), r.Limit)]
	for _, p := range picked {
		if p.fs != nil && p.fs.f.Rate > 0 {
			p.fs.claims = append(p.fs.claims, storeNow)
		}
	}

	until, runAt := stamp(storeNow.Add(r.TTL)), stamp(now.Add(r.TTL))
	out := make([]storage.Workflow, 0, len(picked))
	for _, p := range picked {
		rec := s.byID[p.e.id]
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

// pick is a workflow a claim may take, with the priority of its flow (fs, nil for none).
type pick struct {
	e    entry
	prio int
	fs   *flowState
}

// claimFlows collects the due workflows with a flow of names (any name when empty): per flow
// key, the first of its queues up to the room the flow's limits leave (limit at most).
func (s *Store) claimFlows(names []string, limit int, storeNow time.Time, collect func(*queue, int, []entry) []entry) []pick {
	byKey := map[string][]*queue{}
	add := func(byFlow map[string]*queue) {
		for key, q := range byFlow {
			byKey[key] = append(byKey[key], q)
		}
	}
	if len(names) == 0 {
		for _, byFlow := range s.dueByFlow {
			add(byFlow)
		}
	} else {
		for _, name := range names {
			add(s.dueByFlow[name])
		}
	}
	var out []pick
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		fs := s.flows[key]
		room := limit
		prio := 0
		if fs != nil {
			prio = fs.f.Priority
			running := 0
			if fs.f.Concurrency > 0 {
				running = s.liveRunning(key, storeNow, fs.f.Concurrency)
			}
			room = storage.FlowCapacity(fs.f, limit, running, fs.inWindow(storeNow))
		}
		if room == 0 {
			continue
		}
		var es []entry
		for _, q := range byKey[key] {
			es = collect(q, room, es)
		}
		slices.SortFunc(es, entry.compare)
		for _, e := range es[:min(len(es), room)] {
			out = append(out, pick{e: e, prio: prio, fs: fs})
		}
	}
	return out
}
