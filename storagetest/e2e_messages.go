package storagetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// messageCases are the end-to-end cases of the API a Temporal user expects: messages,
// Call, bulk starts and tags, through the SDK and real workers on the backend.
func messageCases() []storageCase {
	return []storageCase{
		{"MessagesInOrder", testE2EMessagesInOrder},
		{"MessagesSurviveWorkerKill", testE2EMessagesWorkerKill},
		{"MessagesTopicsTimeoutKey", testE2EMessagesTopics},
		{"CallStartManyTags", testE2ECallStartMany},
	}
}

// testE2EMessagesTopics: two topics are separate (a message on one does not satisfy the
// other), a keyed message sent three times is received once, and a receive with a timeout
// ends with ErrWaitTimeout, which the workflow handles, once the deadline passes.
func testE2EMessagesTopics(t *testing.T, factory Factory) {
	wf := sdk.New("e2e.mailbox.topics", func(c *sdk.Context, _ int) (string, error) {
		a, err := sdk.Receive[string](c, "a", "alpha")
		if err != nil {
			return "", err
		}
		b, err := sdk.Receive[string](c, "b", "beta")
		if err != nil {
			return "", err
		}
		_, err = sdk.Receive[string](c, "b2", "beta", sdk.WaitTimeout(50*time.Millisecond))
		if !errors.Is(err, sdk.ErrWaitTimeout) {
			return "", fmt.Errorf("second beta: want a timeout, got %w", err)
		}
		return a + b, nil
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	ctx := resultCtx(t)
	h, err := wf.Start(ctx, eng, "k", 0)
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, sdk.Send(ctx, eng, h, "beta", "B", sdk.MessageKey("evt-1")))
	}
	startWorkers(t, eng, 1)
	require.NoError(t, sdk.Send(ctx, eng, h, "alpha", "A"))
	out, err := h.Result(ctx)
	if err != nil { // say where it stands, for the failure below
		w, steps, lerr := eng.Store().Load(context.Background(), h.ID())
		t.Logf("stored workflow (load error %v): %+v", lerr, w)
		for _, s := range steps {
			t.Logf("stored step %s: %s, %d attempts, meta %s", s.Name, s.State, s.Attempts, s.Meta)
		}
	}
	require.NoError(t, err)
	require.Equal(t, "AB", out, "the keyed message sent three times was received once")
}

// MessagesInOrder sends messagesBefore messages to one workflow before any worker runs and
// messagesDuring more while two workers run it. Each message sent while the workflow waits
// wakes it for a run that replays every receive before, so the second part is kept short.
const (
	messagesBefore = 10000
	messagesDuring = 100
)

