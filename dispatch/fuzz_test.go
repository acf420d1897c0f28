package dispatch

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// FuzzOptions gives New every option with any value. New either returns an error wrapping
// storage.ErrInvalid that names the option, or a worker whose configuration the store
// accepts (its claims and heartbeats pass storage's validation, the heartbeat comes before
// the lease ends) and that runs: Run, given a context already done, sets up and returns nil
// without a panic.
func FuzzOptions(f *testing.F) {
	f.Add(8, 0, 0, int64(30*time.Second), int64(0), int64(50*time.Millisecond), int64(time.Second), int64(30*time.Second), int64(time.Minute), int64(2*time.Millisecond), int64(200*time.Millisecond), "")
	f.Add(1, 1, 1, int64(time.Nanosecond), int64(0), int64(1), int64(1), int64(0), int64(1), int64(0), int64(1), "w")
	f.Add(0, -1, -1, int64(-1), int64(-1), int64(0), int64(-1), int64(-1), int64(0), int64(-1), int64(0), "o\x00")
	f.Add(math.MaxInt, storage.MaxClaim, storage.MaxClaim, int64(storage.MaxLeaseTTL), int64(storage.MaxLeaseTTL), int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), strings.Repeat("o", storage.MaxOwnerLen))
	f.Add(4, storage.MaxClaim+1, storage.MaxClaim+1, int64(storage.MaxLeaseTTL+1), int64(time.Second), int64(2), int64(1), int64(0), int64(1), int64(0), int64(1), strings.Repeat("o", storage.MaxOwnerLen+1))
	f.Add(math.MaxInt, 0, 1, int64(30*time.Second), int64(0), int64(50*time.Millisecond), int64(time.Second), int64(0), int64(time.Minute), int64(0), int64(time.Second), "")
	f.Add(2, 0, 0, int64(2), int64(0), int64(1), int64(1), int64(0), int64(1), int64(0), int64(1), "\xff")
	f.Fuzz(func(t *testing.T, concurrency, batch, prefetch int, ttl, heartbeat, pollMin, pollMax, shutdown, unknown, window, mergeWake int64, owner string) {
		opts := []Option{Concurrency(concurrency), Prefetch(prefetch), LeaseTTL(time.Duration(ttl)),
			PollInterval(time.Duration(pollMin), time.Duration(pollMax)), ShutdownTimeout(time.Duration(shutdown)),
			UnknownCheckEvery(time.Duration(unknown)), ClaimWindow(time.Duration(window)), MergeWakeEvery(time.Duration(mergeWake))}
		// Zero is "the default" for the options that derive one, as leaving them out.
		if batch != 0 {
			opts = append(opts, BatchSize(batch))
		}
		if heartbeat != 0 {
			opts = append(opts, HeartbeatEvery(time.Duration(heartbeat)))
		}
		if owner != "" {
			opts = append(opts, Owner(owner))
		}
		w, err := New(fuzzEngine(t), opts...)
		if err != nil {
			if !errors.Is(err, storage.ErrInvalid) || !strings.Contains(err.Error(), "option ") {
				t.Fatalf("New: error %q does not wrap ErrInvalid naming an option", err)
			}
			return
		}
		c := w.cfg
		now := time.Now()
		if err := storage.ValidateClaim(storage.ClaimRequest{Owner: w.Owner(), Limit: c.batch, TTL: c.ttl, Now: now}); err != nil {
			t.Fatalf("New accepted a configuration whose claims the store refuses: %v (%+v)", err, c)
		}
		if err := storage.ValidateHeartbeat(storage.Lease{WorkflowID: 1, Owner: w.Owner(), Token: 1}, c.ttl, now); err != nil {
			t.Fatalf("New accepted a configuration whose heartbeats the store refuses: %v (%+v)", err, c)
		}
		if c.heartbeat <= 0 || c.heartbeat >= c.ttl || c.pollMin <= 0 || c.pollMax < c.pollMin {
			t.Fatalf("New accepted timings that cannot work: %+v", c)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := w.Run(ctx); err != nil {
			t.Fatalf("Run with a done context: %v", err)
		}
	})
}

// fuzzEngine returns an engine with one workflow over a fresh memory store.
func fuzzEngine(t *testing.T) *sdk.Engine {
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	wf := sdk.New("fuzz", func(c *sdk.Context, _ struct{}) (int, error) { return 0, nil })
	eng, err := sdk.NewEngine(st, sdk.WithWorkflows(wf), sdk.WithLogger(discard))
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	return eng
}

// TestConcurrencyPlusPrefetchOverflow: a concurrency so large that adding the prefetch
// overflows is refused by New, naming the option, instead of making Run panic sizing its
// channels (found by FuzzOptions).
func TestConcurrencyPlusPrefetchOverflow(t *testing.T) {
	_, err := New(fuzzEngine(t), Concurrency(math.MaxInt), Prefetch(1))
	if !errors.Is(err, storage.ErrInvalid) || !strings.Contains(err.Error(), "option Concurrency") {
		t.Fatalf("New(Concurrency(MaxInt), Prefetch(1)) = %v, want an error wrapping ErrInvalid naming Concurrency", err)
	}
	w, err := New(fuzzEngine(t), Concurrency(math.MaxInt))
	if err != nil {
		t.Fatalf("New(Concurrency(MaxInt)) without prefetch: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
