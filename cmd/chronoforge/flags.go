package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// globals are the flags every command takes.
type globals struct {
	store  string
	schema string
	prefix string
	output string
}

// register adds the global flags to fs.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.store, "store", g.store, "bolt:PATH, postgres:DSN or mysql:DSN (default $CHRONOFORGE_STORE)")
	fs.StringVar(&g.schema, "schema", g.schema, "schema (postgres) or database (mysql)")
	fs.StringVar(&g.prefix, "prefix", g.prefix, "table prefix (postgres, mysql)")
	fs.StringVar(&g.output, "o", g.output, "output: table or json")
}

// newFlags returns a command's flag set with the global flags on it.
func (c *cli) newFlags() *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.globals.register(fs)
	fs.Usage = func() {}
	return fs
}

// parse parses args with flags and positional arguments interleaved ("show 5 --payloads"),
// returning the positional ones. -h prints the command's flags and returns flag.ErrHelp.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(c.stdout, "usage: chronoforge %s\n", c.summary)
				fs.SetOutput(c.stdout)
				fs.PrintDefaults()
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if c.globals.output == "" {
		c.globals.output = "table"
	}
	if c.globals.output != "table" && c.globals.output != "json" {
		return nil, usagef("-o %q: want table or json", c.globals.output)
	}
	if c.globals.store == "" {
		c.globals.store = os.Getenv("CHRONOFORGE_STORE")
	}
	return pos, nil
}

// stateList is a repeatable flag of workflow states, each value one state or a comma list.
type stateList []storage.State

func (s *stateList) String() string {
	parts := make([]string, len(*s))
	for i, st := range *s {
		parts[i] = string(st)
	}
	return strings.Join(parts, ",")
}

func (s *stateList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		st := storage.State(strings.TrimSpace(part))
		if !st.Valid() {
			return fmt.Errorf("unknown state %q (want idle, running, stalled, completed, failed or cancelled)", part)
		}
		*s = append(*s, st)
	}
	return nil
}

// filterFlags are the workflow filters of list and the bulk actions.
type filterFlags struct {
	name      string
	states    stateList
	keyPrefix string
	parent    int64
	due       bool
}

// register adds the filter flags to fs.
func (f *filterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "workflow name")
	fs.Var(&f.states, "state", "state (repeatable, or a comma list)")
	fs.StringVar(&f.keyPrefix, "key-prefix", "", "key prefix (needs --name)")
	fs.Int64Var(&f.parent, "parent", 0, "branch step ID: its children")
	fs.BoolVar(&f.due, "due", false, "only workflows due to run now")
}

// set reports whether any filter was given.
func (f *filterFlags) set() bool {
	return f.name != "" || len(f.states) > 0 || f.keyPrefix != "" || f.parent != 0 || f.due
}

// listFilter builds the storage filter, checking what the store would refuse.
func (f *filterFlags) listFilter(now time.Time) (storage.ListFilter, error) {
	lf := storage.ListFilter{Name: f.name, States: f.states, KeyPrefix: f.keyPrefix, ParentStepID: f.parent}
	if f.name != "" {
		if err := storage.ValidateName(f.name); err != nil {
			return lf, usagef("--name: %v", err)
		}
	}
	if f.keyPrefix != "" && f.name == "" {
		return lf, usagef("--key-prefix needs --name")
	}
	if f.parent < 0 {
		return lf, usagef("--parent %d: a branch step ID is positive", f.parent)
	}
	if f.due {
		lf.DueBy = now
	}
	return lf, nil
}
