package bolt

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// createFlowRows stores n idle workflows of name with flow key flow, keys prefix0.., runnable
// at runAt, in transactions of 10,000 rows (far fewer fsyncs than one create each).
func createFlowRows(t testing.TB, s *Store, name, flow, prefix string, n int, runAt time.Time) {
	t.Helper()
	for from := 0; from < n; from += 10_000 {
		require.NoError(t, s.update(func(t *txn) error {
			for i := from; i < min(from+10_000, n); i++ {
				if _, _, err := t.create(storage.NewWorkflow{Name: name, Key: fmt.Sprint(prefix, i), Now: base, RunAt: runAt, Flow: flow}); err != nil {
					return err
				}
			}
			return nil
		}))
	}
}

// putFlow stores f at a whole second (the memory store keeps microseconds).
func putFlow(t testing.TB, s storage.FlowController, f storage.Flow) {
	t.Helper()
	_, wrote, err := s.PutFlow(context.Background(), f, false, base.Truncate(time.Second))
	require.NoError(t, err)
	require.True(t, wrote)
}

// checkFlowLogs compares each stored flow's count of claims in its rate log with the log.
func checkFlowLogs(t testing.TB, s *Store) {
	t.Helper()
	require.NoError(t, s.view(func(t *txn) error {
		want, got := map[string]int64{}, map[string]int64{}
		err := t.flows.ForEach(func(k, v []byte) error {
			f, err := decodeFlow(k, v)
			if err != nil {
				return err
			}
			want[f.Key] = f.Logged
			got[f.Key] = 0
			return nil
		})
		if err != nil {
			return err
		}
		err = t.flowLog.ForEach(func(k, v []byte) error {
			key := string(k[:bytes.IndexByte(k, 0)])
			if _, ok := got[key]; !ok {
				return fmt.Errorf("a rate log entry of key %q, which has no stored flow", key)
			}
			if len(v) != 8 || beUint(v) == 0 {
				return fmt.Errorf("a rate log entry of key %q counts %x claims", key, v)
			}
			got[key] += int64(beUint(v))
			return nil
		})
		if err != nil {
			return err
		}
		if fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Errorf("rate log counts %v, entries %v", want, got)
		}
		return nil
	}))
}

