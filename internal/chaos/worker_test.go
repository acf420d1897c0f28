package chaos

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
	"github.com/chronoforge/chronoforge/storage/mysql"
	"github.com/chronoforge/chronoforge/storage/postgres"
	"github.com/chronoforge/chronoforge/storagetest"
)

// workerEnv carries a worker's configuration, as JSON, to the re-executed test binary.
const workerEnv = "CHRONOFORGE_CHAOS_WORKER"

// workerConfig is what a worker process needs: where the store is and how to work.
type workerConfig struct {
	Backend string `json:"backend"` // postgres, mysql or bolt
	// DSN is the database's address for postgres and mysql (perhaps a proxy's); Path the bbolt
	// file.
	DSN    string `json:"dsn,omitempty"`
	Schema string `json:"schema,omitempty"`
	Path   string `json:"path,omitempty"`
	// LogDir is where the worker writes its execution log.
	LogDir      string        `json:"log_dir"`
	Concurrency int           `json:"concurrency"`
	LeaseTTL    time.Duration `json:"lease_ttl"`
	// Skew moves the worker's engine clock (never the store's).
	Skew time.Duration `json:"skew,omitempty"`
	// FailRate wraps the store in a storagetest.FailingStore failing that share of calls.
	FailRate float64 `json:"fail_rate,omitempty"`
	Seed     uint64  `json:"seed,omitempty"`
	// Pad is the padding, in bytes, of every step result, so that the store keeps growing.
	Pad int `json:"pad,omitempty"`
	// Debug makes the engine log at Debug level, where it reports runs aborted by a failed
	// write.
	Debug bool `json:"debug,omitempty"`
	// Owner names the worker's leases (dispatch.Owner); the cluster sets it per process.
	Owner string `json:"owner,omitempty"`
	// ExitWhenIdle makes the worker shut down once none of the store's workflows is left to
	// run (for bbolt, whose file the parent cannot open while a worker holds it).
	ExitWhenIdle bool `json:"exit_when_idle,omitempty"`
}

// openStore opens the store cfg names; close releases it.
func openStore(ctx context.Context, cfg workerConfig) (s storage.Storage, close func(), err error) {
	switch cfg.Backend {
	case "postgres":
		pcfg, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, nil, err
		}
		pcfg.MaxConns = int32(cfg.Concurrency + 4)
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return nil, nil, err
		}
		st, err := postgres.New(pool, postgres.WithSchema(cfg.Schema))
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return st, func() { st.Close(); pool.Close() }, nil
	case "mysql":
		mcfg, err := driver.ParseDSN(cfg.DSN)
		if err != nil {
			return nil, nil, err
		}
		// A worker frozen inside a transaction (the pause scenario) keeps its rows locked for
		// as long as its connection lives, and claims skip locked rows: without this MariaDB
		// setting no other worker could take its workflows over when their leases expire.
		// The README asks the same of every MariaDB deployment.
		if _, ok := mcfg.Params["idle_transaction_timeout"]; !ok && cfg.LeaseTTL > 0 {
			if mcfg.Params == nil {
				mcfg.Params = map[string]string{}
			}
			mcfg.Params["idle_transaction_timeout"] = fmt.Sprint(int(max(cfg.LeaseTTL.Seconds(), 1)))
		}
		// As the README asks of every deployment: one round trip per statement, not a
		// prepare, an execution and a close.
		mcfg.InterpolateParams = true
		conn, err := driver.NewConnector(mcfg)
		if err != nil {
			return nil, nil, err
		}
		db := sql.OpenDB(conn)
		db.SetMaxOpenConns(cfg.Concurrency + 4)
		st, err := mysql.New(db, mysql.WithSchema(cfg.Schema))
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		return st, func() { st.Close(); db.Close() }, nil
	case "bolt":
		st, err := bolt.Open(cfg.Path, bolt.WithTimeout(30*time.Second))
		if err != nil {
			return nil, nil, err
		}
		return st, func() { st.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown backend %q", cfg.Backend)
}

