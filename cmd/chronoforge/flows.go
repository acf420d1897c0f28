package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// flowRow is one flow in the output of flows, with stable JSON names: Per as seconds and as
// a Go duration string, UpdatedAt absent for a flow not stored (a dry run's).
type flowRow struct {
	Key         string     `json:"key"`
	Priority    int        `json:"priority"`
	Concurrency int        `json:"concurrency"`
	Rate        int        `json:"rate"`
	PerSeconds  float64    `json:"per_seconds,omitempty"`
	Per         string     `json:"per,omitempty"`
	Running     int        `json:"running"`
	Due         int        `json:"due"`
	Capped      bool       `json:"capped"`
	UpdatedAt   *time.Time `json:"updated_at,omitempty"`
}

// flowsResult is the output of flows (the list).
type flowsResult struct {
	Flows []flowRow `json:"flows"`
}

// flowSetResult is the output of flows set: the flow stored (or, in a dry run, the one that
// would be), and the one stored before, absent when there was none.
type flowSetResult struct {
	DryRun   bool     `json:"dry_run"`
	Created  bool     `json:"created"`
	Flow     flowRow  `json:"flow"`
	Previous *flowRow `json:"previous,omitempty"`
}

// flowDeleteResult is the output of flows delete.
type flowDeleteResult struct {
	Key     string `json:"key"`
	Deleted bool   `json:"deleted"`
}

// flowRowOf converts a stored flow and its counts.
func flowRowOf(st storage.FlowState) flowRow {
	r := flowRow{Key: st.Key, Priority: st.Priority, Concurrency: st.Concurrency, Rate: st.Rate,
		Running: st.Running, Due: st.Due, Capped: st.Capped, UpdatedAt: optTime(st.UpdatedAt)}
	if st.Per > 0 {
		r.PerSeconds, r.Per = st.Per.Seconds(), st.Per.String()
	}
	return r
}

// flowController returns the store's flow control, or a clear error when it has none.
func (c *cli) flowController() (storage.FlowController, error) {
	fc, ok := c.store.(storage.FlowController)
	if !ok {
		return nil, fmt.Errorf("the %s store does not support flow control (storage.FlowController)", c.kind)
	}
	return fc, nil
}

// flowFlags are the limits flows set takes. Each is a pointer so that set can tell a flag
// given as 0 (no limit) from a flag not given (keep the stored value).
type flowFlags struct {
	priority, concurrency, rate *int
	per                         *time.Duration
	dryRun                      bool
}

// intFlag is an int flag that records whether it was given.
type intFlag struct{ v **int }

func (f intFlag) String() string {
	if f.v == nil || *f.v == nil {
		return ""
	}
	return strconv.Itoa(**f.v)
}

func (f intFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not an integer", s)
	}
	*f.v = &n
	return nil
}

// durationFlag is a duration flag that records whether it was given.
type durationFlag struct{ v **time.Duration }

func (f durationFlag) String() string {
	if f.v == nil || *f.v == nil {
		return ""
	}
	return (**f.v).String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 1s, 500ms or 1m", s)
	}
	*f.v = &d
	return nil
}

// register adds the flags of flows set to fs.
func (f *flowFlags) register(fs *flag.FlagSet) {
	fs.Var(intFlag{&f.priority}, "priority", fmt.Sprintf("set: the priority `N`, %d..%d: higher is claimed first", storage.MinPriority, storage.MaxPriority))
	fs.Var(intFlag{&f.concurrency}, "concurrency", "set: at most `N` workflows of the key running at once; 0: no limit")
	fs.Var(intFlag{&f.rate}, "rate", fmt.Sprintf("set: at most `N` claims per --per window, up to %d; 0: no limit (and no window)", storage.MaxRate))
	fs.Var(durationFlag{&f.per}, "per", fmt.Sprintf("set: the rate's window, a `DURATION` of %v..%v (such as 1s or 1m)", storage.MinPer, storage.MaxPer))
	fs.BoolVar(&f.dryRun, "dry-run", false, "set: print the flow that would be stored, write nothing")
}

