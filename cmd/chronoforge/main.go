// Command chronoforge is the operator's tool for a chronoforge store: it migrates the schema,
// lists and shows workflows, follows a fan-out's children, retries, resumes and cancels
// workflows one by one or by filter, deletes old finished workflows, prints the store's
// counts, lists and changes flow control (priorities, concurrency and rate limits by flow
// key), and serves the web dashboard. See the README's "Operator tools" section.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes: a command that failed, and a command line that is wrong.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake in the command line: it exits with exitUsage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// usagef returns a usageError.
func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// command is one subcommand: its one-line help and what it does with its arguments.
type command struct {
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
}

// commands lists every subcommand by name.
var commands = map[string]command{
	"migrate":   {"migrate [--status]: create or upgrade the schema, or print its status", runMigrate},
	"list":      {"list [filters] [--limit N] [--before ID | --after ID]: workflows, newest first", runList},
	"show":      {"show <id | name/key> [--payloads]: one workflow, its steps, errors and values", runShow},
	"children":  {"children <id> [--branch NAME] [--state S] [--limit N] [--cap N]: a workflow's branches and children", runChildren},
	"retry":     {"retry <id>... | [filters] --yes: retry stalled or failed workflows", runRetry},
	"resume":    {"resume <id>... | [filters] --yes: wake idle workflows now", runResume},
	"cancel":    {"cancel [--children] <id>... | [filters] --yes: cancel workflows", runCancel},
	"cleanup":   {"cleanup --before DURATION|RFC3339 [--state S] [--dry-run] [--limit N]: delete old finished workflows", runCleanup},
	"stats":     {"stats [--name N] [--sample N]: counts by name and state, and the backlog", runStats},
	"flows":     {"flows [set KEY [--priority N] [--concurrency N] [--rate N --per DURATION] [--dry-run] | delete KEY]: flow control: priorities and limits by flow key", runFlows},
	"dashboard": {"dashboard [--listen ADDR] (--user U | --insecure-no-auth) [--read-only]: serve the web dashboard", runDashboard},
	"version":   {"version: the module version and Go version", runVersion},
}

// commandOrder is the order usage lists the commands in.
var commandOrder = []string{"migrate", "list", "show", "children", "retry", "resume", "cancel", "cleanup", "stats", "flows", "dashboard", "version"}

// usage prints the tool's help.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: chronoforge [global flags] <command> [flags] [arguments]")
	fmt.Fprintln(w, "\nglobal flags (also accepted after the command):")
	fmt.Fprintln(w, "  --store bolt:PATH | postgres:DSN | mysql:DSN   the store (default: $CHRONOFORGE_STORE)")
	fmt.Fprintln(w, "  --schema NAME                                  schema (postgres) or database (mysql)")
	fmt.Fprintln(w, "  --prefix PREFIX                                table prefix (postgres, mysql)")
	fmt.Fprintln(w, "  -o table|json                                  output format (default table)")
	fmt.Fprintln(w, "\ncommands:")
	for _, name := range commandOrder {
		fmt.Fprintf(w, "  %s\n", commands[name].summary)
	}
	fmt.Fprintln(w, "  help: this text")
	fmt.Fprintln(w, "\nfilters (list, retry, resume, cancel): --name N --state S[,S] --key-prefix P --parent STEP_ID --due")
	fmt.Fprintln(w, "run 'chronoforge <command> -h' for a command's flags")
}

// run is the whole tool: it parses args, runs one command writing to stdout and returns the
// exit code; problems go to stderr as one line.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("chronoforge", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	c.globals.register(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "chronoforge: %v (run 'chronoforge help')\n", err)
		return exitUsage
	}
	rest := global.Args()
	if len(rest) == 0 {
		usage(stderr)
		fmt.Fprintln(stderr, "chronoforge: no command given")
		return exitUsage
	}
	name := rest[0]
	if name == "help" {
		usage(stdout)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "chronoforge: unknown command %q (run 'chronoforge help')\n", name)
		return exitUsage
	}
	c.name, c.summary = name, cmd.summary
	ctx := context.Background()
	err := cmd.run(ctx, c, rest[1:])
	c.close()
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "chronoforge %s: %v\n", name, oneLine(err))
		return exitUsage
	default:
		fmt.Fprintf(stderr, "chronoforge %s: %v\n", name, oneLine(err))
		return exitFailure
	}
}

// oneLine keeps an error message on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