// skewedClock is the system clock moved by a fixed offset.
type skewedClock struct{ by time.Duration }

func (c skewedClock) Now() time.Time                         { return time.Now().Add(c.by) }
func (c skewedClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// retry is the policy of steps and runs in the workers: faults last seconds, so nothing may
// give up within minutes.
var retry = sdk.Policy{Name: "chaos", MaxAttempts: 100000, Base: 20 * time.Millisecond, Cap: 500 * time.Millisecond}

// engineFor builds the engine of a worker configured by cfg (or of the parent, which starts
// workflows only), and returns it with the definitions of the two workloads.
func engineFor(store storage.Storage, log *execLog, cfg workerConfig) (eng *sdk.Engine, seq *sdk.Workflow[int, runOut], fan *sdk.Workflow[int, int], err error) {
	seq, item, fan := workflows(log, cfg.Pad)
	opts := []sdk.Option{sdk.WithWorkflows(seq, item, fan), sdk.WithStepRetry(retry), sdk.WithWorkflowRetry(retry)}
	if cfg.Skew != 0 {
		opts = append(opts, sdk.WithClock(skewedClock{cfg.Skew}))
	}
	if cfg.Debug {
		opts = append(opts, sdk.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	}
	eng, err = sdk.NewEngine(store, opts...)
	return eng, seq, fan, err
}

// TestChaosWorker is a worker process of the chaos scenarios; run directly it skips. It works
// until its standard input closes (or, with ExitWhenIdle, until nothing is left to run), then
// shuts down gracefully and prints its counts.
func TestChaosWorker(t *testing.T) {
	raw := os.Getenv(workerEnv)
	if raw == "" {
		t.Skip("a worker process of the chaos scenarios; it runs only when one starts it")
	}
	var cfg workerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("worker configuration: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	inner, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s store: %v", cfg.Backend, err)
	}
	defer closeStore()
	store := inner
	var failing *storagetest.FailingStore
	if cfg.FailRate > 0 {
		failing = storagetest.NewFailingStore(inner, cfg.FailRate, cfg.Seed)
		store = failing
	}
	log, err := openExecLog(cfg.LogDir)
	if err != nil {
		t.Fatal(err)
	}
	eng, _, _, err := engineFor(store, log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := dispatch.New(eng, dispatch.Owner(cfg.Owner), dispatch.Concurrency(cfg.Concurrency), dispatch.LeaseTTL(cfg.LeaseTTL),
		dispatch.HeartbeatEvery(cfg.LeaseTTL/4), dispatch.PollInterval(5*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		// The parent's commands, one a line, each answered with a line; it closes our input
		// to stop us.
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			fmt.Println(workerCommand(cfg, sc.Text()))
		}
		stop()
	}()
	if cfg.ExitWhenIdle {
		go func() {
			for ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
				if n, err := unfinished(ctx, inner); err == nil && n == 0 {
					stop()
				}
			}
		}()
	}
	if err := w.Run(ctx); err != nil {
		t.Errorf("worker: %v", err)
	}
	st := w.Stats()
	injected := 0
	if failing != nil {
		injected = failing.Injected()
	}
	fmt.Printf("chaos-worker pid=%d claimed=%d finished=%d run_errors=%d heartbeats_lost=%d injected=%d\n",
		os.Getpid(), st.Claimed, st.Finished, st.RunErrors, st.HeartbeatsLost, injected)
}

// workerCommand carries out a command line from the parent in a worker configured by cfg and
// returns the line to answer with. diskfull_linux_test.go replaces it with one that knows the
// commands of the disk-full scenario.
var workerCommand = func(cfg workerConfig, cmd string) string {
	return "chaos-worker: unknown command " + strconv.Quote(cmd)
}

// unfinished counts (up to a page) the workflows of the store that are idle or running.
func unfinished(ctx context.Context, s storage.Storage) (int, error) {
	ws, err := s.ListWorkflows(ctx, storage.ListFilter{States: []storage.State{storage.StateIdle, storage.StateRunning}, Limit: 10})
	return len(ws), err
}