// given reports whether any flag of flows set was given.
func (f *flowFlags) given() bool {
	return f.priority != nil || f.concurrency != nil || f.rate != nil || f.per != nil || f.dryRun
}

// apply changes base by the flags given and keeps the rest. Turning the rate off (--rate 0)
// without a --per drops the stored window too, since a window without a rate is refused.
func (f *flowFlags) apply(base storage.Flow) storage.Flow {
	if f.priority != nil {
		base.Priority = *f.priority
	}
	if f.concurrency != nil {
		base.Concurrency = *f.concurrency
	}
	if f.rate != nil {
		base.Rate = *f.rate
		if base.Rate == 0 && f.per == nil {
			base.Per = 0
		}
	}
	if f.per != nil {
		base.Per = *f.per
	}
	return base
}

// check validates a flow with storage.ValidateFlow, as a usage error. A rate without a
// window gets its own message: the one of ValidateFlow names a zero period the operator
// never typed.
func checkFlow(f storage.Flow, now time.Time) error {
	if f.Rate > 0 && f.Per == 0 {
		return usagef("flow %q: --rate %d needs --per, the window it counts in (such as 1s or 1m)", f.Key, f.Rate)
	}
	if err := storage.ValidateFlow(f, now); err != nil {
		return usagef("%v", err)
	}
	return nil
}

// runFlows lists the stored flows, or with set or delete changes one.
func runFlows(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags()
	var ff flowFlags
	ff.register(fs)
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	sub := "list"
	if len(pos) > 0 {
		sub, pos = pos[0], pos[1:]
	}
	switch sub {
	case "list":
		if len(pos) > 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		if ff.given() {
			return usagef("--priority, --concurrency, --rate, --per and --dry-run apply to 'flows set'")
		}
		return flowsList(ctx, c)
	case "set":
		if len(pos) != 1 {
			return usagef("want one flow key: flows set KEY [--priority N] [--concurrency N] [--rate N --per DURATION]")
		}
		return flowsSet(ctx, c, pos[0], &ff)
	case "delete":
		if len(pos) != 1 {
			return usagef("want one flow key: flows delete KEY")
		}
		if ff.given() {
			return usagef("--priority, --concurrency, --rate, --per and --dry-run apply to 'flows set'")
		}
		return flowsDelete(ctx, c, pos[0])
	default:
		return usagef("unknown flows command %q: want list, set or delete", sub)
	}
}

// flowsList prints every stored flow with its running and due counts.
func flowsList(ctx context.Context, c *cli) error {
	if err := c.open(ctx, false); err != nil {
		return err
	}
	fc, err := c.flowController()
	if err != nil {
		return err
	}
	states, err := fc.ListFlows(ctx, time.Now())
	if err != nil {
		return err
	}
	res := flowsResult{Flows: make([]flowRow, 0, len(states))}
	for _, st := range states {
		res.Flows = append(res.Flows, flowRowOf(st))
	}
	if c.json() {
		return c.emit(res)
	}
	printFlows(c, res.Flows)
	if len(res.Flows) == 0 {
		fmt.Fprintln(c.stdout, "(no flows: every workflow runs with priority 0 and no limits)")
	}
	return nil
}

// printFlows prints flows as a table. A count that stopped at storage.FlowProbe is shown
// as "≥N": there may be more.
func printFlows(c *cli, rows []flowRow) {
	tw := c.table()
	fmt.Fprintln(tw, "KEY\tPRIORITY\tCONCURRENCY\tRATE\tRUNNING\tDUE\tUPDATED")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Key, r.Priority, fmtLimit(r.Concurrency), fmtRate(r),
			fmtProbe(r.Running, r.Capped), fmtProbe(r.Due, r.Capped), fmtTimePtr(r.UpdatedAt))
	}
	_ = tw.Flush()
}

