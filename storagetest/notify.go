package storagetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// Cases of storage.Notifier, run when the store implements it. Every store of a factory is
// fresh, so a case sees the notifications of changes made through the store it listens on;
// that the notifications also reach the listeners of other processes on the same database is
// each backend's own test (storage/postgres: TestNotifyWakesWorkerOfAnotherProcess).
//
// A notifier may send a value when nothing changed ("may have become runnable"), so a case
// cannot tell a notification its change caused from a spurious one; it makes its setup
// before it listens and drains the channel before its change, so a notifier that never
// sends, or sends for other changes only, fails it.

// notifyTimeout bounds a wait for a notification, a listener's channel to close or a burst of
// writes to finish: a deadline, not a measurement.
const notifyTimeout = 10 * time.Second

// notifyQuiet is how long a listener must stay silent before NotifyCoalesced stops counting
// what it receives. A slow notifier delivers fewer values within it, never more, so it
// cannot make a correct store fail.
const notifyQuiet = 300 * time.Millisecond

// listen subscribes to the store's notifications until the returned cancel is called or the
// case ends; it skips the case, naming the capability, when the store has no Notifier.
func (f *fixture) listen() (<-chan struct{}, context.CancelFunc) {
	f.t.Helper()
	n, ok := f.s.(storage.Notifier)
	if !ok {
		f.t.Skipf("capability %s: the store does not implement storage.Notifier", Notifier)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	f.t.Cleanup(cancel)
	ch, err := n.Listen(ctx)
	require.NoError(f.t, err, "Listen")
	require.NotNil(f.t, ch, "Listen returned a nil channel")
	return ch, cancel
}

// drain takes every value ch holds now, without waiting.
func drain(ch <-chan struct{}) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// requireNotified waits until every channel of chs has received a value, in any order,
// failing after notifyTimeout or if one closes instead.
func requireNotified(t *testing.T, after string, chs ...<-chan struct{}) {
	t.Helper()
	timer := time.NewTimer(notifyTimeout)
	defer timer.Stop()
	cases := make([]reflect.SelectCase, 0, len(chs)+1)
	for _, ch := range chs {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
	}
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)})
	for waiting := len(chs); waiting > 0; waiting-- {
		i, _, ok := reflect.Select(cases)
		if i == len(chs) {
			require.Failf(t, "no notification", "%d of %d listeners received nothing within %v after %s", waiting, len(chs), notifyTimeout, after)
		}
		require.True(t, ok, "a listener's channel closed instead of receiving after %s", after)
		cases[i].Chan = reflect.ValueOf((<-chan struct{})(nil)) // received: never ready again
	}
}

// notifiedBy makes change, which must notify every listener of chs, and requires that they
// receive. The change runs on a goroutine of its own while the case waits, as a worker reads
// its channel while other goroutines write, so a notifier whose sends wait for the reader
// does not hang the case (NotifyCoalesced fails such a notifier).
func notifiedBy(t *testing.T, what string, change func() error, chs ...<-chan struct{}) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- change() }()
	requireNotified(t, what, chs...)
	timer := time.NewTimer(notifyTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		require.NoError(t, err, what)
	case <-timer.C:
		require.Failf(t, "the store blocked", "%s did not return within %v", what, notifyTimeout)
	}
}

// createChange is a change that creates a workflow runnable at once.
func (f *fixture) createChange(name, key string) func() error {
	return func() error {
		_, _, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: name, Key: key, RunAt: at(0), Now: at(0)})
		return err
	}
}

// requireClosed waits until ch is closed, taking any values it still delivers, failing after
// notifyTimeout.
func requireClosed(t *testing.T, ch <-chan struct{}, after string) {
	t.Helper()
	timer := time.NewTimer(notifyTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			require.Failf(t, "listener not closed", "the listener's channel was not closed within %v after %s", notifyTimeout, after)
		}
	}
}

// testNotifyCreate: creating a workflow runnable at once notifies the listener.
func testNotifyCreate(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	ch, _ := f.listen()
	drain(ch)
	notifiedBy(t, "CreateWorkflow of a workflow runnable at once", f.createChange("notify.create", "k"), ch)
}

// testNotifyWake: waking a workflow that waits for a signal notifies the listener.
func testNotifyWake(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("notify.wake")
	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(time.Second)}, State: storage.StateIdle, Wait: storage.Wait{Kind: "signal", Step: "approve"}})
	ch, _ := f.listen()
	drain(ch)
	notifiedBy(t, "Wake of a workflow waiting for a signal", func() error {
		woken, err := f.s.Wake(f.ctx, w.ID, at(2*time.Second))
		if err == nil && !woken {
			err = fmt.Errorf("Wake of workflow %d waiting for a signal reports not woken", w.ID)
		}
		return err
	}, ch)
}

// testNotifyRetry: retrying a stalled workflow notifies the listener.
func testNotifyRetry(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, _ := f.stall("notify.retry")
	ch, _ := f.listen()
	drain(ch)
	notifiedBy(t, "Retry of a stalled workflow", func() error {
		_, err := f.s.Retry(f.ctx, w.ID, storage.RetryRequest{Now: at(time.Hour)})
		return err
	}, ch)
}

// testNotifyRelease: releasing a lease, which makes the workflow runnable at once, notifies
// the listener.
func testNotifyRelease(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	_, l := f.start("notify.release")
	ch, _ := f.listen()
	drain(ch)
	notifiedBy(t, "Release", func() error { return f.s.Release(f.ctx, l, at(time.Second)) }, ch)
}

// testNotifyCoalesced: a listener that does not read never blocks the store, and the values
// of many changes coalesce: it then receives at least one value, and fewer than one per
// change.
func testNotifyCoalesced(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	ch, _ := f.listen()
	drain(ch)
	const n = 32
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, _, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "notify.burst", Key: fmt.Sprint(i), RunAt: at(0), Now: at(0)}); err != nil {
				done <- fmt.Errorf("CreateWorkflow %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	timer := time.NewTimer(notifyTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-timer.C:
		require.Failf(t, "the store blocked", "%d creates did not finish within %v while a listener was not reading: sends must never block the store", n, notifyTimeout)
	}
	requireNotified(t, fmt.Sprintf("%d creates", n), ch)

	got := 1
	deadline := time.NewTimer(notifyTimeout)
	defer deadline.Stop()
	quiet := time.NewTimer(notifyQuiet)
	defer quiet.Stop()
count:
	for {
		select {
		case _, ok := <-ch:
			require.True(t, ok, "the listener's channel closed while its context is live")
			got++
			quiet.Reset(notifyQuiet)
		case <-quiet.C:
			break count
		case <-deadline.C:
			break count
		}
	}
	require.Less(t, got, n, "a listener that did not read during %d changes received a value per change: notifications must coalesce", n)
}

// testNotifyListeners: every listener receives; ending one listener's context closes its
// channel and leaves the others listening.
func testNotifyListeners(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	a, stopA := f.listen()
	b, stopB := f.listen()
	drain(a)
	drain(b)
	notifiedBy(t, "CreateWorkflow with two listeners", f.createChange("notify.listeners", "one"), a, b)

	stopA()
	requireClosed(t, a, "its context ended")
	drain(b)
	notifiedBy(t, "CreateWorkflow after another listener stopped", f.createChange("notify.listeners", "two"), b)

	stopB()
	requireClosed(t, b, "its context ended")
}
