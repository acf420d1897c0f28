package storage

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Operator queries: what the CLI and the dashboard read besides ListWorkflows, Load and
// ListErrors. They are an optional interface, Inspector, which every backend of this module
// implements and the conformance suite proves. Each method is one round trip (one statement
// or one read transaction) whose cost is bounded by its cap or limit, never by the size of
// the table: counts stop at a cap and say so.

// Inspector is implemented by stores that answer operator queries.
type Inspector interface {
	// CountStates counts the workflows of each name and state among the q.Sample most
	// recently created workflows (highest IDs), with q.Name limiting it to one name. The
	// result is exact when the store holds no more than q.Sample workflows (of that name);
	// otherwise Sampled is true and the counts describe the newest q.Sample only. Rows come
	// in name order, then state order (States). Its cost is bounded by q.Sample.
	CountStates(ctx context.Context, q CountStatesQuery) (StateCounts, error)

	// BranchCounts counts the children of one branch step by state, each count stopping at
	// q.Cap (Capped names the states whose count reached it), and returns the FinishedAt
	// of up to q.Recent of its final children with the highest IDs, newest first, from which
	// the caller reckons a drain rate. Its cost is bounded by the cap and q.Recent (the
	// index on parent step and state), not by the number of children.
	BranchCounts(ctx context.Context, q BranchQuery) (BranchStats, error)

	// Backlog looks at the runnable workflows as of now by the caller's clock (idle, or
	// running with a lease expired by the store's clock, with RunAt at or before now): it
	// returns the earliest RunAt among them (OldestDue, zero when none is due), how many of
	// the BacklogProbe oldest due rows are runnable (Due, with Probed reporting that the
	// probe was full, so there may be more), and the running ones among those whose lease
	// has expired (Expired, at most limit, oldest RunAt first: a worker died holding them).
	// Its cost is bounded by BacklogProbe (the runnable index), not by the backlog.
	Backlog(ctx context.Context, now time.Time, limit int) (Backlog, error)
}

// Defaults and largest values of the operator queries.
const (
	// DefaultCountSample is how many of the newest workflows CountStates counts when
	// CountStatesQuery.Sample is not positive; MaxCountSample is the most it counts.
	DefaultCountSample = 100_000
	MaxCountSample     = 1_000_000
	// DefaultBranchCap is the cap of each state's count in BranchCounts when BranchQuery.Cap
	// is not positive; MaxBranchCap is the largest cap it applies.
	DefaultBranchCap = 100_000
	MaxBranchCap     = 1_000_000
	// DefaultBranchRecent is how many finish times BranchCounts returns when
	// BranchQuery.Recent is zero; MaxBranchRecent is the most it returns.
	DefaultBranchRecent = 200
	MaxBranchRecent     = 1000
	// DefaultBacklogLimit is how many expired leases Backlog returns when its limit is not
	// positive; MaxBacklogLimit is the most it returns.
	DefaultBacklogLimit = 100
	MaxBacklogLimit     = 1000
	// BacklogProbe is how many of the oldest due rows Backlog looks at.
	BacklogProbe = 10_000
)

// CountStatesQuery is the input of CountStates.
type CountStatesQuery struct {
	// Name limits the count to one workflow name; empty counts every name.
	Name string
	// Sample is how many of the newest workflows are counted: DefaultCountSample when not
	// positive, at most MaxCountSample.
	Sample int
}

// StateCount is the number of workflows of one name in one state.
type StateCount struct {
	Name  string
	State State
	Count int
}

// StateCounts is the result of CountStates.
type StateCounts struct {
	Counts []StateCount
	// Counted is how many workflows were counted (the sum of the counts).
	Counted int
	// Sampled reports that older workflows exist beyond the Sample counted.
	Sampled bool
}

// BranchQuery is the input of BranchCounts.
type BranchQuery struct {
	// StepID is the branch step whose children are counted.
	StepID int64
	// Cap bounds each state's count: DefaultBranchCap when not positive, at most
	// MaxBranchCap.
	Cap int
	// Recent is how many finish times are returned: DefaultBranchRecent when zero, none when
	// negative, at most MaxBranchRecent.
	Recent int
}

// BranchStats is the result of BranchCounts.
type BranchStats struct {
	// Counts holds every state (States order) with its count, zero included.
	Counts []StateCount
	// Capped lists the states whose count reached the cap: their true count may be higher.
	Capped []State
	// RecentFinished holds the FinishedAt of the final children with the highest IDs, newest
	// ID first.
	RecentFinished []time.Time
}

// Count returns the count of one state.
func (b BranchStats) Count(s State) int {
	for _, c := range b.Counts {
		if c.State == s {
			return c.Count
		}
	}
	return 0
}

