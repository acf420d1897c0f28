package dispatch

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// finalWakeTimeout bounds the last flush of a stopping worker: real time, so a database that
// is down delays shutdown by at most this long.
const finalWakeTimeout = 5 * time.Second

// mergeWakes is the set of branch steps whose children ended a run since the last flush. Runs
// add to it after their final write committed; one goroutine of Run takes it whole.
type mergeWakes struct {
	mu      sync.Mutex
	pending map[int64]struct{}
	// signal has room for one value: an add while the flusher waits wakes it, and adds
	// while it flushes coalesce.
	signal chan struct{}
}

func newMergeWakes() *mergeWakes {
	return &mergeWakes{pending: map[int64]struct{}{}, signal: make(chan struct{}, 1)}
}

func (m *mergeWakes) add(stepIDs ...int64) {
	m.mu.Lock()
	for _, id := range stepIDs {
		m.pending[id] = struct{}{}
	}
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// take empties the set and returns what it held, sorted.
func (m *mergeWakes) take() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 {
		return nil
	}
	out := make([]int64, 0, len(m.pending))
	for id := range m.pending {
		out = append(out, id)
	}
	m.pending = map[int64]struct{}{}
	slices.Sort(out)
	return out
}

func (m *mergeWakes) empty() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending) == 0
}

// wakeMerges flushes the set until ctx is done: as soon as a child run ended when it was
// idle, then at most once per MergeWakeEvery while children keep ending (longer after
// errors, doubling up to the poll maximum). Each flush is one sdk.Engine.WakeMerges call.
// When ctx is done it flushes what is left once more, within finalWakeTimeout.
//
// The pace is real time, like the claim window: it spaces database round trips, it is not
// workflow time, so a parent resumes after its last child also while a test's fake clock
// stands still.
func (w *Worker) wakeMerges(ctx context.Context, m *mergeWakes) {
	pause := w.cfg.mergeWakeEvery
	for {
		if m.empty() {
			select {
			case <-ctx.Done():
				w.finalWake(ctx, m)
				return
			case <-m.signal:
			}
		}
		if err := w.flushMergeWakes(ctx, m); err != nil {
			pause = max(pause, min(2*pause, w.cfg.pollMax))
		} else {
			pause = w.cfg.mergeWakeEvery
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			w.finalWake(ctx, m)
			return
		case <-t.C:
		}
	}
}

func (w *Worker) finalWake(ctx context.Context, m *mergeWakes) {
	if m.empty() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWakeTimeout)
	defer cancel()
	_ = w.flushMergeWakes(ctx, m)
}

// flushMergeWakes wakes the parents of the pending branch steps whose children are all done.
// A failure is logged and counted, never fatal: the steps go back into the set for the next
// flush (unless the store refused them as invalid), and a parent no flush wakes still resumes
// at its next merge probe.
func (w *Worker) flushMergeWakes(ctx context.Context, m *mergeWakes) error {
	ids := m.take()
	if len(ids) == 0 {
		return nil
	}
	woken, err := w.eng.WakeMerges(ctx, ids)
	w.stats.mergeWakes.Add(int64(woken))
	if err != nil {
		if ctx.Err() == nil {
			w.stats.wakeErrors.Add(1)
			w.log.Warn("waking parents of finished children failed; will try again, and their merge probes resume them meanwhile", "branches", len(ids), "error", err)
		}
		if !errors.Is(err, storage.ErrInvalid) {
			m.add(ids...)
		}
	}
	return err
}
