package bolt

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

var _ storage.FlowController = (*Store)(nil)

// PutFlow stores f under f.Key with UpdatedAt = now (see storage.FlowController), in one write
// transaction. Replacing a flow keeps its rate log: the claims made in the current window
// still count against the new rate.
func (s *Store) PutFlow(ctx context.Context, f storage.Flow, ifMissing bool, now time.Time) (storage.Flow, bool, error) {
	if err := storage.ValidateFlow(f, now); err != nil {
		return storage.Flow{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Flow{}, false, err
	}
	var (
		out   storage.Flow
		wrote bool
	)
	err := s.update(func(t *txn) error {
		old, err := t.getFlow(f.Key)
		if err != nil {
			return err
		}
		if old != nil && ifMissing {
			out = old.Flow
			return nil
		}
		rec := &flowRecord{}
		if old != nil {
			rec.Logged = old.Logged
		} else if n := countKeys(t.flows, storage.MaxFlows); n >= storage.MaxFlows {
			return fmt.Errorf("%w: the store holds %d flows already", storage.ErrTooLarge, n)
		}
		rec.Flow = f
		rec.UpdatedAt = now.UTC()
		if err := t.putFlow(rec); err != nil {
			return err
		}
		out, wrote = rec.Flow, true
		return nil
	})
	if err != nil {
		return storage.Flow{}, false, fmt.Errorf("bolt: put flow %q: %w", f.Key, err)
	}
	return out, wrote, nil
}

// DeleteFlow removes the flow stored under key with its rate log, reporting whether there was
// one.
func (s *Store) DeleteFlow(ctx context.Context, key string) (bool, error) {
	if err := storage.ValidateFlowKey(key); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var gone bool
	err := s.update(func(t *txn) error {
		gone = t.flows.Get([]byte(key)) != nil
		if !gone {
			return nil
		}
		if err := t.flows.Delete([]byte(key)); err != nil {
			return err
		}
		for _, k := range prefixKeys(t.flowLog, flowPrefix(key)) {
			if err := t.flowLog.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("bolt: delete flow %q: %w", key, err)
	}
	return gone, nil
}

// ListFlows returns every stored flow in key order with its Running and Due counts (see
// storage.FlowController), from one read transaction. Running is the key's running rows less
// its expired leases (see liveRunning); Due walks the key's queues in the flowrunnable index
// (one per name) up to now, stepping over rows whose lease is live. Each count stops at
// storage.FlowProbe.
func (s *Store) ListFlows(ctx context.Context, now time.Time) ([]storage.FlowState, error) {
	if err := storage.ValidateListFlows(now); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	bound := timeIDKey(now.UTC(), math.MaxInt64)
	var out []storage.FlowState
	err := s.view(func(t *txn) error {
		out = []storage.FlowState{} // none is empty, not nil, as the memory store answers
		storeNow := s.clock()
		queues := map[string][][]byte{}
		for _, p := range t.flowPairs(nil) {
			key := pairFlow(p)
			queues[key] = append(queues[key], p)
		}
		c := t.flows.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			f, err := decodeFlow(k, v)
			if err != nil {
				return fmt.Errorf("flow %q: %w", k, err)
			}
			st := storage.FlowState{Flow: f.Flow, Running: t.liveRunning(f.Key, storeNow, -1, storage.FlowProbe)}
			for _, p := range queues[f.Key] {
				rs, err := t.dueRows(p, bound, storeNow, storage.FlowProbe-st.Due, nil)
				if err != nil {
					return err
				}
				st.Due += len(rs)
			}
			st.Capped = st.Running == storage.FlowProbe || st.Due == storage.FlowProbe
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list flows: %w", err)
	}
	return out, nil
}

// getFlow returns the flow stored under key, or nil when there is none.
func (t *txn) getFlow(key string) (*flowRecord, error) {
	v := t.flows.Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	f, err := decodeFlow([]byte(key), v)
	if err != nil {
		return nil, fmt.Errorf("flow %q: %w", key, err)
	}
	return f, nil
}

// putFlow writes f under its key.
func (t *txn) putFlow(f *flowRecord) error {
	return t.flows.Put([]byte(f.Key), encodeFlow(f))
}

// countKeys counts the keys of b, stopping at max.
func countKeys(b *bbolt.Bucket, max int) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil && n < max; k, _ = c.Next() {
		n++
	}
	return n
}

// flowPairs returns the distinct name 0x00 flow 0x00 prefixes of the flowrunnable index that
// start with under (a name 0x00, or nil for every name), in key order: the flow keys of a
// name's runnable rows. It reads one key per prefix, seeking past the rest of each queue, so
// its cost is the number of queues, not of their rows.
func (t *txn) flowPairs(under []byte) [][]byte {
	var out [][]byte
	c := t.flowRunnable.Cursor()
	k, _ := c.Seek(under)
	for k != nil && bytes.HasPrefix(k, under) {
		t.flowRead(1)
		i := bytes.IndexByte(k, 0)
		j := -1
		if i >= 0 {
			j = bytes.IndexByte(k[i+1:], 0)
		}
		if j < 0 {
			// Not a key this package writes: step over it rather than loop on it.
			k, _ = c.Next()
			continue
		}
		p := slices.Clone(k[:i+1+j+1])
		out = append(out, p)
		k, _ = c.Seek(prefixEnd(p))
	}
	return out
}

// pairFlow is the flow key of a prefix that flowPairs returned.
func pairFlow(p []byte) string {
	i := bytes.IndexByte(p, 0)
	return string(p[i+1 : len(p)-1])
}

// dueRows returns up to max rows of one queue of the flowrunnable index (prefix, from
// flowPairs) that are due by bound (a timeIDKey) and claimable by storeNow: idle, or running
// with an expired lease. budget, when not nil, is how many more keys the walk may read; it is
// decremented for each. A row due by the caller's clock but with a live lease is stepped over.
func (t *txn) dueRows(prefix, bound []byte, storeNow time.Time, max int, budget *int) ([]*record, error) {
	var out []*record
	if max <= 0 {
		return nil, nil
	}
	c := t.flowRunnable.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(out) < max; k, _ = c.Next() {
		if budget != nil {
			if *budget <= 0 {
				break
			}
			*budget--
		}
		t.flowRead(1)
		tail := k[len(prefix):]
		if len(tail) != 16 {
			return nil, fmt.Errorf("a key of %d bytes after its queue's prefix %q in the flowrunnable index", len(tail), prefix)
		}
		if bytes.Compare(tail, bound) > 0 {
			break
		}
		id := int64(beUint(tail[8:]))
		r, err := t.get(id)
		if err != nil {
			return nil, err
		}
		if !runnable(r) || !governed(r) {
			return nil, fmt.Errorf("workflow %d in state %s with flow %q is in the flowrunnable index", id, r.State, r.Flow)
		}
		if r.State == storage.StateRunning && storeNow.Before(r.LeaseUntil) {
			continue // due by the caller's clock, but its lease is live
		}
		out = append(out, r)
	}
	return out, nil
}

// liveRunning counts the running workflows of flow key whose lease is live by storeNow (ends
// after it), at most max; or, when at most floor of them are live, it may return any count
// up to floor (a claim's room is the same for all of them). The flowrunning index orders a
// key's rows by lease expiry, expired ones first, and flowcount holds their total, so the
// live ones are the total less the expired ones, read from the head of the key: usually a
// read or two. When more than max rows have expired, it counts the live ones from the store's
// now instead, up to max: its reads never pass about 2*max.
func (t *txn) liveRunning(key string, storeNow time.Time, floor, max int) int {
	total := int(t.runningCount(key))
	if total <= floor {
		return total
	}
	prefix := flowPrefix(key)
	c := t.flowRunning.Cursor()
	expired := 0
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		t.flowRead(1)
		if len(k) == len(prefix)+16 && keyTime(k[len(prefix):]).After(storeNow) {
			break // the first live lease: the rest are live
		}
		expired++
		if total-expired <= floor {
			return total - expired
		}
		if expired > max {
			return t.countLive(prefix, storeNow, max)
		}
	}
	return min(total-expired, max)
}

// countLive counts the keys under prefix in the flowrunning index whose lease ends after
// storeNow, at most max.
func (t *txn) countLive(prefix []byte, storeNow time.Time, max int) int {
	c := t.flowRunning.Cursor()
	n := 0
	for k, _ := c.Seek(append(slices.Clip(prefix), timeIDKey(storeNow, 0)...)); k != nil && bytes.HasPrefix(k, prefix) && n < max; k, _ = c.Next() {
		t.flowRead(1)
		if len(k) == len(prefix)+16 && keyTime(k[len(prefix):]).After(storeNow) {
			n++
		}
	}
	return n
}

// inWindow drops the entries of f's rate log that left the window ending at storeNow (all of
// them when f has no rate) and returns the claims left in it. It updates f.Logged; the caller
// writes f back. The log is in time order, so only the entries dropped are read, and one more.
func (t *txn) inWindow(f *flowRecord, storeNow time.Time) (int, error) {
	if f.Logged == 0 {
		return 0, nil
	}
	prefix := flowPrefix(f.Key)
	from := storeNow.Add(-f.Per)
	var old [][]byte
	dropped := int64(0)
	c := t.flowLog.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		t.flowRead(1)
		if f.Rate > 0 && len(k) == len(prefix)+16 && keyTime(k[len(prefix):]).After(from) {
			break
		}
		old = append(old, slices.Clone(k))
		if len(v) == 8 {
			dropped += int64(beUint(v))
		}
	}
	for _, k := range old {
		if err := t.flowLog.Delete(k); err != nil {
			return 0, err
		}
	}
	f.Logged = max(f.Logged-dropped, 0)
	return int(f.Logged), nil
}

// logClaim adds n claims of f's key at storeNow to its rate log, as one entry whose value is
// n. A sequence makes the keys of claims at one clock reading distinct.
func (t *txn) logClaim(f *flowRecord, storeNow time.Time, n int) error {
	seq, err := t.flowLog.NextSequence()
	if err != nil {
		return err
	}
	k := append(flowPrefix(f.Key), timeIDKey(storeNow, int64(seq))...)
	if err := t.flowLog.Put(k, idKey(int64(n))); err != nil {
		return err
	}
	f.Logged += int64(n)
	return nil
}
