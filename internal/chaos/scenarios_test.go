package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// A scenario is a workload, a fault and where it applies. The same scenario runs on every
// backend it names; TestChaos runs them all.
type scenario struct {
	name     string
	backends []string
	// fan runs the fan-out workload; otherwise the sequential one.
	fan bool
	// setup adjusts worker i's configuration before the workers start (skew, failures,
	// proxies).
	setup func(r *run, i int, cfg *workerConfig)
	// every is the range of the random pause before each fault, max how many faults at most
	// (short, full); the faults stop early once the workload is done.
	every [2]time.Duration
	max   [2]int
	hit   func(r *run) (bound int)
	// faults, when set, counts the faults of a scenario whose faults are not hits (skewed
	// workers, injected failures) and the excess they allow.
	faults func(r *run) (faults, bound int)
}

// run is one scenario on one backend.
type run struct {
	t       *testing.T
	backend string
	dsn     string
	rng     *rand.Rand
	c       *cluster
	conc    int
	ttl     time.Duration
	extra   any // what a scenario's setup keeps (proxies, a server)
	// store is the parent's own connection to the store while the workers run (nil for
	// bbolt, whose file the workers hold).
	store storage.Storage
	// server is the private database server of a restart scenario; proxies the proxy of each
	// worker in a network scenario.
	server  *Server
	proxies []*Proxy
	// path is the bbolt file; completed how many workflows it held completed at the last of
	// the fileChecks after a kill.
	path                  string
	completed, fileChecks int
}

// Sizes and settings of every scenario.
const (
	concurrency = 8
	leaseTTL    = 2 * time.Second
	restartGap  = 50 * time.Millisecond
)

// processes is how many worker processes share a store: one for bbolt, whose file one
// process holds at a time.
func processes(backend string) int {
	if backend == "bolt" {
		return 1
	}
	return 3
}

var (
	all         = []string{"postgres", "mysql", "bolt"}
	sqlBackends = []string{"postgres", "mysql"}
)

// kill is the kill -9 fault: a random worker dies at once and a new one starts. On bbolt the
// parent checks the file in between: the worker died in the middle of its writes.
func kill(r *run) int {
	i := r.rng.IntN(len(r.c.procs))
	r.c.kill(i)
	if r.backend == "bolt" {
		r.checkFile()
	}
	time.Sleep(restartGap)
	r.c.start(i)
	return r.conc
}

// pause freezes a random worker (SIGSTOP) for longer than its lease, then thaws it: its
// leases expire, others take its workflows over, and whatever it writes when it wakes must be
// refused. Where the parent can watch the store, the worker stays frozen until no workflow is
// running under its leases any more (others took them over, or finished them), so that it
// wakes up to find itself superseded.
func pause(r *run) int {
	i := r.rng.IntN(len(r.c.procs))
	owner := r.c.owner(i)
	if !r.c.signal(i, syscall.SIGSTOP) {
		return 0
	}
	defer r.c.signal(i, syscall.SIGCONT)
	waitSuperseded(r, owner)
	return r.conc
}

// waitSuperseded waits for longer than a lease and then, where the parent can watch the
// store, until no workflow is running under owner's leases any more (two minutes at most).
func waitSuperseded(r *run, owner string) {
	time.Sleep(r.ttl*2 + r.ttl/2)
	for deadline := time.Now().Add(2 * time.Minute); r.store != nil && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		n, err := runningUnder(r.t.Context(), r.store, owner)
		if err == nil && n == 0 {
			break
		}
		if os.Getenv("CHRONOFORGE_CHAOS_VERBOSE") != "" {
			r.t.Logf("%d running under %s (%v)", n, owner, err)
		}
	}
}

// runningUnder counts the running workflows whose lease owner is owner.
func runningUnder(ctx context.Context, s storage.Storage, owner string) (int, error) {
	running, err := listAll(ctx, s, storage.ListFilter{States: []storage.State{storage.StateRunning}})
	n := 0
	for _, wf := range running {
		if wf.LeaseOwner == owner {
			n++
		}
	}
	return n, err
}

// scenarios are every fault of the suite (the ones that need a server or proxies of their
// own are built in faults_test.go).
var scenarios = []scenario{
	{name: "kill-seq", backends: all, every: [2]time.Duration{150 * time.Millisecond, 600 * time.Millisecond}, max: [2]int{5, 40}, hit: kill},
	{name: "kill-fanout", backends: all, fan: true, every: [2]time.Duration{150 * time.Millisecond, 600 * time.Millisecond}, max: [2]int{5, 40}, hit: kill},
	{name: "pause", backends: all, every: [2]time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond}, max: [2]int{1, 3}, hit: pause},
	{
		name: "clock-skew", backends: all,
		setup: func(r *run, i int, cfg *workerConfig) {
			switch i {
			case 0:
				cfg.Skew = time.Hour
			case 1:
				cfg.Skew = -time.Hour
			}
		},
		faults: func(r *run) (int, int) {
			n := min(2, len(r.c.procs))
			return n, n * r.conc
		},
	},
	{
		name: "storage-failures", backends: all,
		setup: func(r *run, i int, cfg *workerConfig) { cfg.FailRate = 0.02 },
		faults: func(r *run) (int, int) {
			n := r.c.stat("injected")
			return n, n
		},
	},
	{name: "restart-fast", backends: sqlBackends, every: [2]time.Duration{time.Second, 2 * time.Second}, max: [2]int{1, 3}, hit: restart(Fast)},
	{name: "restart-immediate", backends: sqlBackends, every: [2]time.Duration{time.Second, 2 * time.Second}, max: [2]int{1, 3}, hit: restart(Immediate)},
	{
		name: "net-latency", backends: sqlBackends, setup: slowLinks,
		faults: func(r *run) (int, int) { return len(r.proxies), len(r.proxies) * r.conc },
	},
	{name: "net-cut", backends: sqlBackends, setup: proxied, every: [2]time.Duration{200 * time.Millisecond, 800 * time.Millisecond}, max: [2]int{5, 40}, hit: cut},
	{name: "net-partition", backends: sqlBackends, setup: proxied, every: [2]time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond}, max: [2]int{1, 3}, hit: partition},
}

