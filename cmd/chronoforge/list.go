package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// workflowRow is one workflow in listings, with stable JSON names.
type workflowRow struct {
	ID           int64             `json:"id"`
	Name         string            `json:"name"`
	Key          string            `json:"key"`
	Flow         string            `json:"flow,omitempty"`
	State        storage.State     `json:"state"`
	Attempt      int               `json:"attempt"`
	RunAt        *time.Time        `json:"run_at,omitempty"`
	Wait         string            `json:"wait,omitempty"`
	WaitStep     string            `json:"wait_step,omitempty"`
	ParentStepID int64             `json:"parent_step_id,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`
	LastError    string            `json:"last_error,omitempty"`
	CreatedAt    time.Time         `json:"created_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
	FinishedAt   *time.Time        `json:"finished_at,omitempty"`
}

// optTime returns nil for the zero time, so JSON leaves it out.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// row converts a stored workflow.
func row(w storage.Workflow) workflowRow {
	return workflowRow{
		ID: w.ID, Name: w.Name, Key: w.Key, Flow: w.Flow, State: w.State, Attempt: w.Attempt, RunAt: optTime(w.RunAt),
		Wait: string(w.Wait.Kind), WaitStep: w.Wait.Step, ParentStepID: w.ParentStepID, Tags: w.Tags,
		LastError: w.LastError, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, FinishedAt: optTime(w.FinishedAt),
	}
}

// listResult is the output of list. NextBefore is the cursor of the next (older) page,
// PrevAfter that of the previous (newer) one; 0 when there is none to follow.
type listResult struct {
	Workflows  []workflowRow `json:"workflows"`
	NextBefore int64         `json:"next_before,omitempty"`
	PrevAfter  int64         `json:"prev_after,omitempty"`
}

// runList lists workflows newest first, one keyset page at a time.
func runList(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	var f filterFlags
	f.register(fs)
	limit := fs.Int("limit", storage.DefaultListLimit, fmt.Sprintf("page size (at most %d)", storage.MaxListLimit))
	before := fs.Int64("before", 0, "page of workflows with IDs below this (the next page's cursor)")
	after := fs.Int64("after", 0, "page of workflows with IDs above this (the previous page)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *limit < 1 || *limit > storage.MaxListLimit {
		return usagef("--limit %d: want 1..%d", *limit, storage.MaxListLimit)
	}
	if *before < 0 || *after < 0 {
		return usagef("--before and --after take a positive workflow ID")
	}
	if *before > 0 && *after > 0 {
		return usagef("give --before or --after, not both")
	}
	lf, err := f.listFilter(time.Now())
	if err != nil {
		return err
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	lf.Limit = *limit
	if *after > 0 {
		lf.AfterID = *after // ascending from the cursor: the page just above it
	} else {
		lf.Desc, lf.BeforeID = true, *before
	}
	page, err := c.store.ListWorkflows(ctx, lf)
	if err != nil {
		return err
	}
	if !lf.Desc {
		slices.Reverse(page)
	}
	res := listResult{Workflows: make([]workflowRow, 0, len(page))}
	for _, w := range page {
		res.Workflows = append(res.Workflows, row(w))
	}
	if n := len(page); n > 0 {
		if n == *limit || *after > 0 {
			res.NextBefore = page[n-1].ID
		}
		if *before > 0 || (*after > 0 && n == *limit) {
			res.PrevAfter = page[0].ID
		}
	}
	if c.json() {
		return c.emit(res)
	}
	printWorkflows(c, res.Workflows)
	if res.NextBefore > 0 {
		fmt.Fprintf(c.stdout, "next page: --before %d\n", res.NextBefore)
	}
	if res.PrevAfter > 0 {
		fmt.Fprintf(c.stdout, "previous page: --after %d\n", res.PrevAfter)
	}
	return nil
}

// printWorkflows prints workflows as a table.
func printWorkflows(c *cli, rows []workflowRow) {
	tw := c.table()
	fmt.Fprintln(tw, "ID\tNAME\tKEY\tSTATE\tATTEMPT\tRUN AT\tWAIT\tUPDATED\tLAST ERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Key, r.State, r.Attempt,
			fmtTimePtr(r.RunAt), r.Wait, fmtTime(r.UpdatedAt), truncate(r.LastError, 60))
	}
	_ = tw.Flush()
	if len(rows) == 0 {
		fmt.Fprintln(c.stdout, "(no workflows)")
	}
}

// fmtTime formats a time for tables; "-" for none.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtTimePtr formats an optional time.
func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// truncate shortens s to n runes for a table cell.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
