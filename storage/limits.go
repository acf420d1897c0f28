package storage

import "math"

// Default and largest sizes of the list and cleanup units. They are part of the contract, and
// the functions below are the one place that applies them: a backend passes its request
// through them and uses what they return, so every backend pages and deletes alike.
const (
	// DefaultListLimit is the page size of ListWorkflows when ListFilter.Limit is not
	// positive.
	DefaultListLimit = 100
	// MaxListLimit is the largest page ListWorkflows returns, whatever ListFilter.Limit asks
	// for; the next page (AfterID) holds the rest.
	MaxListLimit = 1000
	// DefaultErrorsLimit is how many error records ListErrors returns at most when its limit
	// is not positive.
	DefaultErrorsLimit = 100
	// MaxErrorsLimit is the largest limit ListErrors applies: a larger one returns every
	// record (a workflow never holds more). It is the largest 32-bit integer, the narrowest
	// LIMIT parameter any backend binds.
	MaxErrorsLimit = math.MaxInt32
	// DefaultCleanupLimit is how many workflows DeleteFinished deletes at most when
	// CleanupRequest.Limit is not positive.
	DefaultCleanupLimit = 1000
	// MaxCleanupLimit is the largest limit DeleteFinished applies, for the same reason as
	// MaxErrorsLimit.
	MaxCleanupLimit = math.MaxInt32
	// DefaultCleanupSteps is how many step rows DeleteFinished deletes at most when
	// CleanupRequest.StepBudget is not positive.
	DefaultCleanupSteps = 1000
	// MaxCleanupSteps is the largest step budget DeleteFinished applies.
	MaxCleanupSteps = math.MaxInt32
)

// ListLimit returns the page size ListWorkflows uses for f: f.Limit, DefaultListLimit when it
// is not positive, and never more than MaxListLimit.
func ListLimit(f ListFilter) int {
	return ClampLimit(f.Limit, DefaultListLimit, MaxListLimit)
}

// ErrorsLimit returns how many error records ListErrors returns at most for limit: limit,
// DefaultErrorsLimit when it is not positive, and never more than MaxErrorsLimit.
func ErrorsLimit(limit int) int {
	return ClampLimit(limit, DefaultErrorsLimit, MaxErrorsLimit)
}

// CleanupLimit returns how many workflows DeleteFinished deletes at most for r: r.Limit,
// DefaultCleanupLimit when it is not positive, and never more than MaxCleanupLimit.
func CleanupLimit(r CleanupRequest) int {
	return ClampLimit(r.Limit, DefaultCleanupLimit, MaxCleanupLimit)
}

// CleanupSteps returns how many step rows DeleteFinished deletes at most for r:
// r.StepBudget, DefaultCleanupSteps when it is not positive, never more than MaxCleanupSteps.
func CleanupSteps(r CleanupRequest) int {
	return ClampLimit(r.StepBudget, DefaultCleanupSteps, MaxCleanupSteps)
}

// CleanupStates returns the final states DeleteFinished considers for r: r.States, or every
// final state when it is empty.
func CleanupStates(r CleanupRequest) []State {
	if len(r.States) == 0 {
		return []State{StateCompleted, StateFailed, StateCancelled}
	}
	return r.States
}

// ClampLimit returns limit, or def when limit is not positive, and never more than max.
func ClampLimit(limit, def, max int) int {
	if limit <= 0 {
		return def
	}
	return min(limit, max)
}