// TestChaos runs every scenario on every backend it applies to.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	for _, backend := range all {
		t.Run(backend, func(t *testing.T) {
			for _, sc := range scenarios {
				if !applies(sc, backend) {
					continue
				}
				t.Run(sc.name, func(t *testing.T) { runScenario(t, sc, backend) })
			}
		})
	}
}

func applies(sc scenario, backend string) bool {
	for _, b := range sc.backends {
		if b == backend {
			return true
		}
	}
	return false
}

// dsnOf returns the shared server's DSN for backend ("" for bbolt), skipping t without it.
func dsnOf(t *testing.T, backend string) string {
	switch backend {
	case "postgres":
		return requireDB(t, "CHRONOFORGE_POSTGRES_DSN")
	case "mysql":
		return requireDB(t, "CHRONOFORGE_MYSQL_DSN")
	}
	return ""
}

// A private scenario runs on a database server of its own.
func (sc scenario) private() bool { return sc.name == "restart-fast" || sc.name == "restart-immediate" }

// runScenario starts the workload, starts the workers, injects the scenario's faults until
// its budget is spent or the workers are done, waits for them to finish the workload, then
// checks the invariants and reports the figures.
func runScenario(t *testing.T, sc scenario, backend string) {
	r := &run{t: t, backend: backend, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)), conc: concurrency, ttl: leaseTTL}
	switch {
	case sc.private() && backend == "postgres":
		r.server = StartPostgres(t)
		r.dsn = r.server.DSN()
	case sc.private() && backend == "mysql":
		r.server = StartMariaDB(t)
		r.dsn = r.server.DSN()
	default:
		r.dsn = dsnOf(t, backend)
	}
	tg := newTarget(t, r.backend, r.dsn)
	r.path = tg.cfg.Path
	w := workload{seq: size(700, 5000)}
	if sc.fan {
		w = workload{fan: size(800, 20000)}
	}
	startWorkload(t, tg, w)

	cfgs := make([]workerConfig, processes(r.backend))
	for i := range cfgs {
		cfg := tg.cfg
		cfg.Concurrency, cfg.LeaseTTL, cfg.ExitWhenIdle, cfg.Seed = r.conc, r.ttl, true, uint64(i+1)
		if sc.setup != nil {
			sc.setup(r, i, &cfg)
		}
		cfgs[i] = cfg
	}
	if r.backend != "bolt" {
		r.store = tg.open(t)
	}
	began := time.Now()
	r.c = startCluster(t, cfgs)
	faults, bound := 0, 0
	limit := sc.max[0]
	if full() {
		limit = sc.max[1]
	}

	for faults < limit && !r.c.allExited() {
		lo, hi := sc.every[0], sc.every[1]
		time.Sleep(lo + time.Duration(r.rng.Int64N(int64(hi-lo)+1)))
		if r.c.allExited() {
			break
		}
		bound += sc.hit(r)
		faults++
	}
	r.c.wait(time.Duration(size(3, 20)) * time.Minute)
	elapsed := time.Since(began)
	if sc.faults != nil {
		faults, bound = sc.faults(r)
	}

	if r.store == nil {
		r.store = tg.open(t)
	}
	got := check(t, r.store, tg.cfg.LogDir, w)
	res := Result{
		Scenario: sc.name, Backend: r.backend, Faults: faults, Workflows: w.total(),
		Executions: got.executions, Excess: got.excess, Bound: bound,
		Lost: got.lost, Duplicated: got.duplicated, Elapsed: elapsed,
	}
	if r.fileChecks > 0 {
		res.Note = fmt.Sprintf("after each of %d kills: bbolt's tx.Check clean, the file reopened, no completed workflow undone", r.fileChecks)
	}
	report(t, res)
}

// startWorkload creates the workload's workflows in tg's store (and closes it, for bbolt's
// sake, before any worker opens it).
func startWorkload(t *testing.T, tg target, w workload) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	s, closeStore, err := openStore(ctx, tg.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	eng, seq, fan, err := engineFor(s, nil, workerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if w.seq > 0 {
		starts := make([]sdk.Start[int], w.seq)
		for i := range starts {
			starts[i] = sdk.Start[int]{Key: seqKey(i), Input: i}
		}
		if _, err := seq.StartMany(ctx, eng, starts); err != nil {
			t.Fatalf("start the sequential workload: %v", err)
		}
	}
	if w.fan > 0 {
		if _, err := fan.Start(ctx, eng, fanKey, w.fan); err != nil {
			t.Fatalf("start the fan-out: %v", err)
		}
	}
}