// TestFlowIndexes: the flow indexes follow a governed workflow through every change of state
// (claim, heartbeat, release, finish, cancel, lease expiry and takeover), and a rate log's
// stored count follows its entries as claims add them and the window drops them.
func TestFlowIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	putFlow(t, s, storage.Flow{Key: "k", Concurrency: 3, Rate: 4, Per: time.Minute})
	createFlowRows(t, s, "a", "k", "a", 4, at(0))
	createFlowRows(t, s, "b", "k", "b", 2, at(time.Second))
	createFlowRows(t, s, "c", "unstored", "c", 2, at(0))
	create(t, s, "free", "f", at(0))
	checkIndexes(t, s)

	now := at(time.Minute)
	setClock(s, now)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 10, TTL: time.Minute, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 6, "3 of k, both of the unstored key, the free one")
	checkIndexes(t, s)
	checkFlowLogs(t, s)
	var ofK []storage.Workflow
	for _, w := range got {
		if w.Flow == "k" {
			ofK = append(ofK, w)
		}
	}
	require.Len(t, ofK, 3)
	require.NoError(t, s.Heartbeat(ctx, ofK[0].Lease(), 2*time.Minute, now))
	checkIndexes(t, s)
	require.NoError(t, s.Release(ctx, ofK[1].Lease(), now))
	checkIndexes(t, s)
	require.NoError(t, s.FinishRun(ctx, ofK[2].Lease(), storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted}))
	checkIndexes(t, s)
	require.NoError(t, s.Cancel(ctx, ofK[0].ID, now))
	checkIndexes(t, s)

	// One more claim of k fits the rate of 4 per minute; then the window is full.
	got, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 10, Names: []string{"a", "b"}, TTL: time.Minute, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 1)
	checkFlowLogs(t, s)
	got, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 10, Names: []string{"a", "b"}, TTL: time.Minute, Now: now})
	require.NoError(t, err)
	require.Empty(t, got, "4 claims in the window")

	// A minute on, the window has dropped them all and the last lease has expired: 3 of the
	// 4 rows left (the concurrency of 3) are claimed.
	later := now.Add(time.Minute)
	setClock(s, later)
	got, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 10, Names: []string{"a", "b"}, TTL: time.Minute, Now: later})
	require.NoError(t, err)
	require.Len(t, got, 3)
	checkIndexes(t, s)
	checkFlowLogs(t, s)
	require.NoError(t, s.view(func(tx *txn) error {
		f, err := tx.getFlow("k")
		require.NoError(t, err)
		require.Equal(t, int64(3), f.Logged, "the first window's claims are gone from the log")
		return nil
	}))

	// Dropping the rate drops the log at the next claim; deleting the flow drops it at once.
	putFlow(t, s, storage.Flow{Key: "k", Concurrency: 3})
	_, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 1, Names: []string{"a"}, TTL: time.Minute, Now: later})
	require.NoError(t, err)
	checkFlowLogs(t, s)
	putFlow(t, s, storage.Flow{Key: "k", Rate: 1, Per: time.Hour})
	_, err = s.Claim(ctx, storage.ClaimRequest{Owner: "w2", Limit: 1, Names: []string{"a", "b"}, TTL: time.Minute, Now: later})
	require.NoError(t, err)
	checkFlowLogs(t, s)
	gone, err := s.DeleteFlow(ctx, "k")
	require.NoError(t, err)
	require.True(t, gone)
	checkFlowLogs(t, s)
	require.NoError(t, s.view(func(tx *txn) error {
		k, _ := tx.flowLog.Cursor().First()
		require.Nil(t, k, "the deleted flow's rate log is gone")
		return nil
	}))
}

// TestFlowClaimReadsBounded: with 100,000 governed rows held back at their limits (a
// concurrency reached by a live lease, a rate used up in the window), a claim of any name
// and a claim of named workflows each read a handful of keys of the flow indexes, and still
// take the due workflows of other flows and of none.
func TestFlowClaimReadsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	putFlow(t, s, storage.Flow{Key: "narrow", Concurrency: 1})
	putFlow(t, s, storage.Flow{Key: "slow", Rate: 1, Per: time.Hour})
	putFlow(t, s, storage.Flow{Key: "open", Concurrency: 100})
	const held = 50_000
	createFlowRows(t, s, "held.c", "narrow", "c", held, at(0))
	createFlowRows(t, s, "held.r", "slow", "r", held, at(0))
	now := at(time.Minute)
	setClock(s, now)
	first, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 10, TTL: time.Hour, Now: now})
	require.NoError(t, err)
	require.Len(t, first, 2, "one of each held flow: both are at their limits now")

	createFlowRows(t, s, "other", "open", "o", 10, at(time.Second))
	for i := range 10 {
		create(t, s, "free", fmt.Sprint(i), at(time.Second))
	}
	for _, names := range [][]string{nil, {"held.c", "held.r", "other", "free"}} {
		before := s.stats.flowKeys.Load()
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 8, Names: names, TTL: time.Hour, Now: now})
		require.NoError(t, err)
		read := s.stats.flowKeys.Load() - before
		t.Logf("names %v: claimed %d, read %d keys of the flow indexes beside %d held-back rows", names, len(got), read, 2*held-2)
		require.Len(t, got, 8)
		for _, w := range got {
			require.NotContains(t, []string{"held.c", "held.r"}, w.Name)
		}
		// 3 queues (one key each), the live lease of narrow, the log entry of slow, the live
		// leases of open (the 8 of the first claim, at most), and at most 8 rows of other's
		// queue with the one after them.
		require.LessOrEqual(t, read, int64(3+1+1+8+9), "reads bounded by the claim, not by the held-back backlog")
	}
}