// DrainRate reckons, from RecentFinished, how many children a second the branch finishes:
// the finishes after the earliest over the time from the earliest to the latest (the times
// may come in any order). It is 0 with fewer than two finish times or no time between them.
func (b BranchStats) DrainRate() float64 {
	if len(b.RecentFinished) < 2 {
		return 0
	}
	first, last := slices.MinFunc(b.RecentFinished, time.Time.Compare), slices.MaxFunc(b.RecentFinished, time.Time.Compare)
	span := last.Sub(first).Seconds()
	if span <= 0 {
		return 0
	}
	return float64(len(b.RecentFinished)-1) / span
}

// Backlog is the result of Backlog.
type Backlog struct {
	// OldestDue is the earliest RunAt of a runnable workflow; zero when none is due.
	OldestDue time.Time
	// Due counts the runnable workflows among the BacklogProbe oldest due rows.
	Due int
	// Probed reports that the probe looked at BacklogProbe rows: more may be due.
	Probed bool
	// Expired holds running workflows whose lease has expired, oldest RunAt first.
	Expired []Workflow
}

// States lists every workflow state in the order operator queries report them.
var States = []State{StateIdle, StateRunning, StateStalled, StateCompleted, StateFailed, StateCancelled}

// CountSample returns the sample CountStates counts for q.
func CountSample(q CountStatesQuery) int {
	return ClampLimit(q.Sample, DefaultCountSample, MaxCountSample)
}

// BranchCap returns the cap BranchCounts applies for q.
func BranchCap(q BranchQuery) int { return ClampLimit(q.Cap, DefaultBranchCap, MaxBranchCap) }

// BranchRecent returns how many finish times BranchCounts returns for q.
func BranchRecent(q BranchQuery) int {
	if q.Recent < 0 {
		return 0
	}
	return ClampLimit(q.Recent, DefaultBranchRecent, MaxBranchRecent)
}

// BacklogLimit returns how many expired leases Backlog returns for limit.
func BacklogLimit(limit int) int { return ClampLimit(limit, DefaultBacklogLimit, MaxBacklogLimit) }

// ValidateCountStates checks the input of CountStates: a name, when given, must be a valid
// workflow name.
func ValidateCountStates(q CountStatesQuery) error {
	if q.Name != "" {
		if err := ValidateName(q.Name); err != nil {
			return err
		}
	}
	return nil
}

// ValidateBranchQuery checks the input of BranchCounts: a positive step ID.
func ValidateBranchQuery(q BranchQuery) error {
	if q.StepID <= 0 {
		return fmt.Errorf("%w: branch step ID %d must be positive", ErrInvalid, q.StepID)
	}
	return nil
}

// ValidateBacklog checks the input of Backlog: now within MinTime..MaxTime.
func ValidateBacklog(now time.Time) error {
	return validateNow("backlog now", now)
}

// SortStateCounts orders counts by name, then by state in States order, as CountStates
// returns them.
func SortStateCounts(counts []StateCount) {
	rank := func(s State) int { return slices.Index(States, s) }
	slices.SortFunc(counts, func(a, b StateCount) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return rank(a.State) - rank(b.State)
	})
}

// SampledGroup is one group of a backend's count over the newest sample+1 workflows: its
// name, state and count, and the lowest ID in it.
type SampledGroup struct {
	StateCount
	MinID int64
}

// SampledStateCounts builds CountStates' result from groups counted over the newest
// sample+1 workflows, as the SQL backends count them: when the groups hold more than sample,
// the workflow past the sample is the oldest one read, so the group holding the lowest ID
// gives one back and Sampled is set. The counts come sorted as CountStates returns them.
func SampledStateCounts(groups []SampledGroup, sample int) StateCounts {
	var out StateCounts
	oldest := -1
	for i, g := range groups {
		out.Counted += g.Count
		if oldest < 0 || g.MinID < groups[oldest].MinID {
			oldest = i
		}
	}
	for i, g := range groups {
		if i == oldest && out.Counted > sample {
			if g.Count--; g.Count == 0 {
				continue
			}
		}
		out.Counts = append(out.Counts, g.StateCount)
	}
	if out.Counted > sample {
		out.Sampled, out.Counted = true, sample
	}
	SortStateCounts(out.Counts)
	return out
}

// FinishedChild is the ID and finish time of a final child, as a backend reads them for
// BranchCounts.
type FinishedChild struct {
	ID int64
	At time.Time
}

// NewBranchStats builds BranchCounts' result from the count of each state (each stopped at
// limit, so a count that reached it is capped) and the finish times of final children in
// any order, of which the recent with the highest IDs are kept, newest ID first.
func NewBranchStats(counts map[State]int, limit int, finished []FinishedChild, recent int) BranchStats {
	var out BranchStats
	for _, st := range States {
		n := counts[st]
		out.Counts = append(out.Counts, StateCount{State: st, Count: n})
		if n >= limit {
			out.Capped = append(out.Capped, st)
		}
	}
	slices.SortFunc(finished, func(a, b FinishedChild) int { return cmp.Compare(b.ID, a.ID) })
	for _, f := range finished[:min(len(finished), recent)] {
		out.RecentFinished = append(out.RecentFinished, f.At)
	}
	return out
}
