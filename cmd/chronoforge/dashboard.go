package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/chronoforge/chronoforge/dashboard"
)

// Environment variables that carry the dashboard's secrets, so they appear in no process
// listing.
const (
	envDashboardPassword = "CHRONOFORGE_DASHBOARD_PASSWORD"
	envDashboardToken    = "CHRONOFORGE_DASHBOARD_TOKEN"
)

// runDashboard serves the web dashboard over the store until it is interrupted (SIGINT or
// SIGTERM), then stops taking requests and lets those in flight finish.
func runDashboard(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on (port 0 picks a free one)")
	user := fs.String("user", "", "HTTP basic auth user; the password comes from $"+envDashboardPassword)
	insecure := fs.Bool("insecure-no-auth", false, "serve without authentication (behind a proxy that authenticates)")
	readOnly := fs.Bool("read-only", false, "show no actions and refuse them")
	payloads := fs.Bool("payloads", false, "show inputs, outputs, step results and durable values")
	traceURL := fs.String("trace-url", "", "link to a trace: a URL with {trace_id} in it")
	mount := fs.String("path", "", "serve under this path prefix (for example /ops)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	opts := []dashboard.Option{dashboard.Logger(slog.New(slog.NewTextHandler(c.stderr, nil)))}
	password, token := os.Getenv(envDashboardPassword), os.Getenv(envDashboardToken)
	auths := 0
	if *user != "" {
		if password == "" {
			return usagef("--user %q needs a password in $%s", *user, envDashboardPassword)
		}
		opts = append(opts, dashboard.BasicAuth(*user, password))
		auths++
	}
	if token != "" {
		opts = append(opts, dashboard.BearerToken(token))
		auths++
	}
	if *insecure {
		opts = append(opts, dashboard.InsecureNoAuth())
		auths++
	}
	if auths != 1 {
		return usagef("the dashboard needs exactly one of --user (with $%s), $%s or --insecure-no-auth; %d given",
			envDashboardPassword, envDashboardToken, auths)
	}
	if *readOnly {
		opts = append(opts, dashboard.ReadOnly())
	}
	if *payloads {
		opts = append(opts, dashboard.ShowPayloads())
	}
	if *traceURL != "" {
		opts = append(opts, dashboard.TraceURL(*traceURL))
	}
	if *mount != "" {
		opts = append(opts, dashboard.Prefix(*mount))
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	h, err := dashboard.New(c.store, opts...)
	if err != nil {
		return usagef("%v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	stop, cancel := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(c.stdout, "dashboard: serving http://%s%s/\n", ln.Addr(), *mount)
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-stop.Done():
	}
	shutdown, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
