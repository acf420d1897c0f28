// Package chaos is chronoforge's fault-injection suite. Its tests run real worker processes
// (the test binary re-executing itself) over one store, inject faults while the workers run
// a workload (kill -9 of workers, database restarts on a private server, network faults
// through an in-process TCP proxy, skewed clocks, frozen processes, failing storage calls, a
// full disk under bbolt), then check the invariants chronoforge promises: every workflow
// completed exactly once with the right result, exactly one child per item, merged totals
// right, no step executed again but the ones in flight at a fault, and no workflow left
// running without a live lease.
//
// Every step of the workloads records each execution outside the store, in a log file of its
// worker process (one write per execution, which no database fault can fail or roll back),
// so re-executions are counted, not guessed.
//
// `go test ./internal/chaos` (part of `make test`) runs the short variant. With
// CHRONOFORGE_CHAOS=full (`make chaos`) it runs the full sizes and writes each scenario's
// figures to the file CHRONOFORGE_CHAOS_RESULTS names, from which the table of
// RELIABILITY.md is made.
package chaos
