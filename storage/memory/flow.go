package memory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// flowState is a stored flow and the times of its claims within the current rate window.
type flowState struct {
	f storage.Flow
	// claims are the store-clock times of the claims of the key's workflows, oldest first,
	// kept while Rate is set and only as long as they are in the window.
	claims []time.Time
}

// inWindow drops the claims that left the rate window ending at now and counts the rest.
func (fs *flowState) inWindow(now time.Time) int {
	if fs.f.Rate == 0 {
		fs.claims = nil
		return 0
	}
	from := now.Add(-fs.f.Per)
	i := 0
	for i < len(fs.claims) && !fs.claims[i].After(from) {
		i++
	}
	fs.claims = fs.claims[i:]
	return len(fs.claims)
}

// trackRunning adds workflow id to, or takes it from, the running set of flow key.
func (s *Store) trackRunning(key string, id int64, running bool) {
	set := s.running[key]
	if running {
		if set == nil {
			set = map[int64]struct{}{}
			s.running[key] = set
		}
		set[id] = struct{}{}
		return
	}
	delete(set, id)
	if len(set) == 0 {
		delete(s.running, key)
	}
}

// liveRunning counts the running workflows of key whose lease is live by storeNow, up to max.
func (s *Store) liveRunning(key string, storeNow time.Time, max int) int {
	n := 0
	for id := range s.running[key] {
		if n == max {
			break
		}
		if storeNow.Before(s.byID[id].w.LeaseUntil) {
			n++
		}
	}
	return n
}

// PutFlow stores f under its key (see storage.FlowController).
func (s *Store) PutFlow(ctx context.Context, f storage.Flow, ifMissing bool, now time.Time) (storage.Flow, bool, error) {
	if err := storage.ValidateFlow(f, now); err != nil {
		return storage.Flow{}, false, err
	}
	if err := s.begin(ctx, "put flow"); err != nil {
		return storage.Flow{}, false, err
	}
	defer s.mu.Unlock()
	fs := s.flows[f.Key]
	if fs != nil && ifMissing {
		return fs.f, false, nil
	}
	if fs == nil {
		if len(s.flows) >= storage.MaxFlows {
			return storage.Flow{}, false, fmt.Errorf("memory: put flow %q: %w: the store holds %d flows already", f.Key, storage.ErrTooLarge, storage.MaxFlows)
		}
		fs = &flowState{}
		s.flows[f.Key] = fs
	}
	f.UpdatedAt = stamp(now)
	fs.f = f
	return f, true, nil
}

// DeleteFlow removes the flow stored under key.
func (s *Store) DeleteFlow(ctx context.Context, key string) (bool, error) {
	if err := storage.ValidateFlowKey(key); err != nil {
		return false, err
	}
	if err := s.begin(ctx, "delete flow"); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	_, ok := s.flows[key]
	delete(s.flows, key)
	return ok, nil
}

// ListFlows returns every stored flow in key order with its counts.
func (s *Store) ListFlows(ctx context.Context, now time.Time) ([]storage.FlowState, error) {
	if err := storage.ValidateListFlows(now); err != nil {
		return nil, err
	}
	if err := s.begin(ctx, "list flows"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	storeNow, bound := s.storeNow(), micros(stamp(now))
	out := make([]storage.FlowState, 0, len(s.flows))
	for key, fs := range s.flows {
		st := storage.FlowState{Flow: fs.f, Running: s.liveRunning(key, storeNow, storage.FlowProbe)}
		for _, byFlow := range s.dueByFlow {
			q := byFlow[key]
			if q == nil {
				continue
			}
			q.ascend(func(e entry) bool {
				if e.at > bound || st.Due == storage.FlowProbe {
					return false
				}
				if s.runnable(&s.byID[e.id].w, storeNow) {
					st.Due++
				}
				return true
			})
		}
		st.Capped = st.Running == storage.FlowProbe || st.Due == storage.FlowProbe
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b storage.FlowState) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// runnable reports whether w, due, may be claimed: idle, or running with a lease expired by
// storeNow.
func (s *Store) runnable(w *storage.Workflow, storeNow time.Time) bool {
	return w.State == storage.StateIdle || (w.State == storage.StateRunning && !storeNow.Before(w.LeaseUntil))
}