// TestFlowBacklog: Backlog counts governed and ungoverned due rows together, in RunAt order.
func TestFlowBacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	create(t, s, "free", "f1", at(2*time.Second))
	createFlowRows(t, s, "gov", "k", "g", 3, at(time.Second))
	create(t, s, "free", "f2", at(3*time.Second))
	got, err := s.Backlog(ctx, at(time.Minute), 0)
	require.NoError(t, err)
	require.Equal(t, storage.Backlog{OldestDue: at(time.Second), Due: 5}, got)
	got, err = s.Backlog(ctx, at(2*time.Second), 0)
	require.NoError(t, err)
	require.Equal(t, storage.Backlog{OldestDue: at(time.Second), Due: 4}, got)
}

// TestFlowMaxFlows: a new key beyond MaxFlows is refused, a stored one may still change.
func TestFlowMaxFlows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	require.NoError(t, s.update(func(t *txn) error {
		for i := range storage.MaxFlows {
			if err := t.putFlow(&flowRecord{Flow: storage.Flow{Key: fmt.Sprint("f", i), UpdatedAt: base}}); err != nil {
				return err
			}
		}
		return nil
	}))
	_, _, err := s.PutFlow(ctx, storage.Flow{Key: "one.more"}, false, base)
	require.ErrorIs(t, err, storage.ErrTooLarge)
	_, wrote, err := s.PutFlow(ctx, storage.Flow{Key: "f7", Priority: 3}, false, base)
	require.NoError(t, err)
	require.True(t, wrote)
	list, err := s.ListFlows(ctx, base)
	require.NoError(t, err)
	require.Len(t, list, storage.MaxFlows)
}

// TestFlowCodec: the flow key round-trips; a record of codec version 3, written before flow
// keys, reads with none; flow records round-trip and start at version 4.
func TestFlowCodec(t *testing.T) {
	t.Parallel()
	r, err := decodeWorkflow(golden(t, goldenWorkflowV3))
	require.NoError(t, err)
	want := goldenRecord()
	want.Tags = map[string]string{"t": "v"}
	require.Equal(t, want, r)
	require.Empty(t, r.Flow)
	r.Flow = "flow.key"
	b := encodeWorkflow(r)
	require.Equal(t, byte(codecVersion), b[0])
	again, err := decodeWorkflow(b)
	require.NoError(t, err)
	require.Equal(t, r, again)
	name, st, err := decodeNameState(b)
	require.NoError(t, err)
	require.Equal(t, []byte(r.Name), name)
	require.Equal(t, r.State, st)

	f := &flowRecord{Flow: storage.Flow{Key: "k", Priority: -7, Concurrency: 3, Rate: 10, Per: time.Second, UpdatedAt: base}, Logged: 4}
	back, err := decodeFlow([]byte("k"), encodeFlow(f))
	require.NoError(t, err)
	require.Equal(t, f, back)
	old := encodeFlow(f)
	old[0] = 3
	_, err = decodeFlow([]byte("k"), old)
	require.ErrorIs(t, err, errCorrupt, "no build wrote flow records before codec version 4")
	_, err = decodeFlow([]byte("k"), encodeFlow(f)[:5])
	require.ErrorIs(t, err, errCorrupt)
}

// goldenWorkflowV3 is goldenRecord with the tag t=v as codec version 3 wrote it (tags, no
// flow key), kept as bytes: this build must read it with no flow key.
const goldenWorkflowV3 = "030e027766016b03696e000469646c65037b7d01aafce7bcedb4a0c734067369676e616c07617070726f76650002773100060254037463016501aafce7bcedb4a0c73401aaa4bef6f4b4a0c73400000101740176"

