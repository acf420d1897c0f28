package dispatch

import "sync/atomic"

// Stats is a snapshot of a Worker's counters. Counters grow for the life of the Worker, across
// calls to Run; each field is read atomically, the snapshot as a whole is not.
type Stats struct {
	// Claimed counts workflows the worker claimed.
	Claimed int64
	// Running is the number of runs in flight now.
	Running int64
	// Finished counts runs that returned from Execute, with or without an error.
	Finished int64
	// RunErrors counts runs whose Execute returned an error (the outcome could not be
	// recorded; the workflow runs again when its lease expires).
	RunErrors int64
	// ClaimErrors counts claims the store refused or failed (for example, database down).
	ClaimErrors int64
	// HeartbeatsLost counts runs stopped because a heartbeat found the lease lost or the
	// workflow cancelled. A beat that races a run's own final write may count one too.
	HeartbeatsLost int64
	// UnknownWorkflows is the number of due workflows with names the engine does not know,
	// as found by the latest check (at most one page of 100).
	UnknownWorkflows int64
	// MergeWakes counts parents the worker woke because their branches' children were done.
	MergeWakes int64
	// MergeWakeErrors counts failed attempts to wake such parents (they are tried again, and
	// their merge probes resume them meanwhile).
	MergeWakeErrors int64
}

// counters are the live, atomically updated values behind Stats.
type counters struct {
	claimed        atomic.Int64
	running        atomic.Int64
	finished       atomic.Int64
	runErrors      atomic.Int64
	claimErrors    atomic.Int64
	heartbeatsLost atomic.Int64
	unknown        atomic.Int64
	mergeWakes     atomic.Int64
	wakeErrors     atomic.Int64
}

// Stats returns the worker's counters. It is safe to call at any time, also while Run runs.
func (w *Worker) Stats() Stats {
	return Stats{
		Claimed:          w.stats.claimed.Load(),
		Running:          w.stats.running.Load(),
		Finished:         w.stats.finished.Load(),
		RunErrors:        w.stats.runErrors.Load(),
		ClaimErrors:      w.stats.claimErrors.Load(),
		HeartbeatsLost:   w.stats.heartbeatsLost.Load(),
		UnknownWorkflows: w.stats.unknown.Load(),
		MergeWakes:       w.stats.mergeWakes.Load(),
		MergeWakeErrors:  w.stats.wakeErrors.Load(),
	}
}
