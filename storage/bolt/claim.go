package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Claim takes up to r.Limit runnable workflows (idle, or running with a lease expired by
// the process clock, RunAt at or before r.Now, name in r.Names when set) in one write
// transaction and returns them leased to r.Owner in RunAt order. Each claimed row gets state
// running, a lease until the process clock plus r.TTL, RunAt of r.Now+r.TTL, and the next
// lease token. bbolt serialises write transactions, so concurrent claims never return the
// same workflow while its lease is live.
//
// The walk examines at most 10*r.Limit+1000 index entries, so a backlog of other workflows'
// names (or of live leases due by a caller's clock that runs ahead) at the head of the queue
// cannot make one claim unbounded.
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
		// Read in the transaction, so every expiry check and new expiry of this claim is
		// against the moment it holds the write lock.
		storeNow := s.clock()
		var olds []*record
		limitKey := timeIDKey(now, 1<<63-1)
		examined, maxExamined := 0, 10*r.Limit+1000
		c := t.runnable.Cursor()
		for k, name := c.First(); k != nil && len(olds) < r.Limit && examined < maxExamined; k, name = c.Next() {
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
			olds = append(olds, old)
		}
		// Written after the walk: the cursor must not see its bucket change under it.
		for _, old := range olds {
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
