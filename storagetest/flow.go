package storagetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// FlowControl is storage.FlowController: priorities, concurrency and rate limits enforced in
// Claim. Its cases are the Flow* cases.
const FlowControl Capability = "FlowControl"

// flows returns the fixture's store as a storage.FlowController, or skips the case.
func (f *fixture) flows() storage.FlowController {
	fc, ok := f.s.(storage.FlowController)
	if !ok {
		f.t.Skipf("capability %s: the store does not implement storage.FlowController", FlowControl)
	}
	return fc
}

// putFlow stores fl, replacing any stored flow of its key.
func (f *fixture) putFlow(fl storage.Flow) storage.Flow {
	f.t.Helper()
	got, wrote, err := f.flows().PutFlow(f.ctx, fl, false, at(0))
	require.NoError(f.t, err, "PutFlow %+v", fl)
	require.True(f.t, wrote, "PutFlow %+v without ifMissing writes", fl)
	return got
}

// createFlow stores n workflows of name governed by flow key, runnable at runAt, in one
// batch, keyed prefix-0, prefix-1, ... .
func (f *fixture) createFlow(name, flow, prefix string, n int, runAt time.Time) []storage.Workflow {
	f.t.Helper()
	var out []storage.Workflow
	for start := 0; start < n; start += storage.MaxCreateBatch {
		var ws []storage.NewWorkflow
		for i := start; i < min(n, start+storage.MaxCreateBatch); i++ {
			ws = append(ws, storage.NewWorkflow{Name: name, Key: fmt.Sprintf("%s-%d", prefix, i), RunAt: runAt, Now: at(0), Flow: flow})
		}
		got, created, err := f.s.CreateWorkflows(f.ctx, ws)
		require.NoError(f.t, err, "CreateWorkflows of %d %q with flow %q", len(ws), name, flow)
		for i, c := range created {
			require.True(f.t, c, "workflow %q %q is new", name, ws[i].Key)
			require.Equal(f.t, flow, got[i].Flow, "the created workflow carries its flow key")
		}
		out = append(out, got...)
	}
	return out
}

// countByName counts the workflows of ws by name.
func countByName(ws []storage.Workflow) map[string]int {
	out := map[string]int{}
	for _, w := range ws {
		out[w.Name]++
	}
	return out
}

// done finishes every workflow of ws as completed at now.
func (f *fixture) done(ws []storage.Workflow, now time.Time) {
	f.t.Helper()
	for _, w := range ws {
		f.finish(w.Lease(), storage.Finish{Commit: storage.Commit{Now: now}, State: storage.StateCompleted, Output: []byte(`1`)})
	}
}

