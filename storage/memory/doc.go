// Package memory is an in-memory storage.Storage: for unit tests of code built on
// chronoforge, examples and test kits. Nothing is durable: every workflow is lost with the
// process (or with Close).
//
// It keeps the whole contract of package storage, proven by the same conformance suite as the
// durable backends (storagetest.Run), so code tested against it behaves the same on bbolt,
// PostgreSQL or MySQL:
//
//   - Every method is one critical section under one mutex: it validates its input with the
//     storage.Validate* function for it, then checks ctx and Close, then reads and writes as
//     one transaction. A refused call writes nothing.
//   - Leases expire by the store's own clock (time.Now unless WithClock says otherwise), read
//     inside that critical section; a write under a lease is refused with storage.Fence's
//     error. Request times (Now, RunAt) only decide when a workflow is due and stamp records.
//   - Times are kept in UTC to the microsecond, like the SQL backends, and every slice it
//     returns is a copy: callers may change what they get and what they passed in.
//   - It starts no goroutine of its own. Listen (storage.Notifier) hands out coalescing
//     channels that the store's writes signal without blocking; context.AfterFunc closes one
//     when its listener's context ends, and Close closes the rest.
//
// # Indexes
//
// Workflows are held by ID and by name and key. Besides them the store keeps:
//
//   - due: every workflow with a RunAt (only idle and running ones have one), ordered by
//     RunAt and ID, and one such queue per workflow name, so Claim walks the due workflows
//     in RunAt order (of the names it asks for) instead of scanning every workflow;
//   - finished: final workflows ordered by FinishedAt, for DeleteFinished;
//   - order: every workflow ID, ascending, for ListWorkflows' keyset pages;
//   - children: per branch step, its children's IDs ascending and, per state, the set of
//     them, so CountChildren and WakeMergeWaiters cost a few map lookups per step and state
//     however many children a branch has, and a branch's children page by ID;
//   - step owners: the workflow each step ID belongs to, for WakeMergeWaiters.
//
// Each queue is a list of sorted chunks of at most 512 entries, cheap to insert into at any
// position and to walk in order.
package memory