// TestFlowClaimsMatchMemory drives the bolt store and the reference memory store through the
// same random workflows, flows, claims, finishes, releases and clock moves, and requires the
// same claims (the same workflows in the same order) and the same ListFlows after each step.
func TestFlowClaimsMatchMemory(t *testing.T) {
	t.Parallel()
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Parallel()
			flowClaimsMatchMemory(t, seed)
		})
	}
}

func flowClaimsMatchMemory(t *testing.T, seed uint64) {
	ctx := context.Background()
	clock := base.Truncate(time.Second) // the memory store keeps microseconds
	b := newStore(t)
	b.clock = func() time.Time { return clock }
	m := memory.New(memory.WithClock(func() time.Time { return clock }))
	t.Cleanup(func() { _ = m.Close() })
	stores := []interface {
		storage.Storage
		storage.FlowController
	}{b, m}
	rnd := rand.New(rand.NewPCG(13, seed))
	flows := []storage.Flow{
		{Key: "k1", Priority: 5, Concurrency: 2},
		{Key: "k2", Priority: -1, Rate: 3, Per: 10 * time.Second},
		{Key: "k3", Concurrency: 3, Rate: 5, Per: 5 * time.Second},
		{Key: "grp", Priority: 2, Concurrency: 2},
	}
	for _, s := range stores {
		for _, f := range flows {
			putFlow(t, s, f)
		}
	}
	names := map[string]string{"n1": "k1", "n2": "k2", "n3": "k3", "g1": "grp", "g2": "grp", "u": "unstored", "free": ""}
	nameList := []string{"n1", "n2", "n3", "g1", "g2", "u", "free"}
	created := 0
	createSome := func(n int) {
		var ws []storage.NewWorkflow
		for range n {
			name := nameList[rnd.IntN(len(nameList))]
			ws = append(ws, storage.NewWorkflow{Name: name, Key: fmt.Sprint(created), Now: clock, RunAt: clock.Add(time.Duration(rnd.IntN(30)) * time.Second), Flow: names[name]})
			created++
		}
		for _, s := range stores {
			_, _, err := s.CreateWorkflows(ctx, ws)
			require.NoError(t, err)
		}
	}
	createSome(150)
	var held []storage.Workflow
	for step := range 400 {
		switch op := rnd.IntN(10); {
		case op < 5:
			req := storage.ClaimRequest{Owner: "w", Limit: 1 + rnd.IntN(6), TTL: time.Duration(5+rnd.IntN(20)) * time.Second, Now: clock}
			if rnd.IntN(2) == 0 {
				for _, n := range nameList {
					if rnd.IntN(2) == 0 {
						req.Names = append(req.Names, n)
					}
				}
				if len(req.Names) == 0 {
					req.Names = nameList[:1]
				}
			}
			var got [][]int64
			var claimed []storage.Workflow
			for _, s := range stores {
				ws, err := s.Claim(ctx, req)
				require.NoError(t, err)
				var ids []int64
				for _, w := range ws {
					ids = append(ids, w.ID)
					require.Equal(t, names[w.Name], w.Flow)
				}
				got = append(got, ids)
				claimed = ws
			}
			require.Equal(t, got[1], got[0], "step %d: claim %+v", step, req)
			held = append(held, claimed...)
		case op < 7 && len(held) > 0:
			i := rnd.IntN(len(held))
			w := held[i]
			held = slices.Delete(held, i, i+1)
			release := rnd.IntN(3) == 0
			var errs []error
			for _, s := range stores {
				var err error
				if release {
					err = s.Release(ctx, w.Lease(), clock)
				} else {
					err = s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: clock}, State: storage.StateCompleted})
				}
				errs = append(errs, err)
			}
			// A run whose lease expired and was taken over is fenced in both stores alike.
			require.Equal(t, errs[1] == nil, errs[0] == nil, "step %d: %v", step, errs)
		case op < 9:
			clock = clock.Add(time.Duration(rnd.IntN(3000)) * time.Millisecond)
		case rnd.IntN(4) == 0:
			f := flows[rnd.IntN(len(flows))]
			f.Concurrency = rnd.IntN(4)
			f.Priority = rnd.IntN(11) - 5
			for _, s := range stores {
				putFlow(t, s, f)
			}
		default:
			createSome(10)
		}
		var lists [][]storage.FlowState
		for _, s := range stores {
			l, err := s.ListFlows(ctx, clock)
			require.NoError(t, err)
			lists = append(lists, l)
		}
		require.Equal(t, lists[1], lists[0], "step %d: ListFlows", step)
	}
	checkIndexes(t, b)
	checkFlowLogs(t, b)
}