// testFlowStored: PutFlow stores, replaces and (with ifMissing) keeps a flow; ListFlows
// returns every stored flow in key order; DeleteFlow removes one; bad flows are refused with
// ErrInvalid and write nothing; a workflow keeps the flow key it was created with, in every
// read, and a bad key is refused.
func testFlowStored(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	fc := f.flows()
	now := at(time.Minute)
	b := storage.Flow{Key: "flow.b", Priority: 5, Concurrency: 3, Rate: 10, Per: time.Second}
	got, wrote, err := fc.PutFlow(f.ctx, b, false, now)
	require.NoError(t, err)
	require.True(t, wrote)
	want := b
	want.UpdatedAt = now
	require.Equal(t, want, got)
	got, wrote, err = fc.PutFlow(f.ctx, storage.Flow{Key: "flow.b", Concurrency: 99}, true, at(2*time.Minute))
	require.NoError(t, err)
	require.False(t, wrote, "ifMissing leaves a stored flow alone")
	require.Equal(t, want, got, "ifMissing returns the stored flow")
	a := f.putFlow(storage.Flow{Key: "flow.a", Priority: -3})

	for _, bad := range []storage.Flow{
		{Key: ""},
		{Key: "flow.bad", Priority: storage.MaxPriority + 1},
		{Key: "flow.bad", Priority: storage.MinPriority - 1},
		{Key: "flow.bad", Concurrency: -1},
		{Key: "flow.bad", Concurrency: storage.MaxConcurrency + 1},
		{Key: "flow.bad", Rate: -1, Per: time.Second},
		{Key: "flow.bad", Rate: storage.MaxRate + 1, Per: time.Second},
		{Key: "flow.bad", Rate: 5},
		{Key: "flow.bad", Rate: 5, Per: time.Microsecond},
		{Key: "flow.bad", Rate: 5, Per: storage.MaxPer + time.Second},
		{Key: "flow.bad", Per: time.Second},
		{Key: "flow.b", Concurrency: -1},
	} {
		_, _, err := fc.PutFlow(f.ctx, bad, false, now)
		require.ErrorIs(t, err, storage.ErrInvalid, "PutFlow %+v", bad)
	}
	_, _, err = fc.PutFlow(f.ctx, storage.Flow{Key: "flow.bad"}, false, time.Time{})
	require.ErrorIs(t, err, storage.ErrInvalid, "PutFlow without a now")

	list, err := fc.ListFlows(f.ctx, now)
	require.NoError(t, err)
	require.Len(t, list, 2, "two flows stored, the bad ones not: %+v", list)
	require.Equal(t, a, list[0].Flow)
	require.Equal(t, want, list[1].Flow, "a refused PutFlow left the stored flow alone")

	b2 := f.putFlow(storage.Flow{Key: "flow.b", Concurrency: 1})
	list, err = fc.ListFlows(f.ctx, now)
	require.NoError(t, err)
	require.Equal(t, b2, list[1].Flow, "PutFlow replaces")

	gone, err := fc.DeleteFlow(f.ctx, "flow.a")
	require.NoError(t, err)
	require.True(t, gone)
	gone, err = fc.DeleteFlow(f.ctx, "flow.a")
	require.NoError(t, err)
	require.False(t, gone, "a second DeleteFlow finds nothing")
	_, err = fc.DeleteFlow(f.ctx, "")
	require.ErrorIs(t, err, storage.ErrInvalid)
	list, err = fc.ListFlows(f.ctx, now)
	require.NoError(t, err)
	require.Len(t, list, 1)

	// The flow key of a workflow: stored as given, in every read, and never changed.
	w, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "flow.wf", Key: "k", Now: at(0), Flow: "flow.b"})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "flow.b", w.Flow)
	require.Equal(t, "flow.b", f.get(w.ID).Flow)
	loaded, _ := f.load(w.ID)
	require.Equal(t, "flow.b", loaded.Flow)
	again, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "flow.wf", Key: "k", Now: at(0), Flow: "flow.other"})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, "flow.b", again.Flow, "the stored workflow wins, with its flow key")
	plain := f.create("flow.plain", "k", at(0))
	require.Empty(t, plain.Flow)
	_, _, err = f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "flow.wf", Key: "bad", Now: at(0), Flow: string([]byte{0xff})})
	require.ErrorIs(t, err, storage.ErrInvalid, "a flow key that is no valid name")
	_, err = f.s.FindWorkflow(f.ctx, "flow.wf", "bad")
	require.ErrorIs(t, err, storage.ErrNotFound, "a refused create writes nothing")
	claimed := f.claim("w", at(0), 10, "flow.wf")
	require.Len(t, claimed, 1)
	require.Equal(t, "flow.b", claimed[0].Flow, "Claim returns the flow key")
}

