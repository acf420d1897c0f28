package sdk_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// readCounter counts GetWorkflow calls, the reads Result waiters make.
type readCounter struct {
	storage.Storage
	reads atomic.Int64
}

func (c *readCounter) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	c.reads.Add(1)
	return c.Storage.GetWorkflow(ctx, id)
}

// TestResultWaitersReadOnlyOnChangesOfTheirOwnWorkflow: n waiters, each on its own workflow,
// while every workflow is signalled and then run, one after another (2n engine events). Each waiter reads its
// workflow once to start and once per change of its own, so reads per waiter stay flat as n
// grows, instead of every waiter re-reading on every event.
func TestResultWaitersReadOnlyOnChangesOfTheirOwnWorkflow(t *testing.T) {
	t.Parallel()
	for _, n := range []int{40, 400} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			gate := sdk.New("waiters.one", func(c *sdk.Context, _ int) (int, error) { return 1, nil })
			e := newEnv(t, sdk.WithWorkflows(gate))
			rc := &readCounter{Storage: e.store}
			// An engine of its own over the counting store whose slow poll (for other
			// processes) never fires during the test: every read is a wake-up's.
			eng, err := sdk.NewEngine(rc, sdk.WithWorkflows(gate), sdk.WithClock(e.clock), sdk.WithResultPoll(time.Hour, time.Hour))
			require.NoError(t, err)
			handles := make([]*sdk.Handle[int], n)
			for i := range handles {
				handles[i], err = gate.Start(ctx, eng, fmt.Sprintf("k%d", i), 0)
				require.NoError(t, err)
			}
			var wg sync.WaitGroup
			for _, h := range handles {
				wg.Go(func() {
					out, err := h.Result(ctx)
					if err != nil || out != 1 {
						t.Errorf("Result of %s: %d, %v", h.Key(), out, err)
					}
				})
			}
			require.Eventually(t, func() bool { return rc.reads.Load() == int64(n) }, 10*time.Second, time.Millisecond,
				"every waiter made its first read")
			for _, h := range handles {
				require.NoError(t, eng.Signal(ctx, h.ID()))
				claimed, err := rc.Claim(ctx, storage.ClaimRequest{Owner: "t", Limit: 1, Names: eng.Names(), TTL: time.Minute, Now: e.clock.Now()})
				require.NoError(t, err)
				require.Len(t, claimed, 1)
				require.NoError(t, eng.Execute(ctx, claimed[0]))
			}
			wg.Wait()
			perWaiter := float64(rc.reads.Load()) / float64(n)
			t.Logf("%d waiters: %.2f reads each", n, perWaiter)
			require.LessOrEqual(t, perWaiter, 3.0, "a waiter reads at start and once per change of its own workflow")
		})
	}
}
