package storagetest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// ttl is the lease length the cases claim with unless they say otherwise: real time by the
// store's clock, long enough that a lease a case relies on never runs out under it, however
// slow the machine.
const ttl = 30 * time.Second

// shortTTL is the real lease length of the cases that need a lease to expire. Leases expire
// by the store's clock, which no request can move, so those cases wait for it (see lapse).
const shortTTL = 200 * time.Millisecond

// expiryTimeout bounds a wait for the store's clock to pass a lease; a deadline, not a
// measurement.
const expiryTimeout = 30 * time.Second

// at returns the suite's fixed base time plus d. Every request carries a time made here, so
// no case depends on the machine's clock for when workflows are due. Whole milliseconds
// survive every backend's precision. (Lease expiry is the store's business and real time:
// see lapse.)
func at(d time.Duration) time.Time {
	return time.Date(2030, time.January, 2, 3, 4, 0, 0, time.UTC).Add(d)
}

// fixture is one case's store with the helpers that drive it.
type fixture struct {
	t   *testing.T
	s   storage.Storage
	ctx context.Context
	// witness is the workflow awaitStoreClock leases to watch the store's clock (0: none
	// yet). Between waits it is idle without a RunAt, so no claim of a case ever takes it.
	witness int64
}

// witnessName names the witness workflow; no case uses it for anything else.
const witnessName = "storagetest.clock-witness"

func newFixture(t *testing.T, factory Factory) *fixture {
	t.Helper()
	s := factory(t)
	require.NotNil(t, s, "factory returned a nil store")
	return &fixture{t: t, s: s, ctx: t.Context()}
}

// create stores a new workflow runnable at runAt and requires that it was created.
func (f *fixture) create(name, key string, runAt time.Time) storage.Workflow {
	f.t.Helper()
	w, created, err := f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{
		Name:  name,
		Key:   key,
		Input: []byte(fmt.Sprintf(`{"key":%q}`, key)),
		RunAt: runAt,
		Now:   at(0),
	})
	require.NoError(f.t, err, "CreateWorkflow %q %q", name, key)
	require.True(f.t, created, "CreateWorkflow %q %q on an empty store must create", name, key)
	return w
}

// claim claims up to limit due workflows for owner at now with the default TTL.
func (f *fixture) claim(owner string, now time.Time, limit int, names ...string) []storage.Workflow {
	f.t.Helper()
	got, err := f.s.Claim(f.ctx, storage.ClaimRequest{Owner: owner, Limit: limit, Names: names, TTL: ttl, Now: now})
	require.NoError(f.t, err, "Claim by %q at %v", owner, now)
	return got
}

// claimOne claims w (found by its name, so names must be unique among due workflows) for
// owner at now, requires that exactly w came back, and returns its lease.
func (f *fixture) claimOne(w storage.Workflow, owner string, now time.Time) storage.Lease {
	f.t.Helper()
	got := f.claim(owner, now, 1, w.Name)
	require.Len(f.t, got, 1, "Claim of due workflow %d (%q) at %v", w.ID, w.Name, now)
	require.Equal(f.t, w.ID, got[0].ID, "Claim returned the wrong workflow")
	return got[0].Lease()
}

// start creates a workflow named name runnable at at(0) and claims it for "worker-a" at at(0).
func (f *fixture) start(name string) (storage.Workflow, storage.Lease) {
	f.t.Helper()
	w := f.create(name, "k", at(0))
	return w, f.claimOne(w, "worker-a", at(0))
}

// lapse makes the lease l run out by the store's clock, as when its worker stops
// heartbeating: a last heartbeat at now leaves it shortTTL, and lapse returns once the
// store's clock has passed that. The workflow is due again from now+shortTTL by the caller's
// clock, and claimable then.
func (f *fixture) lapse(l storage.Lease, now time.Time) {
	f.t.Helper()
	require.NoError(f.t, f.s.Heartbeat(f.ctx, l, shortTTL, now), "last heartbeat of the lease %+v", l)
	f.awaitStoreClock(shortTTL)
}

// awaitStoreClock returns once the store's clock has moved at least d past the moment it is
// called, so that every lease given d or less before the call has expired. It never reads
// the machine's clock, which may disagree with the store's: it leases a witness workflow for
// d and polls until a claim (by a caller whose Now is past the witness's RunAt, so only the
// store's clock decides) can take it again.
func (f *fixture) awaitStoreClock(d time.Duration) {
	f.t.Helper()
	if f.witness == 0 {
		f.witness = f.create(witnessName, "k", at(0)).ID
	} else {
		f.wake(f.witness, at(0))
	}
	claim := func(now time.Time, ttl time.Duration) []storage.Workflow {
		got, err := f.s.Claim(f.ctx, storage.ClaimRequest{Owner: "witness", Limit: 1, Names: []string{witnessName}, TTL: ttl, Now: now})
		require.NoError(f.t, err, "Claim of the clock witness")
		return got
	}
	got := claim(at(0), d)
	require.Equal(f.t, []int64{f.witness}, ids(got), "the clock witness is claimable")
	deadline := time.Now().Add(expiryTimeout)
	for {
		if again := claim(at(d), ttl); len(again) > 0 {
			require.Equal(f.t, f.witness, again[0].ID, "Claim of the clock witness")
			f.finish(again[0].Lease(), storage.Finish{Commit: storage.Commit{Now: at(d)}, State: storage.StateIdle})
			return
		}
		require.True(f.t, time.Now().Before(deadline), "a lease of %v did not expire within %v: is the store's clock moving?", d, expiryTimeout)
		time.Sleep(5 * time.Millisecond) // the poll interval of a wait on a condition
	}
}