// testFlowConcurrency: a claim takes no more of a flow than its concurrency leaves; runs that
// end (finished, released, cancelled) or whose lease expires stop counting; a limit raised or
// lowered applies from the next claim, counting the runs claimed before it was set.
func testFlowConcurrency(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	f.putFlow(storage.Flow{Key: "flow.conc", Concurrency: 3})
	f.createFlow("flow.c", "flow.conc", "c", 20, at(0))
	now := at(time.Second)
	first := f.claim("w1", now, 10, "flow.c")
	require.Len(t, first, 3, "a concurrency of 3 lets 3 run")
	require.Empty(t, f.claim("w2", now, 10, "flow.c"), "no room left")

	// A finished run makes room for one.
	f.done(first[:1], now)
	second := f.claim("w2", now, 10, "flow.c")
	require.Len(t, second, 1)
	// Released and cancelled runs stop counting too.
	require.NoError(t, f.s.Release(f.ctx, first[1].Lease(), now))
	require.NoError(t, f.s.Cancel(f.ctx, first[2].ID, now))
	third := f.claim("w3", now, 10, "flow.c")
	require.Len(t, third, 2, "a released and a cancelled run make room for two")

	// Raising the limit applies at once; lowering it counts every run of the key.
	f.putFlow(storage.Flow{Key: "flow.conc", Concurrency: 5})
	require.Len(t, f.claim("w4", now, 10, "flow.c"), 2, "3 running, the limit raised to 5")
	f.putFlow(storage.Flow{Key: "flow.conc", Concurrency: 2})
	require.Empty(t, f.claim("w4", now, 10, "flow.c"), "5 running, the limit lowered to 2")
	running := append(append([]storage.Workflow{}, second...), third...)
	f.done(running, now) // 2 of the 5 remain
	require.Empty(t, f.claim("w4", now, 10, "flow.c"), "2 running, at the lowered limit")

	// Removing the limit lets the rest run.
	f.putFlow(storage.Flow{Key: "flow.conc"})
	rest := f.claim("w5", now, 20, "flow.c")
	require.Len(t, rest, 13, "no limit: every due workflow left (4 completed, 1 cancelled, 2 running)")
}

// testFlowLeaseExpiry: a dead worker's runs stop counting against a concurrency limit once
// their leases expire by the store's clock, and their workflows are taken over.
func testFlowLeaseExpiry(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	f.putFlow(storage.Flow{Key: "flow.exp", Concurrency: 2})
	f.createFlow("flow.e", "flow.exp", "e", 4, at(0))
	now := at(time.Second)
	dead, err := f.s.Claim(f.ctx, storage.ClaimRequest{Owner: "dead", Limit: 4, Names: []string{"flow.e"}, TTL: shortTTL, Now: now})
	require.NoError(t, err)
	require.Len(t, dead, 2)
	require.Empty(t, f.claim("live", now, 4, "flow.e"))
	f.awaitStoreClock(shortTTL)
	// Due again by the caller's clock from now+shortTTL: the takeovers and the other two.
	later := now.Add(time.Minute)
	got := f.claim("live", later, 4, "flow.e")
	require.Len(t, got, 2, "the expired leases no longer count; the limit still holds")
	require.Empty(t, f.claim("live", later, 4, "flow.e"), "at the limit again")
	f.done(got, later)
	last := f.claim("live", later, 4, "flow.e")
	require.ElementsMatch(t, ids(dead), ids(last), "the dead worker's workflows, taken over")
}

// testFlowSkewedClocks: a run counts against its flow's concurrency by its lease, which the
// store's clock keeps, whatever the clocks of the claimers say: a claimer an hour ahead of the
// one holding the run does not see room, nor does one an hour behind.
func testFlowSkewedClocks(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	f.putFlow(storage.Flow{Key: "flow.skew", Concurrency: 1})
	f.createFlow("flow.s", "flow.skew", "s", 3, at(0))
	require.Len(t, f.claim("slow", at(time.Second), 3, "flow.s"), 1)
	require.Empty(t, f.claim("ahead", at(time.Hour), 3, "flow.s"), "a claimer an hour ahead")
	require.Empty(t, f.claim("behind", at(time.Millisecond), 3, "flow.s"), "a claimer behind")
}

