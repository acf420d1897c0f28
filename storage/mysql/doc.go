// Package mysql is the MySQL and MariaDB chronoforge backend: a storage.Storage over a
// *sql.DB that the application opens with github.com/go-sql-driver/mysql and keeps owning,
// for many workers in many processes. It supports MySQL 8.0+ and MariaDB 10.6+ (the first
// versions with FOR UPDATE SKIP LOCKED) and uses only SQL both accept; it is tested on
// MariaDB 10.11.
//
// # Tables
//
// Migrate creates the tables (named with a prefix, "chrono_" by default, optionally in a
// database of their own) from versioned migrations embedded in the binary:
//
//	<prefix>workflows       the queue entry and the workflow's state, one row per workflow;
//	                        unique (name, key), indexes on (name, free_at) and free_at
//	                        (claiming), run_at (due listings, a claim's read-back), the flow
//	                        indexes (below), on (parent_step_id, state) (branch
//	                        children) and on finished_at (cleanup); tags as a JSON object
//	<prefix>steps           step records, unique by (workflow_id, name), clustered by workflow
//	<prefix>errors          error records, clustered by workflow
//	<prefix>messages        mailboxes, clustered by workflow; unique (workflow_id, msg_key)
//	                        for keyed messages, index (workflow_id, topic, consumed, id) for
//	                        the next message of a topic
//	<prefix>flows           the stored flows (storage.Flow) by key, with each one's rate
//	                        window (a JSON array of claim times, kept while in the window)
//	<prefix>flow_names      every (workflow name, flow key) pair a workflow was created with
//	<prefix>schema_version  the migrations applied
//
// A workflow's flow key is the flow column of its row. MySQL has no partial indexes, so the
// due rows are split between indexes by stored generated columns, NULL where a row does not
// belong: free_at (run_at of rows without a flow; the indexes (name, free_at) and free_at
// that claims walk), flow_at (run_at of rows with a flow; the index (flow, name, flow_at),
// walked per pair) and running_until (lease_until of running rows with a flow; the index
// (flow, running_until) that counts a flow's live leases). A store that uses no flows keeps
// NULL in the last two, so its rows never move in their indexes.
//
// Tags are a JSON column (LONGTEXT with a JSON_VALID check on MariaDB, native JSON on MySQL);
// a ListWorkflows filter on tags is one JSON_CONTAINS and may scan.
//
// All tables are InnoDB. Names, keys and other strings are VARBINARY, so they compare byte
// for byte (case, '$' and trailing spaces are significant, which MySQL 8's PAD SPACE
// utf8mb4_bin collation would not give) and their lengths are the contract's byte limits.
// Times are DATETIME(6) in UTC: a time passed in comes back truncated to the microsecond.
// Leases run by the server's clock: a lease's expiry is UTC_TIMESTAMP(6) plus the TTL, set and
// checked by the statements that claim, fence and heartbeat, never a time a worker passes.
// DATETIME holds the years 1000 to 9999; the contract admits only storage.MinTime to
// storage.MaxTime (1678 to 2261), the same on every backend.
//
// # Connection settings
//
// The backend sends times as text and reads them from text or time.Time, so parseTime and
// loc may be set either way, and the session time_zone does not matter. Recommended DSN
// parameters:
//
//	user:password@tcp(host:3306)/app?parseTime=true&interpolateParams=true&maxAllowedPacket=0
//
// interpolateParams=true makes each statement one round trip (without it, the driver
// prepares, executes and closes every statement with arguments; everything still works).
// maxAllowedPacket=0 lets the driver learn the server's max_allowed_packet, so a statement
// too large to interpolate is sent as a prepared statement instead of being refused. The
// server's max_allowed_packet must hold the largest payload (storage.MaxPayload, 4 MiB) with
// escaping: the defaults (16 MiB on MariaDB, 64 MiB on MySQL) do. Autocommit must be on (the
// default) and, with binary logging, binlog_format ROW or MIXED: SKIP LOCKED is unsafe for
// statement-based replication. Both REPEATABLE READ (the default) and READ COMMITTED work:
// the backend relies on locking reads, never on a snapshot spanning statements.
//
// # Statements per unit
//
// Every unit of the contract is a fixed number of statements, however many records it
// carries (multi-row statements are split only when one would exceed the server's packet
// or placeholder limits, which ordinary batches never do):
//
//	Load                   1 query: the workflow row and its step rows in one UNION ALL
//	GetWorkflow, Find...   1 query
//	CreateWorkflow         1 INSERT (+1 SELECT when the name and key exist; +1 INSERT
//	                       IGNORE of its (name, flow key) pair the first time the store
//	                       meets the pair, also in CreateWorkflows and SpawnBatch)
//	CreateWorkflows        1 transaction: one multi-row INSERT IGNORE tagging its rows with
//	                       the call's nonce, one SELECT ... LOCK IN SHARE MODE of the batch
//	Claim                  1 UPDATE (+1 SELECT when it claimed something), no transaction;
//	                       when a flow with a limit governs workflows of its names, 1
//	                       transaction: SELECT ... FOR UPDATE of those flows, one query of
//	                       the clock and their live leases, one SELECT of the candidates,
//	                       one UPDATE leasing them, one UPDATE of the rate windows, one
//	                       SELECT of the leased rows (the last three when it took any)
//	PutFlow                1 transaction: SELECT ... FOR UPDATE of the key, one UPDATE or
//	                       INSERT (+1 COUNT of the flows for a new key)
//	DeleteFlow             1 DELETE
//	ListFlows              1 transaction: the flows with their names, one query of capped
//	                       counts (per flow its live leases, per name its due rows)
//	SaveSteps, FinishRun   1 transaction: SELECT ... FOR UPDATE (the fence), one multi-row
//	                       upsert of the steps, one UPDATE of the workflow row, one
//	                       multi-row INSERT of the error records (each only when needed)
//	Heartbeat, Release     1 transaction: the fence and one UPDATE
//	SpawnBatch             1 transaction: the fence, the step upsert, one multi-row
//	                       INSERT IGNORE of the children, one UPDATE of the parent (+1
//	                       SELECT of the branch step's ID in the batch that records it,
//	                       +1 SELECT of what holds the skipped keys when any was skipped)
//	CountChildren          1 query over the (parent_step_id, state) index, stopped by LIMIT
//	WakeMergeWaiters       1 query over the (parent_step_id, state) index, one probe per step
//	                       and state (+1 UPDATE of the parents it found to wake)
//	Wake, Cancel           1 UPDATE (+1 SELECT when it changed nothing, to say why)
//	Retry                  1 transaction: SELECT ... FOR UPDATE, the step upsert, one UPDATE
//	SendMessage            1 transaction: SELECT ... FOR UPDATE of the workflow, one INSERT
//	                       IGNORE of the message (+1 UPDATE, the wake, when the workflow
//	                       runs or waits on the topic; +1 SELECT of the stored message when
//	                       the key was taken)
//	ConsumeMessage         1 transaction shaped like SaveSteps: the fence, one SELECT ... FOR
//	                       UPDATE of the next message (an index seek), one step upsert (the
//	                       commit's steps and the consuming step), the error records, one
//	                       UPDATE of the message (when there was one), one UPDATE of the
//	                       workflow row
//	ListWorkflows, ListErrors   1 statement (a key prefix: a byte range of the (name, key)
//	                       index, its matches sorted by id)
//	CountStates            1 query: the newest Sample+1 rows by primary key, grouped (with
//	                       a name, the primary key walked backwards past other names)
//	BranchCounts           1 query: a capped count per state and the newest final children
//	                       per final state, each a range of the (parent_step_id, state) index
//	Backlog                1 query: the BacklogProbe+1 oldest due rows of the run_at index,
//	                       counted, and the expired leases among them by primary key
//	DeleteFinished         1 transaction: SELECT the batch FOR UPDATE SKIP LOCKED, DELETE at
//	                       most the step budget of its steps, DELETE its workflows left
//	                       without steps (error records and messages cascade)
//
// MySQL has no UPDATE ... RETURNING, so a claim cannot be one statement as on PostgreSQL.
// It is one UPDATE that picks the due rows in a derived table (ORDER BY run_at LIMIT k FOR
// UPDATE SKIP LOCKED), leases them and tags them with a random nonce, and one SELECT of the
// rows with that nonce through the run_at index: two statements and two round trips for any
// batch size, and one when nothing is due. The nonce also lets a claim whose connection broke
// mid-UPDATE read back what it claimed instead of claiming twice. The rows are picked from
// each claimed name's range of the (name, free_at) index and merged by run_at: InnoDB keeps
// the lock of every row a locking read passes, even one its WHERE rejects, so a claim that
// walked past other names' due rows would hide them from their own workers until it ends.
//
// # Flow control
//
// A claim must know which flows are relevant before it picks rows: the (name, flow key) pairs
// of its names, to walk each pair's range of (flow, name, flow_at), and whether any of their
// flows has a limit. The store keeps both in a small cache, loaded by Migrate and reloaded by
// Claim at most once a second, one query. The cache only chooses the way a claim runs; the
// statements read the flows table itself. Without a limited flow in play the claim is the
// UPDATE above, its pairs' picks merged by their flow's priority (read from the flows table
// in the statement), and it refuses any row whose key the flows table limits at that moment,
// reading the flows row in share mode. With one, the claim is a transaction that locks the
// limited flows' rows in key order (SELECT ... FOR UPDATE), so the claims of a flow, in every
// process, follow one another: it counts the flow's live leases with a read whose snapshot
// is taken after the locks, takes at most the room storage.FlowCapacity leaves, and writes
// the rate window back before it commits (see Store.Claim). A cache a second old can delay
// the first claims of a pair another process created, or keep claims of a flow another
// process limited off the fast path until the reload; it never lets a claim exceed a limit.
//
// Every write made under a lease (Heartbeat, SaveSteps, FinishRun, Release, SpawnBatch)
// first locks the workflow row with SELECT ... FOR UPDATE, which also reads the server's
// UTC_TIMESTAMP(6), and checks the token, the state and the expiry by that clock in the same
// transaction, so a refused write changes nothing. A lock held from the fence to COMMIT keeps
// claims off the row meanwhile, whatever happens to the clock.
//
// # Failures
//
// Deadlocks, lock wait timeouts and connections lost before COMMIT are retried inside the
// backend, a few times with a short jittered backoff, where the unit is a whole transaction
// or otherwise safe to repeat. Deadlocks get a larger budget: concurrent claims cause them
// by design (see Store.Claim), and the server rolled the victim back. A COMMIT whose reply is lost, and other errors, are returned
// wrapped. database/sql reconnects by itself, so a database restart costs the calls made
// while it is down, and nothing after.
//
// MySQL cannot push wake-ups between processes: the store does not implement
// storage.Notifier, and workers poll (with backoff) for work started elsewhere.
package mysql
