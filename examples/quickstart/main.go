// Command quickstart runs a small onboarding workflow on an embedded bbolt file: a few
// durable steps, a short durable sleep and durable values, driven by one in-process worker.
//
//	go run ./examples/quickstart                 # a fresh database in a temporary directory
//	go run ./examples/quickstart -db app.db      # keep it: interrupt during the sleep (Ctrl-C),
//	                                             # run again, and it resumes where it stopped
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/chronoforge/chronoforge/dispatch"
	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// Signup is the workflow's input.
type Signup struct {
	Email string `json:"email"`
	Plan  string `json:"plan"`
}

// Welcome is the workflow's output.
type Welcome struct {
	AccountID string    `json:"account_id"`
	Mailed    bool      `json:"mailed"`
	Ready     time.Time `json:"ready"`
}

// Onboard creates an account, waits out a short grace period, then sends the welcome mail.
// Each step runs once, whatever happens to the process in between.
var Onboard = sdk.New("quickstart.onboard", func(c *sdk.Context, in Signup) (Welcome, error) {
	account, err := sdk.Step(c, "create-account", func(ctx context.Context) (string, error) {
		fmt.Printf("  step create-account: creating an account for %s\n", in.Email)
		return fmt.Sprintf("acct-%d", time.Now().UnixNano()%100000), nil
	})
	if err != nil {
		return Welcome{}, err
	}
	// Durable values ride along with the next step's write.
	if _, err := sdk.SetOnce(c, "plan", in.Plan); err != nil {
		return Welcome{}, err
	}
	if err := sdk.Sleep(c, "grace-period", 2*time.Second); err != nil {
		return Welcome{}, err // suspended: the worker comes back when the sleep is over
	}
	plan, _, err := sdk.Get[string](c, "plan")
	if err != nil {
		return Welcome{}, err
	}
	mailed, err := sdk.Step(c, "send-welcome", func(ctx context.Context) (bool, error) {
		fmt.Printf("  step send-welcome: mailing %s about the %s plan\n", in.Email, plan)
		return true, nil
	})
	if err != nil {
		return Welcome{}, err
	}
	ready, err := sdk.Step(c, "activate", func(ctx context.Context) (time.Time, error) {
		fmt.Printf("  step activate: account %s is live\n", account)
		return time.Now().UTC().Truncate(time.Second), nil
	})
	if err != nil {
		return Welcome{}, err
	}
	return Welcome{AccountID: account, Mailed: mailed, Ready: ready}, nil
})

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	dbPath := flag.String("db", "", "bbolt database file (default: a new file in a temporary directory)")
	key := flag.String("key", "ada@example.com", "workflow key: starting the same key twice runs it once")
	flag.Parse()

	temporary := *dbPath == ""
	if temporary {
		dir, err := os.MkdirTemp("", "chronoforge-quickstart-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*dbPath = filepath.Join(dir, "quickstart.db")
	}
	store, err := bolt.Open(*dbPath)
	if err != nil {
		return err
	}
	defer store.Close()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(Onboard), sdk.WithLogger(logger))
	if err != nil {
		return err
	}
	worker, err := dispatch.New(eng, dispatch.Concurrency(4))
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	workerCtx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- worker.Run(workerCtx) }()

	fmt.Printf("chronoforge quickstart: database %s\n", *dbPath)
	h, err := Onboard.Start(ctx, eng, *key, Signup{Email: *key, Plan: "pro"})
	if err != nil {
		stopWorker()
		return errors.Join(err, <-workerDone)
	}
	fmt.Printf("started workflow %q key %q (id %d)\n", h.Name(), h.Key(), h.ID())
	out, err := h.Result(ctx)
	stopWorker()
	if werr := <-workerDone; werr != nil {
		err = errors.Join(err, werr)
	}
	if err != nil && ctx.Err() != nil {
		if temporary {
			fmt.Println("interrupted; pass -db FILE to keep the workflow across runs")
			return nil
		}
		fmt.Printf("interrupted: the workflow is saved in %s; run again with -db %s to resume it\n", *dbPath, *dbPath)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Printf("result: account %s, welcome mailed: %v, ready at %s\n", out.AccountID, out.Mailed, out.Ready.Format(time.RFC3339))
	return nil
}