// testFlowRate: at most Rate workflows of a flow are claimed in any window of Per by the
// store's clock.
func testFlowRate(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	per := time.Second
	f.putFlow(storage.Flow{Key: "flow.rate", Rate: 3, Per: per})
	f.createFlow("flow.r", "flow.rate", "r", 10, at(0))
	now := at(time.Second)
	start := time.Now()
	first := f.claim("w", now, 10, "flow.r")
	require.Len(t, first, 3, "a rate of 3 per %v", per)
	f.done(first, now) // ended runs still count against the rate
	if time.Since(start) < per/2 {
		require.Empty(t, f.claim("w", now, 10, "flow.r"), "the window is used up")
	}
	f.awaitStoreClock(per)
	second := f.claim("w", now, 10, "flow.r")
	require.Len(t, second, 3, "a new window")
	// A concurrency limit and a rate together: the smaller room wins.
	f.putFlow(storage.Flow{Key: "flow.rate", Concurrency: 4, Rate: 3, Per: per})
	f.awaitStoreClock(per)
	require.Len(t, f.claim("w", now, 10, "flow.r"), 1, "3 running of 4")
}

// testFlowPriority: among due workflows a claim takes the higher flow priority first (no flow
// is priority 0), then the earlier RunAt, then the lower ID; names of one key share its
// priority, and changing it reorders claims at once.
func testFlowPriority(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	f.putFlow(storage.Flow{Key: "flow.high", Priority: 10})
	f.putFlow(storage.Flow{Key: "flow.low", Priority: -10})
	low := f.createFlow("flow.p.low", "flow.low", "l", 2, at(0))
	none := f.create("flow.p.none", "n", at(time.Second))
	high := f.createFlow("flow.p.high", "flow.high", "h", 2, at(2*time.Second))
	unstored := f.createFlow("flow.p.unstored", "flow.unstored", "u", 1, at(3*time.Second))
	now := at(time.Minute)
	names := []string{"flow.p.low", "flow.p.none", "flow.p.high", "flow.p.unstored"}
	got := f.claim("w", now, 2, names...)
	require.Equal(t, ids(high), ids(got), "the high priority first, whatever their RunAt")
	got = f.claim("w", now, 2, names...)
	require.Equal(t, []int64{none.ID, unstored[0].ID}, ids(got), "then priority 0 (no flow, or a key without a stored flow) by RunAt")
	// Raise the low key above everything.
	f.putFlow(storage.Flow{Key: "flow.low", Priority: 20})
	more := f.createFlow("flow.p.none2", "", "x", 1, at(0))
	got = f.claim("w", now, 3, append(names, "flow.p.none2")...)
	require.Equal(t, append(ids(low), more[0].ID), ids(got), "a changed priority applies at once")
	// Without names, the same order.
	f.putFlow(storage.Flow{Key: "flow.other", Priority: 1})
	o := f.createFlow("flow.p.o", "flow.other", "o", 1, at(5*time.Second))
	z := f.create("flow.p.z", "z", at(0))
	got = f.claim("w", now, 2)
	require.Equal(t, []int64{o[0].ID, z.ID}, ids(got), "a claim of any name orders by priority too")
}

