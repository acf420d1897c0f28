package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// notifyingStore pushes wake-ups through a channel the test controls, like LISTEN/NOTIFY.
type notifyingStore struct {
	storage.Storage
	ch chan struct{}
}

func (s *notifyingStore) Listen(ctx context.Context) (<-chan struct{}, error) { return s.ch, nil }

func TestStoreNotificationWakesAnIdleWorker(t *testing.T) {
	t.Parallel()
	store := &notifyingStore{Storage: openStore(t), ch: make(chan struct{}, 1)}
	clock := newClock()
	wf := sdk.New("notified", func(c *sdk.Context, in int) (int, error) { return in + 1, nil })
	eng := newEngine(t, store, clock, wf)
	w := newWorker(t, eng, PollInterval(time.Hour, time.Hour))
	run(t, w)
	eventually(t, func() bool { return clock.count(time.Hour) >= 1 }, "worker idle on its long poll")

	// Another process starts a workflow: this engine's Changed() never fires, the clock never
	// moves, and only the store's notification can wake the worker.
	other := newEngine(t, store.Storage, clock, wf)
	h, err := wf.Start(bg, other, "k", 41)
	require.NoError(t, err)
	store.ch <- struct{}{}
	require.Equal(t, 42, result(t, h))
}
