package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// statsResult is the output of stats.
type statsResult struct {
	Counts []stateCountRow `json:"counts"`
	// Counted is how many workflows were counted; Sampled that older ones were not.
	Counted int  `json:"counted"`
	Sampled bool `json:"sampled"`
	// OldestDueAgeSeconds is how long the oldest runnable workflow has been due; absent
	// when none is.
	OldestDue           *time.Time    `json:"oldest_due,omitempty"`
	OldestDueAgeSeconds *float64      `json:"oldest_due_age_seconds,omitempty"`
	Due                 int           `json:"due"`
	DueProbed           bool          `json:"due_probed"`
	ExpiredLeases       []workflowRow `json:"expired_leases"`
}

// stateCountRow is one count of stats.
type stateCountRow struct {
	Name  string        `json:"name"`
	State storage.State `json:"state"`
	Count int           `json:"count"`
}

// runStats prints workflow counts by name and state and the backlog.
func runStats(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	name := fs.String("name", "", "count only this workflow name")
	sample := fs.Int("sample", storage.DefaultCountSample, fmt.Sprintf("count the newest N workflows (at most %d)", storage.MaxCountSample))
	expired := fs.Int("expired", 20, fmt.Sprintf("list at most N expired leases (1..%d)", storage.MaxBacklogLimit))
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *sample < 1 || *sample > storage.MaxCountSample {
		return usagef("--sample %d: want 1..%d", *sample, storage.MaxCountSample)
	}
	if *expired < 1 || *expired > storage.MaxBacklogLimit {
		return usagef("--expired %d: want 1..%d", *expired, storage.MaxBacklogLimit)
	}
	q := storage.CountStatesQuery{Name: *name, Sample: *sample}
	if err := storage.ValidateCountStates(q); err != nil {
		return usagef("--name: %v", err)
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	in, err := c.inspector()
	if err != nil {
		return err
	}
	counts, err := in.CountStates(ctx, q)
	if err != nil {
		return err
	}
	now := time.Now()
	bl, err := in.Backlog(ctx, now, *expired)
	if err != nil {
		return err
	}
	res := statsResult{Counts: []stateCountRow{}, Counted: counts.Counted, Sampled: counts.Sampled,
		Due: bl.Due, DueProbed: bl.Probed, ExpiredLeases: []workflowRow{}}
	for _, sc := range counts.Counts {
		res.Counts = append(res.Counts, stateCountRow{Name: sc.Name, State: sc.State, Count: sc.Count})
	}
	if !bl.OldestDue.IsZero() {
		age := now.Sub(bl.OldestDue).Seconds()
		res.OldestDue, res.OldestDueAgeSeconds = &bl.OldestDue, &age
	}
	for _, w := range bl.Expired {
		res.ExpiredLeases = append(res.ExpiredLeases, row(w))
	}
	if c.json() {
		return c.emit(res)
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME\tSTATE\tCOUNT")
	for _, r := range res.Counts {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", r.Name, r.State, r.Count)
	}
	_ = tw.Flush()
	if res.Sampled {
		fmt.Fprintf(c.stdout, "sampled: counts of the newest %d workflows only; older ones exist\n", res.Counted)
	} else {
		fmt.Fprintf(c.stdout, "%d workflows counted (all of them)\n", res.Counted)
	}
	due := fmt.Sprint(res.Due)
	if res.DueProbed {
		due = "≥" + due
	}
	fmt.Fprintf(c.stdout, "due now: %s\n", due)
	if res.OldestDueAgeSeconds != nil {
		fmt.Fprintf(c.stdout, "oldest due: %s (%s ago)\n", fmtTime(*res.OldestDue), time.Duration(*res.OldestDueAgeSeconds*float64(time.Second)).Round(time.Millisecond))
	}
	fmt.Fprintf(c.stdout, "expired leases: %d\n", len(res.ExpiredLeases))
	if len(res.ExpiredLeases) > 0 {
		printWorkflows(c, res.ExpiredLeases)
	}
	return nil
}

// versionResult is the output of version.
type versionResult struct {
	Module    string `json:"module"`
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
}

// runVersion prints the module version and the Go version the tool was built with.
func runVersion(_ context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	res := versionResult{Module: "github.com/chronoforge/chronoforge", Version: "(unknown)", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		res.Module, res.Version, res.GoVersion = bi.Main.Path, bi.Main.Version, bi.GoVersion
	}
	if c.json() {
		return c.emit(res)
	}
	fmt.Fprintf(c.stdout, "chronoforge %s (%s), %s\n", res.Version, res.Module, res.GoVersion)
	return nil
}
