package bolt

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// The operator queries (storage.Inspector). Each is one read transaction whose walk is
// bounded by its sample, cap or probe: a cursor on the workflows bucket backwards from the
// highest ID, on one branch step's ranges of the children index, or on the runnable index
// from the earliest RunAt.

var _ storage.Inspector = (*Store)(nil)

// ctxEvery is how many rows a long walk reads between checks of its context.
const ctxEvery = 4096

// CountStates counts the newest q.Sample workflows (of q.Name) by name and state, walking
// the workflows bucket backwards from the highest ID. It reads only each record's name and
// state. With q.Name the walk passes over the newer rows of other names too, so its cost is
// the rows newer than the oldest one counted.
func (s *Store) CountStates(ctx context.Context, q storage.CountStatesQuery) (storage.StateCounts, error) {
	var out storage.StateCounts
	if err := storage.ValidateCountStates(q); err != nil {
		return out, err
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	sample := storage.CountSample(q)
	type nameState struct {
		name  string
		state storage.State
	}
	counts := map[nameState]int{}
	err := s.view(func(t *txn) error {
		last := "" // the name of the row before, so a run of one name allocates it once
		c := t.workflows.Cursor()
		read := 0
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if len(k) != 8 || v == nil {
				continue
			}
			if read++; read%ctxEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			name, st, err := decodeNameState(v)
			if err != nil {
				return fmt.Errorf("workflow %d: %w", beUint(k), err)
			}
			if q.Name != "" && string(name) != q.Name {
				continue
			}
			if out.Counted == sample {
				out.Sampled = true
				return nil
			}
			if string(name) != last {
				last = string(name)
			}
			counts[nameState{last, st}]++
			out.Counted++
		}
		return nil
	})
	if err != nil {
		return storage.StateCounts{}, fmt.Errorf("bolt: count states: %w", err)
	}
	for k, n := range counts {
		out.Counts = append(out.Counts, storage.StateCount{Name: k.name, State: k.state, Count: n})
	}
	storage.SortStateCounts(out.Counts)
	return out, nil
}

// BranchCounts counts the children of q.StepID by state, each count a walk of that state's
// range of the children index that stops at the cap, and returns the FinishedAt of the
// newest final children: a backwards merge of the final states' ranges, reading q.Recent
// records. It reads at most cap+1 keys of each state's range (counting cap of them) and
// Recent+3 of the final states' ranges, however many children the step has.
func (s *Store) BranchCounts(ctx context.Context, q storage.BranchQuery) (storage.BranchStats, error) {
	var out storage.BranchStats
	if err := storage.ValidateBranchQuery(q); err != nil {
		return out, err
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	limit, recent := storage.BranchCap(q), storage.BranchRecent(q)
	err := s.view(func(t *txn) error {
		var final []storage.State
		for _, st := range storage.States {
			prefix := parentStatePrefix(q.StepID, st)
			n := 0
			c := t.children.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < limit; k, _ = c.Next() {
				t.stats.childKeys.Add(1)
				if n++; n%ctxEvery == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
			}
			out.Counts = append(out.Counts, storage.StateCount{State: st, Count: n})
			if n == limit {
				out.Capped = append(out.Capped, st)
			}
			if st.Final() {
				final = append(final, st)
			}
		}
		if recent == 0 {
			return nil
		}
		next := t.scanIDs(idRange{desc: true}, final, q.StepID, &t.stats.childKeys)
		for len(out.RecentFinished) < recent {
			id, ok := next()
			if !ok {
				break
			}
			r, err := t.get(id)
			if err != nil {
				return err
			}
			out.RecentFinished = append(out.RecentFinished, r.FinishedAt)
		}
		return nil
	})
	if err != nil {
		return storage.BranchStats{}, fmt.Errorf("bolt: branch counts of step %d: %w", q.StepID, err)
	}
	return out, nil
}

// Backlog walks the runnable index, merged with the flowdue index of the rows that have a
// flow key, from the earliest RunAt up to now, looking at most at storage.BacklogProbe
// entries. An idle row is due as it stands; a running one is due when
// its lease has expired by the store's clock, read once in the transaction.
func (s *Store) Backlog(ctx context.Context, now time.Time, limit int) (storage.Backlog, error) {
	var out storage.Backlog
	if err := storage.ValidateBacklog(now); err != nil {
		return out, err
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	limit = storage.BacklogLimit(limit)
	bound := timeIDKey(now.UTC(), math.MaxInt64)
	err := s.view(func(t *txn) error {
		storeNow := s.clock()
		probed := 0
		next := mergedKeys(t.runnable.Cursor(), t.flowDue.Cursor())
		for k := next(); k != nil && bytes.Compare(k, bound) <= 0; k = next() {
			if probed == storage.BacklogProbe {
				out.Probed = true
				return nil
			}
			probed++
			id := int64(beUint(k[8:]))
			v := t.workflows.Get(idKey(id))
			if v == nil {
				return fmt.Errorf("workflow %d in the runnable index: %w", id, storage.ErrNotFound)
			}
			_, st, err := decodeNameState(v)
			if err != nil {
				return fmt.Errorf("workflow %d: %w", id, err)
			}
			var expired *record
			switch st {
			case storage.StateIdle:
			case storage.StateRunning:
				r, err := t.get(id)
				if err != nil {
					return err
				}
				if storeNow.Before(r.LeaseUntil) {
					continue // due by the caller's clock, but its lease is live
				}
				expired = r
			default:
				return fmt.Errorf("workflow %d in state %s is in the runnable index", id, st)
			}
			if out.Due == 0 {
				out.OldestDue = keyTime(k)
			}
			out.Due++
			if expired != nil && len(out.Expired) < limit {
				out.Expired = append(out.Expired, expired.Workflow)
			}
		}
		return nil
	})
	if err != nil {
		return storage.Backlog{}, fmt.Errorf("bolt: backlog: %w", err)
	}
	return out, nil
}

// mergedKeys returns an iterator over the keys of two cursors of buckets with disjoint keys,
// in key order, from the first; nil when both are done. The keys are bbolt's, valid for the
// transaction.
func mergedKeys(a, b *bbolt.Cursor) func() []byte {
	ka, _ := a.First()
	kb, _ := b.First()
	return func() []byte {
		switch {
		case ka == nil && kb == nil:
			return nil
		case kb == nil || (ka != nil && bytes.Compare(ka, kb) < 0):
			k := ka
			ka, _ = a.Next()
			return k
		default:
			k := kb
			kb, _ = b.Next()
			return k
		}
	}
}