// takeOver claims w for owner at now once its lease (given d or less ago) has expired by
// the store's clock, polling until the claim succeeds, and returns the new lease.
func (f *fixture) takeOver(w storage.Workflow, owner string, now time.Time) storage.Lease {
	f.t.Helper()
	deadline := time.Now().Add(expiryTimeout)
	for {
		if got := f.claim(owner, now, 1, w.Name); len(got) > 0 {
			require.Equal(f.t, w.ID, got[0].ID, "Claim returned the wrong workflow")
			return got[0].Lease()
		}
		require.True(f.t, time.Now().Before(deadline), "workflow %d was not claimable at %v within %v", w.ID, now, expiryTimeout)
		time.Sleep(5 * time.Millisecond)
	}
}

// requireNoClaim requires that a claim at now (restricted to names, if any) takes nothing.
func (f *fixture) requireNoClaim(now time.Time, why string, names ...string) {
	f.t.Helper()
	got := f.claim("probe", now, storage.MaxClaim, names...)
	require.Empty(f.t, ids(got), "Claim at %v took workflows it must not: %s", now, why)
}

func (f *fixture) get(id int64) storage.Workflow {
	f.t.Helper()
	w, err := f.s.GetWorkflow(f.ctx, id)
	require.NoError(f.t, err, "GetWorkflow %d", id)
	return w
}

func (f *fixture) load(id int64) (storage.Workflow, []storage.Step) {
	f.t.Helper()
	w, steps, err := f.s.Load(f.ctx, id)
	require.NoError(f.t, err, "Load %d", id)
	return w, steps
}

func (f *fixture) save(l storage.Lease, c storage.Commit) {
	f.t.Helper()
	require.NoError(f.t, f.s.SaveSteps(f.ctx, l, c), "SaveSteps under lease %+v", l)
}

func (f *fixture) finish(l storage.Lease, fin storage.Finish) {
	f.t.Helper()
	require.NoError(f.t, f.s.FinishRun(f.ctx, l, fin), "FinishRun(%s) under lease %+v", fin.State, l)
}

// runTo creates a workflow named name, keyed by the state, and brings it to state at when:
// through a run claimed and finished at when for idle (no RunAt), completed, failed and
// stalled, through Cancel for cancelled, and through a claim at when for running. No other
// workflow of that name may be due at when.
func (f *fixture) runTo(name string, state storage.State, when time.Time) storage.Workflow {
	f.t.Helper()
	w := f.create(name, string(state), at(0))
	switch state {
	case storage.StateCancelled:
		require.NoError(f.t, f.s.Cancel(f.ctx, w.ID, when), "Cancel %d", w.ID)
	case storage.StateRunning:
		f.claimOne(w, "worker-a", when)
	default:
		l := f.claimOne(w, "worker-a", when)
		fin := storage.Finish{Commit: storage.Commit{Now: when}, State: state}
		if state == storage.StateCompleted {
			fin.Output = []byte(`"done"`)
		}
		f.finish(l, fin)
	}
	w = f.get(w.ID)
	require.Equal(f.t, state, w.State, "workflow %q after runTo", name)
	return w
}

// step is a completed step record with the given result.
func step(name string, result []byte) storage.Step {
	return storage.Step{Name: name, State: storage.StepCompleted, Attempts: 1, Result: result}
}

// payload returns n bytes of deterministic binary data that is not valid UTF-8 text, so a
// backend that stores bytes as text is caught.
func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131+i>>8) ^ seed
	}
	if n > 1 {
		b[0], b[1] = 0xff, 0x00
	}
	return b
}

func ids(ws []storage.Workflow) []int64 {
	out := make([]int64, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.ID)
	}
	return out
}

// requireBytes compares payloads byte for byte; nil and empty are the same payload.
func requireBytes(t *testing.T, want, got []byte, what string) {
	t.Helper()
	if !bytes.Equal(want, got) {
		require.Failf(t, what+" differs", "want %d bytes %.64q..., got %d bytes %.64q...", len(want), want, len(got), got)
	}
}

// requireJSON compares JSON documents by meaning (a backend may store them as jsonb);
// an absent document is the same as an empty one.
func requireJSON(t *testing.T, want, got []byte, what string) {
	t.Helper()
	if len(want) == 0 {
		require.Empty(t, got, what)
		return
	}
	require.JSONEq(t, string(want), string(got), what)
}

// requireTime requires that got is the same instant as want (zero means unset).
func requireTime(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	if want.IsZero() {
		require.True(t, got.IsZero(), "%s: want unset, got %v", what, got)
		return
	}
	require.True(t, want.Equal(got), "%s: want %v, got %v", what, want, got)
}

// requireLeaseUnchanged requires that the stored lease and run time of w are still those of
// before: a refused write must not touch them.
func requireLeaseUnchanged(t *testing.T, before, after storage.Workflow) {
	t.Helper()
	require.Equal(t, before.State, after.State, "state")
	require.Equal(t, before.LeaseOwner, after.LeaseOwner, "lease owner")
	require.Equal(t, before.LeaseToken, after.LeaseToken, "lease token")
	requireTime(t, before.LeaseUntil, after.LeaseUntil, "lease until")
	requireTime(t, before.RunAt, after.RunAt, "run at")
}