// fmtLimit formats a limit: "-" for none.
func fmtLimit(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// fmtRate formats a flow's rate as "N/PER": "-" for none.
func fmtRate(r flowRow) string {
	if r.Rate == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%s", r.Rate, r.Per)
}

// fmtProbe formats a count of ListFlows, "≥N" when capped stopped it at storage.FlowProbe.
func fmtProbe(n int, capped bool) string {
	if capped && n >= storage.FlowProbe {
		return "≥" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

// describeFlow is a flow's numbers in one line of words.
func describeFlow(r flowRow) string {
	conc, rate := "no concurrency limit", "no rate limit"
	if r.Concurrency > 0 {
		conc = fmt.Sprintf("concurrency %d", r.Concurrency)
	}
	if r.Rate > 0 {
		rate = fmt.Sprintf("rate %d per %s", r.Rate, r.Per)
	}
	return fmt.Sprintf("priority %d, %s, %s", r.Priority, conc, rate)
}

// flowsSet changes the flags given of the flow stored under key (or of a new one) and
// stores it, or in a dry run prints it.
func flowsSet(ctx context.Context, c *cli, key string, ff *flowFlags) error {
	if err := storage.ValidateFlowKey(key); err != nil {
		return usagef("%v", err)
	}
	if ff.priority == nil && ff.concurrency == nil && ff.rate == nil && ff.per == nil {
		return usagef("flows set %s: give at least one of --priority, --concurrency, --rate, --per", key)
	}
	now := time.Now()
	// The flags alone are checked before the store is opened, so a value out of range is
	// refused without a connection. A rate or a window given alone may complete a stored
	// one, so each is checked here beside a stand-in for the other.
	probe := ff.apply(storage.Flow{Key: key})
	if ff.rate != nil && *ff.rate > 0 && ff.per == nil {
		probe.Per = storage.MinPer
	}
	if ff.per != nil && ff.rate == nil {
		probe.Rate = 1
	}
	if err := checkFlow(probe, now); err != nil {
		return err
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	fc, err := c.flowController()
	if err != nil {
		return err
	}
	// FlowController has no single-flow read: the list is bounded by storage.MaxFlows.
	states, err := fc.ListFlows(ctx, now)
	if err != nil {
		return err
	}
	res := flowSetResult{DryRun: ff.dryRun, Created: true}
	base := storage.Flow{Key: key}
	for _, st := range states {
		if st.Key == key {
			prev := flowRowOf(st)
			res.Previous, res.Created, base = &prev, false, st.Flow
			break
		}
	}
	f := ff.apply(base)
	f.UpdatedAt = time.Time{}
	if err := checkFlow(f, now); err != nil {
		return err
	}
	if !ff.dryRun {
		f, _, err = fc.PutFlow(ctx, f, false, now)
		if err != nil {
			if errors.Is(err, storage.ErrTooLarge) {
				return fmt.Errorf("flow %q: %w (delete an unused flow first)", key, err)
			}
			return err
		}
	}
	res.Flow = flowRowOf(storage.FlowState{Flow: f})
	if c.json() {
		return c.emit(res)
	}
	switch {
	case ff.dryRun:
		fmt.Fprintf(c.stdout, "dry run: flow %s would be stored with %s; nothing was written\n", key, describeFlow(res.Flow))
	case res.Created:
		fmt.Fprintf(c.stdout, "flow %s created: %s\n", key, describeFlow(res.Flow))
	default:
		fmt.Fprintf(c.stdout, "flow %s updated: %s (was %s)\n", key, describeFlow(res.Flow), describeFlow(*res.Previous))
	}
	return nil
}

// flowsDelete removes the flow stored under key: its workflows then run with priority 0 and
// no limits. Deleting a key that has no flow is an error, so a mistyped key is noticed.
func flowsDelete(ctx context.Context, c *cli, key string) error {
	if err := storage.ValidateFlowKey(key); err != nil {
		return usagef("%v", err)
	}
	if err := c.open(ctx, false); err != nil {
		return err
	}
	fc, err := c.flowController()
	if err != nil {
		return err
	}
	deleted, err := fc.DeleteFlow(ctx, key)
	if err != nil {
		return err
	}
	if !deleted {
		return fmt.Errorf("flow %q: %w: no flow is stored under that key", key, storage.ErrNotFound)
	}
	if c.json() {
		return c.emit(flowDeleteResult{Key: key, Deleted: true})
	}
	fmt.Fprintf(c.stdout, "flow %s deleted: its workflows run with priority 0 and no limits\n", key)
	return nil
}
