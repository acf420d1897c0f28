// Package dispatch runs workflows: a Worker claims runnable workflows from the engine's
// storage, runs each one with sdk.Engine.Execute, keeps its lease alive while it runs and
// shuts down without stranding anything.
//
// # Lifecycle
//
// Build a Worker with New and call Run with a context that lives as long as the worker should.
// Run loops until that context is done:
//
//  1. While it has free slots (see Concurrency), it claims up to min(BatchSize, free slots)
//     runnable workflows whose names the engine knows, in one storage.Claim (through
//     sdk.Engine.Claim, which traces claims that took something). Each claimed workflow is
//     leased to the worker for LeaseTTL.
//  2. Each claimed workflow runs in its own goroutine. A heartbeat extends its lease every
//     HeartbeatEvery of real time. If the store says the lease was lost (it expired and
//     another worker took the workflow) or the workflow was cancelled, the run's context is
//     cancelled with that error as its cause and the run stops without writing anything more.
//  3. When a run of a branch child ends (its final write committed), the child's branch step
//     joins a set. A goroutine of Run flushes the set at once if it was idle, then at most
//     every MergeWakeEvery (real time) while children keep ending, with one
//     sdk.Engine.WakeMerges call for all of its branches: a parent parked on a merge whose
//     branch has no unfinished child left becomes runnable now, instead of at its next merge
//     probe. Of two last children finishing at once on different workers, the one that
//     commits second finds its sibling done, so one of them wakes the parent. A failed flush
//     is logged, counted (Stats.MergeWakeErrors) and tried again; a parent no flush reaches
//     (its worker died) still resumes at its next probe.
//  4. A claim that filled its batch is followed at once by another. A claim that found nothing
//     waits for the idle backoff (PollInterval, doubling while idle and reset when work is
//     found), a slot to free, or a change in the engine (a Start, Signal or finished run in
//     this process), whichever comes first. Claim errors (a database restart) are logged and
//     backed off the same way; they never stop Run.
//  5. When the context is done, Run stops claiming and waits for the runs in flight, up to
//     ShutdownTimeout of real time. Runs still going then are cancelled with cause
//     sdk.ErrShutdown, so their leases are released and another worker takes them over at
//     once, earlier completed steps kept. Run waits for them to return (a step that ignores
//     its context holds Run until it does; its lease keeps being heartbeated meanwhile),
//     flushes the last merge wake-ups (within a few seconds) and returns nil.
//
// No goroutine Run starts (runs, heartbeats, the merge wake-ups, the unknown-name reporter)
// outlives it.
//
// A worker that dies without shutting down holds its leases until they expire (LeaseTTL
// after its last heartbeat, by the store's clock); then any worker claims those workflows
// again and they carry on from their last committed step. Two workers never run one workflow
// at the same time while both hold valid leases, and every write a run makes is fenced by its
// lease. Leases expire by the store's clock, so this holds whatever the workers' clocks say:
// a worker whose clock runs ahead sees a leased workflow due early but cannot claim it.
//
// # Unknown names
//
// Claims are filtered by the engine's registered names, so a stored workflow whose name this
// engine does not know (another service's, or one removed by a deploy) is never claimed and
// never changed. The worker lists such due workflows once at start and every
// UnknownCheckEvery, logs a warning per name and reports their number in Stats.
package dispatch