// testE2EMessagesInOrder: 10,100 messages to one workflow, most sent before any worker runs
// and the rest while two workers run it, are received once each and in the order sent.
func testE2EMessagesInOrder(t *testing.T, factory Factory) {
	const n = messagesBefore + messagesDuring
	wf := sdk.New("e2e.mailbox", func(c *sdk.Context, _ int) (int, error) {
		for i := range n {
			v, err := sdk.Receive[int](c, fmt.Sprint(i), "seq")
			if err != nil {
				return 0, err
			}
			if v != i {
				return 0, sdk.Permanent(fmt.Errorf("receive %d got message %d", i, v))
			}
		}
		return n, nil
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	// 20,200 sequential storage units at least (a send and a receive each): on a loaded
	// machine a SQL backend needs more than the other cases' deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*e2eTimeout)
	defer cancel()
	h, err := wf.Start(ctx, eng, "k", 0)
	require.NoError(t, err)
	for i := range messagesBefore {
		require.NoError(t, sdk.Send(ctx, eng, h, "seq", i))
	}
	startWorkers(t, eng, 2)
	for i := messagesBefore; i < n; i++ {
		require.NoError(t, sdk.Send(ctx, eng, h, "seq", i))
	}
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, n, out)
	d, err := h.Describe(ctx)
	require.NoError(t, err)
	require.Equal(t, sdk.StateCompleted, d.State)
	require.ErrorIs(t, sdk.Send(ctx, eng, h, "seq", -1), sdk.ErrWrongState, "a completed workflow takes no message")
}

// testE2EMessagesWorkerKill: a worker killed while the step after a receive runs loses no
// message and receives none twice: the next worker's replay returns the same message, and
// only the interrupted step runs again.
func testE2EMessagesWorkerKill(t *testing.T, factory Factory) {
	var runs counter
	entered := make(chan struct{}, 1)
	wf := sdk.New("e2e.mailbox.kill", func(c *sdk.Context, _ int) ([]string, error) {
		var got []string
		for i := range 3 {
			v, err := sdk.Receive[string](c, fmt.Sprint("r", i), "jobs")
			if err != nil {
				return nil, err
			}
			_, err = sdk.Step(c, fmt.Sprint("handle", i), func(ctx context.Context) (int, error) {
				if runs.inc(v) == 1 && i == 1 {
					entered <- struct{}{}
					<-ctx.Done() // the worker is killed while the second message is handled
					return 0, ctx.Err()
				}
				return 0, nil
			})
			if err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	})
	eng, err := sdk.NewEngine(factory(t), sdk.WithWorkflows(wf))
	require.NoError(t, err)
	ctx := resultCtx(t)
	h, err := wf.Start(ctx, eng, "k", 0)
	require.NoError(t, err)
	for _, m := range []string{"a", "b"} {
		require.NoError(t, sdk.Send(ctx, eng, h, "jobs", m))
	}
	killWorkerWhen(ctx, t, eng, entered, "the second message was never handled")
	require.NoError(t, sdk.Send(ctx, eng, h, "jobs", "c"))

	startWorkers(t, eng, 1)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, out, "every message once, in order")
	require.Equal(t, 1, runs.get("a"), "a handled step is not repeated")
	require.Equal(t, 2, runs.get("b"), "only the interrupted step runs again, with the same message")
	require.Equal(t, 1, runs.get("c"))
}

// testE2ECallStartMany: workflows started in bulk with tags each Call a child; all complete,
// and a listing filtered by tag finds exactly the tagged ones.
func testE2ECallStartMany(t *testing.T, factory Factory) {
	const n = 60
	square := sdk.New("e2e.call.square", func(c *sdk.Context, in int) (int, error) { return in * in, nil })
	caller := sdk.New("e2e.call.parent", func(c *sdk.Context, in int) (int, error) {
		v, err := sdk.Call(c, "sq", square, in)
		if err != nil {
			return 0, err
		}
		return v + 1, nil
	})
	store := factory(t)
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(square, caller))
	require.NoError(t, err)
	ctx := resultCtx(t)
	starts := make([]sdk.Start[int], n)
	for i := range starts {
		tags := map[string]string{"parity": []string{"even", "odd"}[i%2], "suite": "e2e"}
		starts[i] = sdk.Start[int]{Key: fmt.Sprint("k", i), Input: i, Opts: []sdk.StartOption{sdk.Tags(tags)}}
	}
	hs, err := caller.StartMany(ctx, eng, starts)
	require.NoError(t, err)
	require.Len(t, hs, n)
	again, err := caller.StartMany(ctx, eng, starts)
	require.NoError(t, err)
	for i := range hs {
		require.Equal(t, hs[i].ID(), again[i].ID(), "StartMany is idempotent on keys")
	}
	startWorkers(t, eng, 2, dispatch.Concurrency(4))
	for i, h := range hs {
		out, err := h.Result(ctx)
		require.NoError(t, err, "workflow %d", i)
		require.Equal(t, i*i+1, out)
	}
	odd, err := store.ListWorkflows(ctx, storage.ListFilter{Name: caller.Name(), Tags: map[string]string{"parity": "odd"}, Limit: n})
	require.NoError(t, err)
	require.Len(t, odd, n/2)
	for _, w := range odd {
		require.Equal(t, "odd", w.Tags["parity"], w.Key)
	}
	d, err := hs[3].Describe(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"parity": "odd", "suite": "e2e"}, d.Tags)
}
