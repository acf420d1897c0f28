package bolt

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Claim takes up to r.Limit runnable workflows (idle, or running with a lease expired by
// the process clock, RunAt at or before r.Now, name in r.Names when set) in one write
// transaction and returns them leased to r.Owner, highest flow priority first, then in RunAt
// and ID order. Each claimed row gets state running, a lease until the process clock plus
// r.TTL, RunAt of r.Now+r.TTL, and the next lease token. bbolt serialises write
// transactions, so concurrent claims never return the same workflow while its lease is live,
// and each claim sees the running rows and rate log every earlier one left: the flow limits
// hold exactly.
//
// Workflows without a flow key come from the runnable index as they always have. The walk
// examines at most 10*r.Limit+1000 index entries, so a backlog of other workflows' names (or
// of live leases due by a caller's clock that runs ahead) at the head of the queue cannot
// make one claim unbounded. Workflows with a flow key come from their own queues (one per
// name and key, see the package doc): per key, the flow's room is worked out first (its
// concurrency left beside the live leases of the key, and its rate left beside the claims in
// the window), and its queues are read only that far, within a second budget of the same
// size. A key at its limit costs a claim a few reads, however deep its backlog.
func (s *Store) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	if err := storage.ValidateClaim(r); err != nil {
		return nil, err
	}
	now := r.Now.UTC()
	runAt := now.Add(r.TTL)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []storage.Workflow
	err := s.update(func(t *txn) error {
		out = nil
		// Read in the transaction, so every expiry check and new expiry of this claim is
		// against the moment it holds the write lock.
		storeNow := s.clock()
		var picked []pick
		limitKey := timeIDKey(now, math.MaxInt64)
		examined, maxExamined := 0, 10*r.Limit+1000
		c := t.runnable.Cursor()
		for k, name := c.First(); k != nil && len(picked) < r.Limit && examined < maxExamined; k, name = c.Next() {
			if bytes.Compare(k, limitKey) > 0 {
				break
			}
			examined++
			if len(r.Names) > 0 && !slices.Contains(r.Names, string(name)) {
				continue
			}
			id := int64(beUint(k[8:]))
			old, err := t.get(id)
			if err != nil {
				return err
			}
			if !runnable(old) {
				return fmt.Errorf("workflow %d in state %s is in the runnable index", id, old.State)
			}
			if old.State == storage.StateRunning && storeNow.Before(old.LeaseUntil) {
				continue // due by the caller's clock, but its lease is live
			}
			picked = append(picked, pick{old: old})
		}
		governed, flows, err := t.claimFlows(r.Names, r.Limit, limitKey, storeNow, maxExamined)
		if err != nil {
			return err
		}
		picked = append(picked, governed...)
		slices.SortFunc(picked, func(a, b pick) int {
			if c := cmp.Compare(b.prio, a.prio); c != 0 {
				return c
			}
			if c := a.old.RunAt.Compare(b.old.RunAt); c != 0 {
				return c
			}
			return cmp.Compare(a.old.ID, b.old.ID)
		})
		picked = picked[:min(len(picked), r.Limit)]
		// The claimed workflows of a flow with a rate take their places in the window, one
		// log entry per flow. A flow whose count of claims in its log changed (entries dropped
		// from the window, or added) is written back; the others are left as they are.
		taken := map[*flowRecord]int{}
		for _, p := range picked {
			if p.flow != nil && p.flow.Rate > 0 {
				taken[p.flow]++
			}
		}
		for _, f := range flows {
			if n := taken[&f.flowRecord]; n > 0 {
				if err := t.logClaim(&f.flowRecord, storeNow, n); err != nil {
					return err
				}
			}
		}
		for _, f := range flows {
			if f.Logged != f.read {
				if err := t.putFlow(&f.flowRecord); err != nil {
					return err
				}
			}
		}
		// Written after the walks: a cursor must not see its bucket change under it.
		for _, p := range picked {
			old := p.old
			w := *old
			w.State = storage.StateRunning
			w.LeaseOwner = r.Owner
			w.LeaseToken = old.LeaseToken + 1
			w.LeaseUntil = storeNow.Add(r.TTL)
			w.RunAt = runAt
			w.UpdatedAt = now
			// A run starting now covers every wake due by now; a later one is kept for FinishRun.
			if !w.Wake.After(now) {
				w.Wake = time.Time{}
			}
			if err := t.put(old, &w); err != nil {
				return err
			}
			out = append(out, w.Workflow)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: claim for %q: %w", r.Owner, err)
	}
	return out, nil
}

// readFlow is a flow a claim read, with its count of logged claims as it was stored (read):
// the claim writes the flow back only when the count changed.
type readFlow struct {
	flowRecord
	read int64
}

// pick is a workflow a claim may take, with the priority of its flow (flow, nil for none or a
// key with no stored flow).
type pick struct {
	old  *record
	prio int
	flow *flowRecord
}

// claimFlows collects the due workflows with a flow key of names (any name when empty): per
// key, in key order, the first of its queues (one per name) up to the room the key's stored
// flow leaves, limit at most; a key with no stored flow has priority 0 and room for limit. It
// reads at most budget queue entries in all, and returns the flows it read (their rate logs
// pruned), for the caller to write back.
func (t *txn) claimFlows(names []string, limit int, bound []byte, storeNow time.Time, budget int) ([]pick, []*readFlow, error) {
	queues := map[string][][]byte{}
	add := func(under []byte) {
		for _, p := range t.flowPairs(under) {
			key := pairFlow(p)
			queues[key] = append(queues[key], p)
		}
	}
	if len(names) == 0 {
		add(nil)
	} else {
		seen := make(map[string]bool, len(names))
		for _, name := range names {
			if !seen[name] {
				seen[name] = true
				add(append([]byte(name), 0))
			}
		}
	}
	var (
		out   []pick
		flows []*readFlow
	)
	for _, key := range slices.Sorted(maps.Keys(queues)) {
		stored, err := t.getFlow(key)
		if err != nil {
			return nil, nil, err
		}
		room, prio := limit, 0
		var f *flowRecord
		if stored != nil {
			rf := &readFlow{flowRecord: *stored, read: stored.Logged}
			flows = append(flows, rf)
			f = &rf.flowRecord
			prio = f.Priority
			running := 0
			if f.Concurrency > 0 {
				// Below Concurrency-limit live leases, the room is limit, whatever their number.
				running = t.liveRunning(key, storeNow, f.Concurrency-limit, f.Concurrency)
			}
			inWindow, err := t.inWindow(f, storeNow)
			if err != nil {
				return nil, nil, err
			}
			room = storage.FlowCapacity(f.Flow, limit, running, inWindow)
		}
		if room == 0 {
			continue
		}
		var rs []*record
		for _, p := range queues[key] {
			got, err := t.dueRows(p, bound, storeNow, room, &budget)
			if err != nil {
				return nil, nil, err
			}
			rs = append(rs, got...)
		}
		// The key's queues each gave their first room rows; the key's first room rows over
		// all its names are among them.
		slices.SortFunc(rs, func(a, b *record) int {
			if c := a.RunAt.Compare(b.RunAt); c != 0 {
				return c
			}
			return cmp.Compare(a.ID, b.ID)
		})
		for _, r := range rs[:min(len(rs), room)] {
			out = append(out, pick{old: r, prio: prio, flow: f})
		}
	}
	return out, flows, nil
}