// testFlowNoHeadOfLine: a flow at its limit, with a deep due backlog older than everything
// else, holds back nothing but its own workflows: a claim still fills its limit from other
// flows and from workflows without one, and a group key limits all of its names together.
func testFlowNoHeadOfLine(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	f.putFlow(storage.Flow{Key: "flow.narrow", Concurrency: 1})
	f.putFlow(storage.Flow{Key: "flow.group", Concurrency: 2})
	f.createFlow("flow.h.narrow", "flow.narrow", "n", 300, at(0))
	f.createFlow("flow.h.g1", "flow.group", "a", 5, at(time.Second))
	f.createFlow("flow.h.g2", "flow.group", "b", 5, at(time.Second))
	f.createFlow("flow.h.free", "", "f", 20, at(2*time.Second))
	f.createFlow("flow.h.open", "flow.open", "o", 20, at(2*time.Second))
	now := at(time.Minute)
	names := []string{"flow.h.narrow", "flow.h.g1", "flow.h.g2", "flow.h.free", "flow.h.open"}
	got := f.claim("w", now, 10, names...)
	by := countByName(got)
	require.Len(t, got, 10, "a full claim: %v", by)
	require.Equal(t, 1, by["flow.h.narrow"], "the narrow flow's limit")
	require.Equal(t, 2, by["flow.h.g1"]+by["flow.h.g2"], "the group's limit, over both names")
	got = f.claim("w", now, 100, names...)
	by = countByName(got)
	require.Zero(t, by["flow.h.narrow"]+by["flow.h.g1"]+by["flow.h.g2"], "the limited flows are full: %v", by)
	require.Len(t, got, 40-7, "every other due workflow: %v", by)
	// Any name: the same limits.
	f.createFlow("flow.h.free", "", "g", 5, at(2*time.Second))
	got = f.claim("w", now, 30)
	require.Len(t, got, 5, "only the new free workflows: %v", countByName(got))
}

// testFlowList: ListFlows counts each stored flow's running workflows with a live lease and
// its due ones, capped at FlowProbe.
func testFlowList(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	fc := f.flows()
	f.putFlow(storage.Flow{Key: "flow.l", Concurrency: 2})
	f.putFlow(storage.Flow{Key: "flow.empty"})
	f.createFlow("flow.l1", "flow.l", "a", 4, at(0))
	f.createFlow("flow.l2", "flow.l", "b", 3, at(0))
	f.createFlow("flow.l2", "flow.l", "later", 3, at(time.Hour))
	now := at(time.Second)
	f.claim("w", now, 10, "flow.l1", "flow.l2")
	list, err := fc.ListFlows(f.ctx, now)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "flow.empty", list[0].Key)
	require.Zero(t, list[0].Running+list[0].Due)
	l := list[1]
	require.Equal(t, 2, l.Running, "%+v", l)
	require.Equal(t, 5, l.Due, "due by now, held back: %+v", l)
	require.False(t, l.Capped)
	_, err = fc.ListFlows(f.ctx, time.Time{})
	require.ErrorIs(t, err, storage.ErrInvalid)
}

// testFlowSpawn: children spawned with a flow key keep it, and their flow limits them.
func testFlowSpawn(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	f.putFlow(storage.Flow{Key: "flow.kids", Concurrency: 2})
	_, l := f.start("flow.parent")
	var kids []storage.NewWorkflow
	for i := range 6 {
		kids = append(kids, storage.NewWorkflow{Name: "flow.kid", Key: fmt.Sprint(i), Now: at(0), Flow: "flow.kids"})
	}
	res, err := f.s.SpawnBatch(f.ctx, l, storage.SpawnRequest{
		Branch: "fan", Steps: []storage.Step{branchStep("fan")}, Children: kids, Now: at(0),
	})
	require.NoError(t, err, "SpawnBatch")
	require.Equal(t, 6, res.Inserted)
	got := f.claim("w", at(time.Second), 10, "flow.kid")
	require.Len(t, got, 2)
	for _, w := range got {
		require.Equal(t, "flow.kids", w.Flow)
	}
}