// TestOpenUpgradesSchema4: a file of schema version 4 opens as the current version with the
// flow buckets, and its rows (none has a flow key) claim as before.
func TestOpenUpgradesSchema4(t *testing.T) {
	t.Parallel()
	path := writeV1File(t, 4)
	s, err := Open(path, WithNoSync())
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.NoError(t, s.db.View(func(tx *bbolt.Tx) error {
		require.Equal(t, idKey(schemaVersion), tx.Bucket(bucketMeta).Get(metaVersion))
		for _, name := range [][]byte{bucketFlows, bucketFlowLog, bucketFlowRunnable, bucketFlowDue, bucketFlowRunning} {
			require.NotNil(t, tx.Bucket(name), "bucket %s", name)
		}
		return nil
	}))
	require.Equal(t, int64(7), claimOne(t, s, base, time.Minute).ID)
	checkIndexes(t, s)
}

// TestFlowExpiredLeasesCount: the live leases of a key are its running rows less the expired
// ones, however many expired ones lie ahead of them (more than the concurrency limit: the
// claim counts the live ones instead), for a claim and for ListFlows alike.
func TestFlowExpiredLeasesCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	createFlowRows(t, s, "a", "k", "a", 20, at(0))
	claim := func(now time.Time, limit int) []storage.Workflow {
		t.Helper()
		setClock(s, now)
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: limit, TTL: time.Minute, Now: now})
		require.NoError(t, err)
		return got
	}
	require.Len(t, claim(at(0), 5), 5, "no stored flow: no limit")
	require.Len(t, claim(at(30*time.Second), 1), 1)
	putFlow(t, s, storage.Flow{Key: "k", Concurrency: 2})
	// At 70s the first 5 leases have expired, the sixth is live until 90s.
	now := at(70 * time.Second)
	setClock(s, now)
	list, err := s.ListFlows(ctx, now)
	require.NoError(t, err)
	require.Equal(t, 1, list[0].Running)
	require.Len(t, claim(now, 10), 1, "one live lease of a concurrency of 2")
	require.Empty(t, claim(now, 10), "two live leases")
	checkIndexes(t, s)
}

// TestFlowOpenRecoversLeases: the leases of a dead process's governed runs stop counting
// against their flow's concurrency as soon as the file is opened again.
func TestFlowOpenRecoversLeases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chrono.db")
	s, err := Open(path, WithNoSync())
	require.NoError(t, err)
	putFlow(t, s, storage.Flow{Key: "k", Concurrency: 1})
	createFlowRows(t, s, "wf", "k", "w", 3, base)
	claim := func(s *Store) []storage.Workflow {
		t.Helper()
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "w", Limit: 3, TTL: time.Hour, Now: at(time.Second)})
		require.NoError(t, err)
		return got
	}
	require.Len(t, claim(s), 1)
	require.Empty(t, claim(s), "at the limit")
	require.NoError(t, s.Close()) // the process dies holding the lease

	s, err = Open(path, WithNoSync())
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	checkIndexes(t, s)
	require.Len(t, claim(s), 1, "the dead lease no longer counts")
	require.Empty(t, claim(s), "at the limit again")
	checkIndexes(t, s)
}
