package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// cleanupResult is the output of cleanup. In a dry run, Candidates lists the workflows that
// would be deleted and Deleted is 0; Scanned is how many workflows in the chosen states the
// dry run read to find them (ListWorkflows cannot filter on FinishedAt).
type cleanupResult struct {
	Before     time.Time       `json:"before"`
	States     []storage.State `json:"states"`
	DryRun     bool            `json:"dry_run"`
	Deleted    int             `json:"deleted"`
	Steps      int             `json:"steps_deleted"`
	Scanned    int             `json:"scanned,omitempty"`
	Candidates []workflowRow   `json:"candidates,omitempty"`
}

// parseCutoff reads --before: a duration back from now ("720h") or an RFC 3339 time.
func parseCutoff(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d <= 0 {
			return time.Time{}, usagef("--before %q: a duration must be positive (how long ago)", v)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, usagef("--before %q: want a duration such as 720h or an RFC 3339 time such as 2026-01-02T15:04:05Z", v)
	}
	if t.Before(storage.MinTime) || t.After(storage.MaxTime) {
		return time.Time{}, usagef("--before %q: outside %d..%d", v, storage.MinTime.Year(), storage.MaxTime.Year())
	}
	return t, nil
}

// runCleanup deletes workflows that finished before the cutoff, in bounded calls of
// storage.DeleteFinished until none is left (or --limit are deleted).
func runCleanup(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	before := fs.String("before", "", "delete workflows finished before this: a duration ago (720h) or an RFC 3339 time")
	var states stateList
	fs.Var(&states, "state", "final states to delete (default completed,failed,cancelled)")
	dryRun := fs.Bool("dry-run", false, "list the workflows that would be deleted, delete nothing")
	limit := fs.Int("limit", 0, "delete (or list) at most this many workflows; 0: all")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *before == "" {
		return usagef("--before is required (a duration such as 720h, or an RFC 3339 time)")
	}
	cutoff, err := parseCutoff(*before, time.Now())
	if err != nil {
		return err
	}
	for _, s := range states {
		if !s.Final() {
			return usagef("--state %s: cleanup deletes only final states (completed, failed, cancelled)", s)
		}
	}
	if len(states) == 0 {
		states = stateList{storage.StateCompleted, storage.StateFailed, storage.StateCancelled}
	}
	if *limit < 0 {
		return usagef("--limit %d: want 0 (all) or more", *limit)
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	res := cleanupResult{Before: cutoff.UTC(), States: states, DryRun: *dryRun}
	if *dryRun {
		lf := storage.ListFilter{States: states, Limit: storage.MaxListLimit}
		for {
			page, err := c.store.ListWorkflows(ctx, lf)
			if err != nil {
				return err
			}
			for _, w := range page {
				res.Scanned++
				if !w.FinishedAt.IsZero() && w.FinishedAt.Before(cutoff) && (*limit == 0 || len(res.Candidates) < *limit) {
					res.Candidates = append(res.Candidates, row(w))
				}
			}
			if len(page) < lf.Limit || (*limit > 0 && len(res.Candidates) >= *limit) {
				break
			}
			lf.AfterID = page[len(page)-1].ID
		}
	} else {
		for *limit == 0 || res.Deleted < *limit {
			n := 1000
			if *limit > 0 {
				n = min(n, *limit-res.Deleted)
			}
			r, err := c.store.DeleteFinished(ctx, storage.CleanupRequest{Before: cutoff, States: states, Limit: n})
			if err != nil {
				return fmt.Errorf("after deleting %d workflows: %w", res.Deleted, err)
			}
			res.Deleted += r.Deleted
			res.Steps += r.Steps
			if r.Deleted == 0 && !r.More {
				break
			}
		}
	}
	if c.json() {
		return c.emit(res)
	}
	names := make([]string, len(states))
	for i, s := range states {
		names[i] = string(s)
	}
	slices.Sort(names)
	if *dryRun {
		printWorkflows(c, res.Candidates)
		fmt.Fprintf(c.stdout, "dry run: %d workflow(s) (%s) finished before %s would be deleted, with their steps and errors; %d scanned; nothing was deleted\n",
			len(res.Candidates), strings.Join(names, ","), fmtTime(cutoff), res.Scanned)
		return nil
	}
	fmt.Fprintf(c.stdout, "deleted %d workflow(s) (%s) finished before %s, and %d step record(s)\n",
		res.Deleted, strings.Join(names, ","), fmtTime(cutoff), res.Steps)
	return nil
}