// testFlowConcurrentClaimers: 16 claimers claiming and finishing at once never have more
// than a flow's concurrency running, and run more than one at a time; every workflow runs
// exactly once.
func testFlowConcurrentClaimers(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	const limit, total, claimers = 4, 200, 16
	f.putFlow(storage.Flow{Key: "flow.cc", Concurrency: limit})
	f.createFlow("flow.cc", "flow.cc", "c", total, at(0))
	f.createFlow("flow.cc.free", "", "f", total, at(0))
	stats := RunFlowClaimers(f.ctx, t, f.s, FlowClaimersConfig{Claimers: claimers, Names: []string{"flow.cc", "flow.cc.free"}, Until: 2 * total, Hold: 20 * time.Millisecond})
	t.Logf("flow.cc: %d runs, at most %d at once (limit %d); the free name: at most %d at once",
		stats.Runs["flow.cc"], stats.MaxRunning["flow.cc"], limit, stats.MaxRunning["flow.cc.free"])
	require.Equal(t, total, stats.Runs["flow.cc"])
	require.Equal(t, total, stats.Runs["flow.cc.free"])
	require.LessOrEqual(t, stats.MaxRunning["flow.cc"], limit, "the concurrency limit held")
	// Not merely obeyed by running one at a time. (Reaching the limit itself depends on the
	// machine's load: on a busy machine 16 claimers may never overlap four times.)
	require.GreaterOrEqual(t, stats.MaxRunning["flow.cc"], 2, "the flow ran more than one at a time")
	for id, n := range stats.PerWorkflow {
		require.Equal(t, 1, n, "workflow %d ran %d times", id, n)
	}
}

// FlowClaimersConfig configures RunFlowClaimers.
type FlowClaimersConfig struct {
	// Claimers is how many goroutines claim at once.
	Claimers int
	// Names are the workflow names claimed.
	Names []string
	// Until is how many runs, over all names, the claimers complete before they stop.
	Until int
	// Owner prefixes the lease owners (default "claimer").
	Owner string
	// Hold is how long each run holds its lease at most before it finishes (default 2ms; the
	// hold of each run is random below it).
	Hold time.Duration
	// OnRun, when set, is called at the start and the end of every run (a process of a
	// multi-process test writes its runs out).
	OnRun func(w storage.Workflow, start, end time.Time)
}

// FlowClaimersStats is what RunFlowClaimers observed.
type FlowClaimersStats struct {
	// Runs counts the completed runs by name.
	Runs map[string]int
	// MaxRunning is the most runs of a name held at once (from the return of the claim to the
	// call of FinishRun: an under-count of what the store holds, never an over-count).
	MaxRunning map[string]int
	// PerWorkflow counts the runs of each workflow.
	PerWorkflow map[int64]int
}

