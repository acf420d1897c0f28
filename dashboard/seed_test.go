package dashboard

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/sdktest"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// paymentError is the error type the stalled workflows fail with, for grouping.
type paymentError struct{ code int }

func (e *paymentError) Error() string { return fmt.Sprintf("payment declined (code %d)", e.code) }

var (
	okWF = sdk.New("orders", func(c *sdk.Context, in string) (string, error) {
		v, err := sdk.Step(c, "charge", func(context.Context) (string, error) { return "charged " + in, nil })
		return v, err
	})
	stallWF = sdk.New("payments", func(c *sdk.Context, in string) (string, error) {
		return sdk.Step(c, "charge", func(context.Context) (string, error) {
			if in == "ok" {
				return "paid", nil
			}
			return "", &paymentError{code: 51}
		})
	})
	failWF = sdk.New("reports", func(c *sdk.Context, in string) (string, error) {
		return "", errors.New("report template missing")
	}, sdk.WithRetry(sdk.Policy{MaxAttempts: 1}))
	waitWF = sdk.New("approvals", func(c *sdk.Context, in string) (bool, error) {
		return sdk.Receive[bool](c, "approval", "approve")
	})
	signalWF = sdk.New("gates", func(c *sdk.Context, in string) (string, error) {
		err := sdk.ContinueIf(c, "open", func(context.Context) (bool, error) { return false, nil })
		return "", err
	})
	childWF = sdk.New("child", func(c *sdk.Context, n int) (int, error) {
		return sdk.Step(c, "work", func(context.Context) (int, error) {
			if n%5 == 0 {
				return 0, &paymentError{code: n}
			}
			return n * 2, nil
		})
	})
	parentWF = sdk.New("batch", func(c *sdk.Context, n int) (int, error) {
		err := sdk.Branch(c, "items", func(b *sdk.BranchScope) error {
			for i := 1; i <= n; i++ {
				if err := sdk.Spawn(b, fmt.Sprint(i), childWF, i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		return n, sdk.Merge(c)
	})
)

// seeded is a store with workflows in every interesting state.
type seeded struct {
	env     *sdktest.Env
	store   storage.Storage
	done    int64 // a completed orders workflow
	stalled int64 // a stalled payments workflow
	failed  int64 // a failed reports workflow
	waiting int64 // an approvals workflow waiting for a message
	signal  int64 // a gates workflow waiting for a signal
	parent  int64 // a batch workflow waiting on its branch of 10 children (2 stalled)
	branch  int64 // the branch step ID of parent
}

func seed(t testing.TB) *seeded {
	t.Helper()
	// The store's clock (lease expiry) is the Env's fake clock too, so tests move time.
	var clk *sdk.FakeClock
	st := memory.New(memory.WithClock(func() time.Time { return clk.Now() }))
	t.Cleanup(func() { _ = st.Close() })
	env := sdktest.NewWith(t, sdktest.Options{Store: st}, okWF, stallWF, failWF, waitWF, signalWF, childWF, parentWF)
	clk = env.Clock()
	ctx := context.Background()
	e := env.Engine()
	s := &seeded{env: env, store: env.Store()}
	start := func(id int64, err error) int64 {
		t.Helper()
		if err != nil {
			t.Fatalf("seed: start: %v", err)
		}
		return id
	}
	for i := range 3 {
		h, err := okWF.Start(ctx, e, fmt.Sprintf("order-%d", i), fmt.Sprint(i))
		id := start(h.ID(), err)
		if i == 0 {
			s.done = id
		}
	}
	h1, err := stallWF.Start(ctx, e, "pay-1", "bad")
	s.stalled = start(h1.ID(), err)
	h2, err := stallWF.Start(ctx, e, "pay-2", "bad")
	start(h2.ID(), err)
	h3, err := failWF.Start(ctx, e, "report-1", "x")
	s.failed = start(h3.ID(), err)
	h4, err := waitWF.Start(ctx, e, "approval-1", "x")
	s.waiting = start(h4.ID(), err)
	h5, err := signalWF.Start(ctx, e, "gate-1", "x")
	s.signal = start(h5.ID(), err)
	h6, err := parentWF.Start(ctx, e, "batch-1", 10)
	s.parent = start(h6.ID(), err)
	env.Drain()
	_, steps, err := s.store.Load(ctx, s.parent)
	if err != nil {
		t.Fatalf("seed: load parent: %v", err)
	}
	for _, st := range steps {
		if st.Name == storage.BranchStepPrefix+"items" {
			s.branch = st.ID
		}
	}
	if s.branch == 0 {
		t.Fatalf("seed: parent has no branch step: %+v", steps)
	}
	for id, want := range map[int64]storage.State{s.done: storage.StateCompleted, s.stalled: storage.StateStalled, s.failed: storage.StateFailed, s.waiting: storage.StateIdle, s.signal: storage.StateIdle, s.parent: storage.StateIdle} {
		w, err := s.store.GetWorkflow(ctx, id)
		if err != nil || w.State != want {
			t.Fatalf("seed: workflow %d (%s) is %s (%v), want %s", id, w.Name, w.State, err, want)
		}
	}
	return s
}

func (s *seeded) state(t testing.TB, id int64) storage.State {
	t.Helper()
	w, err := s.store.GetWorkflow(context.Background(), id)
	if err != nil {
		t.Fatalf("get %d: %v", id, err)
	}
	return w.State
}

func (s *seeded) children(t testing.TB) []storage.Workflow {
	t.Helper()
	out, err := s.store.ListWorkflows(context.Background(), storage.ListFilter{ParentStepID: s.branch, Limit: storage.MaxListLimit})
	if err != nil {
		t.Fatalf("children: %v", err)
	}
	return out
}
