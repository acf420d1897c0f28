// Package storagetest is the conformance suite for storage.Storage backends.
//
// A backend author proves a backend with one call from an ordinary test:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Storage {
//			s, err := mybackend.Open(filepath.Join(t.TempDir(), "test.db"))
//			require.NoError(t, err)
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The factory must return a fresh, empty store each time it is called (a new file, schema or
// database) and register its own cleanup with t.Cleanup. The storage cases run in parallel,
// each against its own store, so a backend is also exercised under concurrent use; run the
// suite with -race.
//
// Every case passes explicit times (a fixed base time plus offsets) in its requests, as the
// contract asks, so when workflows are due does not depend on the machine's clock. Leases
// expire by the store's own clock, which no request moves: the cases that need a lease to
// expire give it a short real TTL and wait, polling the store with a deadline, until the
// store's clock has passed it. A failing case names the promise of the storage.Storage
// contract that the backend broke.
//
// # Writing a backend
//
// The contract is storage.Storage: every rule a backend must follow is on its methods and
// record types, and this suite checks them. In practice:
//
//  1. The factory. It opens a store nobody else uses (the SQL backends create a schema or a
//     database per call and drop it in the cleanup; bbolt opens a file in t.TempDir), already
//     migrated, and fails t if it cannot. The suite calls it once per case and never shares a
//     store between cases, so any number of stores may be open at once.
//  2. Input checks first. A method begins with the storage validation of its input and writes
//     nothing when it fails, so every backend refuses the same input with ErrInvalid or
//     ErrTooLarge: CreateWorkflow ValidateNew; FindWorkflow ValidateName and ValidateKey;
//     Claim ValidateClaim; Heartbeat ValidateHeartbeat; SaveSteps ValidateLease and
//     ValidateCommit; FinishRun ValidateLease and ValidateFinish; Release ValidateRelease;
//     SpawnBatch ValidateLease and ValidateSpawn; Wake ValidateWake; Retry ValidateRetry;
//     Cancel ValidateCancel; CountChildren ValidateChildQuery; WakeMergeWaiters
//     ValidateMergeWake; ListWorkflows ValidateList; DeleteFinished ValidateCleanup. Page
//     sizes go through storage.ClampLimit (ListWorkflows: 100 by default, at most 1,000;
//     ListErrors: 100 by default). The Invalid* cases send input just past the limits, and
//     LimitsAccepted input exactly at them.
//  3. Fencing. Every write under a lease (Heartbeat, SaveSteps, FinishRun, Release,
//     SpawnBatch) checks in its own statement or transaction that the lease is the
//     workflow's current one and live by the store's clock, and refuses with the error
//     storage.Fence gives for the row and the store's clock as read there (bbolt and MySQL
//     call Fence on the row they read; Postgres checks in the UPDATE's WHERE clause and
//     calls Fence to say why a write matched no row), so every backend says alike why a
//     lease is lost (the Fence* cases compare the messages).
//  4. Two clocks. A lease's expiry is set and checked by the store's own clock (the database
//     server's now() on the SQL backends, the process's clock in an embedded store), inside
//     the claiming, heartbeating or fenced statement; a request's Now never decides it.
//     Whether a workflow is due is judged by the caller's Now, and the times the store
//     records (created, updated, finished, completed) are the Now of the request that made
//     them. The Times* cases pass times with microseconds, some in a zone other than UTC,
//     and require the same instants back, in UTC, from every read method: what every
//     backend here does, although the storage package doc does not say it yet.
//  5. Transient errors. A unit whose failure the server reported (a deadlock, a
//     serialization failure) was rolled back and may run again inside the method; a write
//     whose outcome is unknown (the connection broke after the statement or the COMMIT was
//     sent) must not be repeated unless it is idempotent: return the error, and the engine
//     recovers (see storage/postgres/retry.go and storage/mysql/transient.go). The suite does
//     not break connections; its e2e ChaosFailuresLoseNothing case fails a tenth of the
//     store's calls before or after they commit, through a wrapper, and requires every
//     workflow to complete with one child per item and no step result lost.
//  6. Costs. Each method is one round trip (one statement or transaction; on backends
//     without UPDATE ... RETURNING a fixed number of statements), however many steps,
//     children or step IDs it carries. The suite counts what it can see through the
//     interface: one Load per run (e2e OneLoadPerRun), and ceil(N/B) SpawnBatch calls and
//     one read of the source for N children in batches of B (e2e
//     BranchSpawnCostAndSealedSource). It cannot see statements: the SQL backends count
//     those in their own tests (statements_test.go in storage/postgres and storage/mysql).
//  7. Optional interfaces. A store that implements storage.Notifier gets the Notify* cases;
//     one that does not sees them skipped, each naming the capability. A store that
//     implements the interface but cannot deliver it where it runs (a pooler in transaction
//     mode cannot LISTEN) declares it: storagetest.Run(t, factory,
//     storagetest.Without(storagetest.Notifier)). An unknown name fails the test.
//
// Run reports the storage cases under "storage/<Case>" and then runs workflows end to end
// through the sdk and dispatch packages under "e2e/<Case>", so one part runs alone with
// go test -run 'TestConformance/e2e' (or '/storage/Times'). Benchmark measures a backend
// the same way for every backend: call it from a benchmark with a factory of fresh stores
// and run it with go test -run '^$' -bench . -benchtime 1x (the large fan-outs take one
// iteration). A SQL backend's tests find their server through CHRONOFORGE_POSTGRES_DSN or
// CHRONOFORGE_MYSQL_DSN, and CHRONOFORGE_REQUIRE_DB=1 makes a missing server a failure
// instead of a skip (see the README).
package storagetest
