package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// branchRow is one branch step with its children's counts, drain rate and ETA.
type branchRow struct {
	StepID int64  `json:"step_id"`
	Branch string `json:"branch"`
	// Counts holds each state's count; Capped the states whose count stopped at the cap
	// (the true count is at least the one given).
	Counts     map[storage.State]int `json:"counts"`
	Capped     []storage.State       `json:"capped,omitempty"`
	Unfinished int                   `json:"unfinished"`
	// RatePerSecond is how fast children finished lately (from the finish times of up to
	// storage.DefaultBranchRecent of the newest finished children), 0 when unknown.
	RatePerSecond float64 `json:"rate_per_second"`
	// ETASeconds is the unfinished children divided by the rate; absent when unknown.
	ETASeconds *float64      `json:"eta_seconds,omitempty"`
	Children   []workflowRow `json:"children"`
}

// childrenResult is the output of children.
type childrenResult struct {
	WorkflowID int64       `json:"workflow_id"`
	Branches   []branchRow `json:"branches"`
}

// runChildren prints a workflow's branch steps with their children's counts and a page of
// children.
func runChildren(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	branch := fs.String("branch", "", "only this branch (its name, without the record prefix)")
	var states stateList
	fs.Var(&states, "state", "list only children in these states (repeatable or comma list)")
	limit := fs.Int("limit", 20, fmt.Sprintf("children listed per branch (0..%d)", storage.MaxListLimit))
	countCap := fs.Int("cap", storage.DefaultBranchCap, fmt.Sprintf("stop each state's count here (1..%d)", storage.MaxBranchCap))
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one workflow: <id> or <name>/<key>")
	}
	if *countCap < 1 || *countCap > storage.MaxBranchCap {
		return usagef("--cap %d: want 1..%d", *countCap, storage.MaxBranchCap)
	}
	if *limit < 0 || *limit > storage.MaxListLimit {
		return usagef("--limit %d: want 0..%d", *limit, storage.MaxListLimit)
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	in, err := c.inspector()
	if err != nil {
		return err
	}
	w, err := c.findWorkflow(ctx, pos[0])
	if err != nil {
		return err
	}
	_, steps, err := c.store.Load(ctx, w.ID)
	if err != nil {
		return fmt.Errorf("workflow %d: %w", w.ID, err)
	}
	res := childrenResult{WorkflowID: w.ID, Branches: []branchRow{}}
	for _, s := range steps {
		name, ok := strings.CutPrefix(s.Name, storage.BranchStepPrefix)
		if !ok || (*branch != "" && name != *branch) {
			continue
		}
		st, err := in.BranchCounts(ctx, storage.BranchQuery{StepID: s.ID, Cap: *countCap})
		if err != nil {
			return fmt.Errorf("branch %q (step %d): %w", name, s.ID, err)
		}
		b := branchRow{StepID: s.ID, Branch: name, Counts: map[storage.State]int{}, Capped: st.Capped, Children: []workflowRow{}}
		for _, sc := range st.Counts {
			b.Counts[sc.State] = sc.Count
			if !sc.State.Final() {
				b.Unfinished += sc.Count
			}
		}
		b.RatePerSecond = st.DrainRate()
		if b.RatePerSecond > 0 {
			eta := float64(b.Unfinished) / b.RatePerSecond
			b.ETASeconds = &eta
		}
		if *limit > 0 {
			page, err := c.store.ListWorkflows(ctx, storage.ListFilter{ParentStepID: s.ID, States: states, Limit: *limit})
			if err != nil {
				return fmt.Errorf("branch %q (step %d): children: %w", name, s.ID, err)
			}
			for _, ch := range page {
				b.Children = append(b.Children, row(ch))
			}
		}
		res.Branches = append(res.Branches, b)
	}
	if *branch != "" && len(res.Branches) == 0 {
		return fmt.Errorf("workflow %d has no branch %q", w.ID, *branch)
	}
	if c.json() {
		return c.emit(res)
	}
	if len(res.Branches) == 0 {
		fmt.Fprintf(c.stdout, "workflow %d has no branches\n", w.ID)
		return nil
	}
	for i, b := range res.Branches {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		fmt.Fprintf(c.stdout, "branch %s (step %d)\n", b.Branch, b.StepID)
		tw := c.table()
		for _, s := range storage.States {
			n := fmt.Sprint(b.Counts[s])
			for _, cs := range b.Capped {
				if cs == s {
					n = "≥" + n
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\n", s, n)
		}
		_ = tw.Flush()
		unfinished := fmt.Sprint(b.Unfinished)
		for _, cs := range b.Capped {
			if !cs.Final() {
				unfinished = "≥" + unfinished // the ETA is a lower bound too
				break
			}
		}
		if b.ETASeconds != nil {
			fmt.Fprintf(c.stdout, "  drain rate %.2f/s, %s unfinished, ETA %s\n", b.RatePerSecond, unfinished,
				(time.Duration(*b.ETASeconds * float64(time.Second))).Round(time.Second))
		} else {
			fmt.Fprintf(c.stdout, "  drain rate unknown (fewer than two finished children), %s unfinished\n", unfinished)
		}
		if len(b.Children) > 0 {
			printWorkflows(c, b.Children)
		}
	}
	return nil
}
