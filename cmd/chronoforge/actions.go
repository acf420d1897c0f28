package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

// errSomeFailed reports that a bulk action failed for some workflows.
var errSomeFailed = errors.New("some workflows failed")

// DefaultMax is how many workflows a bulk action by filter acts on at most.
const DefaultMax = 1000

// actionRow is the outcome for one workflow: Result is "done" or "error", and in a dry run
// "would <action>" or "would fail" (the workflow's state does not allow it); Error says why.
type actionRow struct {
	ID     int64         `json:"id"`
	Name   string        `json:"name,omitempty"`
	Key    string        `json:"key,omitempty"`
	State  storage.State `json:"state,omitempty"`
	Result string        `json:"result"`
	Error  string        `json:"error,omitempty"`
}

// actionResult is the output of retry, resume and cancel.
type actionResult struct {
	Action string `json:"action"`
	DryRun bool   `json:"dry_run"`
	Done   int    `json:"done"`
	Failed int    `json:"failed"`
	// Capped reports that the filter matched more workflows than --max.
	Capped  bool        `json:"capped"`
	Results []actionRow `json:"results"`
}

// runRetry retries stalled or failed workflows (sdk.Engine.Retry writes the retry record).
func runRetry(ctx context.Context, c *cli, args []string) error {
	return runAction(ctx, c, args, "retry", false, func(ctx context.Context, e *sdk.Engine, id int64, _ bool) error {
		return e.Retry(ctx, id)
	})
}

// runResume wakes idle workflows now (sdk.Engine.Signal).
func runResume(ctx context.Context, c *cli, args []string) error {
	return runAction(ctx, c, args, "resume", false, func(ctx context.Context, e *sdk.Engine, id int64, _ bool) error {
		return e.Signal(ctx, id)
	})
}

// runCancel cancels workflows, with --children their branches' children too.
func runCancel(ctx context.Context, c *cli, args []string) error {
	return runAction(ctx, c, args, "cancel", true, func(ctx context.Context, e *sdk.Engine, id int64, children bool) error {
		if children {
			return e.Cancel(ctx, id, sdk.WithChildren())
		}
		return e.Cancel(ctx, id)
	})
}

// accepts reports whether action applies to a workflow in state st, for the dry run (the
// store decides for real): retry takes stalled or failed workflows, resume idle or running
// ones, cancel any unfinished one (and, with --children, a cancelled one whose children
// are still to cancel).
func accepts(action string, st storage.State, children bool) bool {
	switch action {
	case "retry":
		return st == storage.StateStalled || st == storage.StateFailed
	case "resume":
		return st == storage.StateIdle || st == storage.StateRunning
	default:
		return !st.Final() || (children && st == storage.StateCancelled)
	}
}

// actFunc acts on one workflow; children is cancel's --children.
type actFunc func(ctx context.Context, e *sdk.Engine, id int64, children bool) error

// runAction is retry, resume and cancel: on the IDs given, or on up to --max workflows a
// filter selects (with --yes), or with --dry-run only listing them. hasChildren adds the
// --children flag.
func runAction(ctx context.Context, c *cli, args []string, action string, hasChildren bool, act actFunc) error {
	fs := c.newFlags()
	var f filterFlags
	f.register(fs)
	yes := fs.Bool("yes", false, "act on every workflow the filter selects (up to --max)")
	dryRun := fs.Bool("dry-run", false, "print what would be acted on, write nothing")
	maxN := fs.Int("max", DefaultMax, "act on at most this many workflows of a filter")
	children := new(bool)
	if hasChildren {
		children = fs.Bool("children", false, "cancel the children of its branches too, at every depth")
	}
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	var ids []int64
	for _, p := range pos {
		id, err := strconv.ParseInt(p, 10, 64)
		if err != nil || id <= 0 {
			return usagef("%q is not a workflow ID", p)
		}
		ids = append(ids, id)
	}
	switch {
	case len(ids) > 0 && f.set():
		return usagef("give workflow IDs or filters, not both")
	case len(ids) == 0 && !f.set():
		return usagef("give workflow IDs, or filters (--name, --state, --key-prefix, --parent, --due) with --yes or --dry-run")
	case len(ids) == 0 && !*yes && !*dryRun:
		return usagef("acting on a filter needs --yes (or --dry-run to see what it selects)")
	case *maxN < 1:
		return usagef("--max %d: want at least 1", *maxN)
	}
	lf, err := f.listFilter(time.Now())
	if err != nil {
		return err
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	res := actionResult{Action: action, DryRun: *dryRun, Results: []actionRow{}}
	var targets []storage.Workflow
	if len(ids) > 0 {
		for _, id := range ids {
			w, err := c.store.GetWorkflow(ctx, id)
			if err != nil {
				res.Results = append(res.Results, actionRow{ID: id, Result: "error", Error: fmt.Sprintf("workflow %d: %v", id, err)})
				res.Failed++
				continue
			}
			targets = append(targets, w)
		}
	} else {
		// Ascending ID pages: the oldest first, and a cursor that acting cannot disturb.
		for len(targets) < *maxN {
			lf.Limit = min(storage.MaxListLimit, *maxN-len(targets)+1)
			page, err := c.store.ListWorkflows(ctx, lf)
			if err != nil {
				return err
			}
			for _, w := range page {
				if len(targets) == *maxN {
					res.Capped = true
					break
				}
				targets = append(targets, w)
			}
			if len(page) < lf.Limit || res.Capped {
				break
			}
			lf.AfterID = page[len(page)-1].ID
		}
	}
	var e *sdk.Engine
	if !*dryRun {
		if e, err = c.engine(); err != nil {
			return err
		}
	}
	for _, w := range targets {
		r := actionRow{ID: w.ID, Name: w.Name, Key: w.Key, State: w.State}
		switch {
		case *dryRun && !accepts(action, w.State, *children):
			r.Result, r.Error = "would fail", fmt.Sprintf("it is %s", w.State)
		case *dryRun:
			r.Result = "would " + action
		default:
			if err := act(ctx, e, w.ID, *children); err != nil {
				r.Result, r.Error = "error", oneLine(err)
				res.Failed++
			} else {
				r.Result = "done"
				res.Done++
			}
		}
		res.Results = append(res.Results, r)
	}
	if c.json() {
		if err := c.emit(res); err != nil {
			return err
		}
	} else {
		tw := c.table()
		fmt.Fprintln(tw, "ID\tNAME\tKEY\tSTATE\tRESULT")
		for _, r := range res.Results {
			out := r.Result
			if r.Error != "" {
				out += ": " + r.Error
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Key, r.State, out)
		}
		_ = tw.Flush()
		switch {
		case *dryRun:
			fmt.Fprintf(c.stdout, "dry run: %d workflow(s) would be acted on; nothing was written\n", len(targets))
		default:
			fmt.Fprintf(c.stdout, "%s: %d done, %d failed\n", action, res.Done, res.Failed)
		}
		if res.Capped {
			fmt.Fprintf(c.stdout, "stopped at --max %d: the filter selects more\n", *maxN)
		}
	}
	if res.Failed > 0 {
		return fmt.Errorf("%w: %d of %d", errSomeFailed, res.Failed, len(res.Results))
	}
	return nil
}