// RunFlowClaimers claims workflows of cfg.Names with cfg.Claimers goroutines, each run
// holding its lease a random moment before it completes, until cfg.Until runs completed
// (or ctx ends, failing t), and reports how many ran at once by name. It is the body of the
// FlowConcurrentClaimers case and of each process of a backend's multi-process flow test.
func RunFlowClaimers(ctx context.Context, t testing.TB, s storage.Storage, cfg FlowClaimersConfig) FlowClaimersStats {
	t.Helper()
	if cfg.Owner == "" {
		cfg.Owner = "claimer"
	}
	if cfg.Hold <= 0 {
		cfg.Hold = 2 * time.Millisecond
	}
	var (
		mu    sync.Mutex
		stats = FlowClaimersStats{Runs: map[string]int{}, MaxRunning: map[string]int{}, PerWorkflow: map[int64]int{}}
		now   = map[string]int{}
		done  atomic.Int64
		wg    sync.WaitGroup
		fail  = make(chan error, cfg.Claimers)
	)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for c := range cfg.Claimers {
		wg.Go(func() {
			owner := fmt.Sprintf("%s-%d", cfg.Owner, c)
			for done.Load() < int64(cfg.Until) && ctx.Err() == nil {
				claimed, err := s.Claim(ctx, storage.ClaimRequest{Owner: owner, Limit: 1 + rand.IntN(3), Names: cfg.Names, TTL: ttl, Now: at(time.Hour)})
				if err != nil {
					fail <- fmt.Errorf("claim: %w", err)
					return
				}
				if len(claimed) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				start := time.Now()
				mu.Lock()
				for _, w := range claimed {
					now[w.Name]++
					stats.MaxRunning[w.Name] = max(stats.MaxRunning[w.Name], now[w.Name])
				}
				mu.Unlock()
				time.Sleep(rand.N(cfg.Hold))
				end := time.Now()
				mu.Lock()
				for _, w := range claimed {
					now[w.Name]--
					stats.Runs[w.Name]++
					stats.PerWorkflow[w.ID]++
				}
				mu.Unlock()
				for _, w := range claimed {
					if cfg.OnRun != nil {
						cfg.OnRun(w, start, end)
					}
					err := s.FinishRun(ctx, w.Lease(), storage.Finish{Commit: storage.Commit{Now: at(time.Hour)}, State: storage.StateCompleted, Output: []byte(`1`)})
					if err != nil {
						fail <- fmt.Errorf("finish %d: %w", w.ID, err)
						return
					}
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Fatalf("RunFlowClaimers: %v", err)
	}
	if done.Load() < int64(cfg.Until) {
		t.Fatalf("RunFlowClaimers: %d of %d runs completed before %v", done.Load(), cfg.Until, ctx.Err())
	}
	return stats
}

// MaxOverlap returns the most of the intervals [start, end) that contain one instant: how
// many runs were held at once, when each run's interval is from the return of its claim to
// the call of its FinishRun.
func MaxOverlap(starts, ends []time.Time) int {
	type edge struct {
		at    time.Time
		delta int
	}
	edges := make([]edge, 0, 2*len(starts))
	for i := range starts {
		edges = append(edges, edge{starts[i], 1}, edge{ends[i], -1})
	}
	sortEdges := func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	}
	slices.SortFunc(edges, sortEdges)
	n, best := 0, 0
	for _, e := range edges {
		n += e.delta
		best = max(best, n)
	}
	return best
}

// FlowRun is one run a claimer process of a multi-process flow test reports: the workflow,
// its name and flow key, and the run's interval (from the return of its claim to the call of
// its FinishRun).
type FlowRun struct {
	ID         int64
	Name, Flow string
	Start, End time.Time
}

// flowRunMark starts each line FlowRunWriter writes.
const flowRunMark = "FLOWRUN"

// FlowRunWriter returns a FlowClaimersConfig.OnRun that writes each run as one line to w,
// safe for concurrent use, and the flush to call once the claimers stopped (names and flow
// keys must not hold white space, which separates the fields). The process that
// started the claimer process reads the lines back with ParseFlowRuns.
func FlowRunWriter(w io.Writer) (onRun func(w storage.Workflow, start, end time.Time), flush func() error) {
	var mu sync.Mutex
	out := bufio.NewWriter(w)
	onRun = func(wf storage.Workflow, start, end time.Time) {
		mu.Lock()
		defer mu.Unlock()
		// "=" before the name and the key keeps an empty one a field.
		fmt.Fprintf(out, "%s %d =%s =%s %d %d\n", flowRunMark, wf.ID, wf.Name, wf.Flow, start.UnixNano(), end.UnixNano())
	}
	flush = func() error {
		mu.Lock()
		defer mu.Unlock()
		return out.Flush()
	}
	return onRun, flush
}

// ParseFlowRuns returns the runs FlowRunWriter wrote into a process's output, skipping every
// other line, or an error naming a run line it cannot read.
func ParseFlowRuns(output []byte) ([]FlowRun, error) {
	var runs []FlowRun
	for line := range strings.Lines(string(output)) {
		f := strings.Fields(line)
		if len(f) != 6 || f[0] != flowRunMark {
			continue
		}
		id, err1 := strconv.ParseInt(f[1], 10, 64)
		start, err2 := strconv.ParseInt(f[4], 10, 64)
		end, err3 := strconv.ParseInt(f[5], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("run line %q: %w", strings.TrimSpace(line), err)
		}
		runs = append(runs, FlowRun{ID: id, Name: strings.TrimPrefix(f[2], "="), Flow: strings.TrimPrefix(f[3], "="),
			Start: time.Unix(0, start), End: time.Unix(0, end)})
	}
	return runs, nil
}
