package mysql

import (
	"fmt"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
)

// queries holds the fixed SQL of the store with its table names filled in. Statements whose
// shape depends on the request (multi-row inserts, IN lists) are built where they are used,
// from the same table names, always with parameters for values.
type queries struct {
	insertWorkflow                             string
	getWorkflow                                string
	findWorkflow                               string
	load                                       string
	claimed                                    string
	fence                                      string
	fenceBranch                                string
	heartbeat                                  string
	release                                    string
	wake                                       string
	stateOf                                    string
	cancel                                     string
	lockWorkflow                               string
	retry                                      string
	branchID                                   string
	listErrors                                 string
	deleteFinished, deleteSteps, deleteEmptied string
	lockForMessage                             string
	insertMessage                              string
	messageByKey                               string
	nextMessage                                string
	consumeMessage                             string
	countStates, countStatesOf                 string
	branchCounts                               string
	backlog                                    string
	loadFlows                                  string
	claimedByPriority                          string
}

func newQueries(r *strings.Replacer) queries {
	return queries{
		insertWorkflow: r.Replace(`INSERT INTO {{workflows}}
    (name, ` + "`key`" + `, input, state, run_at, trace_context, parent_step_id, tags, flow, created_at, updated_at)
    VALUES (?, ?, ?, 'idle', ` + ts + `, ?, ?, ` + tagsSQL + `, ?, ` + ts + `, ` + ts + `)`),

		getWorkflow:  r.Replace(`SELECT ` + workflowColumns + ` FROM {{workflows}} WHERE id = ?`),
		findWorkflow: r.Replace(`SELECT ` + workflowColumns + ` FROM {{workflows}} WHERE name = ? AND ` + "`key`" + ` = ?`),

		// The workflow row and its step rows in one result: kind 0 carries the workflow
		// columns, kind 1 the step columns, the rest NULL. Steps are sorted by ID in Go, so
		// the server streams the union without a sort; the steps table is clustered by
		// (workflow_id, id), so they are one range read.
		load: r.Replace(`SELECT 0 AS kind, ` + workflowColumns + `, ` + nulls(stepColumnCount) + `
    FROM {{workflows}} WHERE id = ?
UNION ALL
SELECT 1, ` + nulls(workflowColumnCount) + `, ` + stepColumns + `
    FROM {{steps}} WHERE workflow_id = ?`),

		// The rows one Claim took, found by the run_at it gave them (the caller's now plus the
		// TTL: the runnable index) and its nonce, in the run_at order they were claimed in.
		claimed: r.Replace(`SELECT ` + workflowColumns + ` FROM {{workflows}}
    WHERE run_at = ` + ts + ` AND claim_nonce = ? ORDER BY claim_run_at, id`),

		// The fence: lock the workflow row for the rest of the transaction and read its lease,
		// with the server's clock (see storeNow) read by the same statement.
		fence: r.Replace(`SELECT state, lease_owner, lease_token, lease_until, wake_at, ` + storeNow + `
    FROM {{workflows}} WHERE id = ? FOR UPDATE`),
		// The fence of SpawnBatch also finds the branch step, if it is recorded.
		fenceBranch: r.Replace(`SELECT w.state, w.lease_owner, w.lease_token, w.lease_until, w.wake_at, ` + storeNow + `, s.id
    FROM {{workflows}} AS w LEFT JOIN {{steps}} AS s ON s.workflow_id = w.id AND s.name = ?
    WHERE w.id = ? FOR UPDATE`),

		// Run after the fence, which holds the row's lock: the lease runs ttl microseconds
		// from the server's clock, run_at is the caller's now plus the TTL.
		heartbeat: r.Replace(`UPDATE {{workflows}} SET lease_until = ` + storeNow + ` + INTERVAL ? MICROSECOND, run_at = ` + ts + ` WHERE id = ?`),
		release: r.Replace(`UPDATE {{workflows}} SET state = 'idle', run_at = ` + ts + `, wake_at = NULL,
    lease_until = NULL, updated_at = ` + ts + ` WHERE id = ?`),

		// An idle row's run_at moves earlier, a running row remembers the earliest wake for its
		// finish (run_at stays where the claim or heartbeat put it). wake_count changes on
		// every match, so the affected-row count is the match count whatever the client flags.
		wake: r.Replace(`UPDATE {{workflows}} SET
    run_at = IF(state = 'idle' AND (run_at IS NULL OR run_at > ` + ts + `), ` + ts + `, run_at),
    wake_at = IF(state = 'running' AND (wake_at IS NULL OR wake_at > ` + ts + `), ` + ts + `, wake_at),
    wake_count = wake_count + 1
    WHERE id = ? AND state IN ('idle', 'running')`),
		stateOf: r.Replace(`SELECT state FROM {{workflows}} WHERE id = ?`),

		cancel: r.Replace(`UPDATE {{workflows}} SET ` + cancelSet + `
    WHERE id = ? AND state NOT IN ('completed', 'failed', 'cancelled')`),

		lockWorkflow: r.Replace(`SELECT ` + workflowColumns + ` FROM {{workflows}} WHERE id = ? FOR UPDATE`),
		retry: r.Replace(`UPDATE {{workflows}} SET state = 'idle', run_at = ` + ts + `, attempt = 0, wait_kind = '',
    wait_step = '', wait_data = NULL, wake_at = NULL, finished_at = NULL, updated_at = ` + ts + `
    WHERE id = ?`),

		branchID: r.Replace(`SELECT id FROM {{steps}} WHERE workflow_id = ? AND name = ?`),

		// One query answers both "which records" and "does the workflow exist": a workflow
		// without records gives one row of NULLs.
		listErrors: r.Replace(`SELECT e.id, w.id, e.step, e.attempt, e.type, e.message, e.` + "`values`" + `, e.created_at
    FROM {{workflows}} AS w LEFT JOIN {{errors}} AS e ON e.workflow_id = w.id
    WHERE w.id = ? ORDER BY e.id LIMIT ?`),

		// SendMessage's lock of the workflow row, reading what decides the send and the wake.
		lockForMessage: r.Replace(`SELECT state, wait_kind, wait_data FROM {{workflows}} WHERE id = ? FOR UPDATE`),
		// A message with a taken key is skipped (the unique (workflow_id, msg_key) index).
		insertMessage: r.Replace(`INSERT IGNORE INTO {{messages}} (workflow_id, topic, msg_key, payload, created_at)
    VALUES (?, ?, ?, ?, ` + ts + `)`),
		messageByKey: r.Replace(`SELECT ` + messageColumns + ` FROM {{messages}}
    WHERE workflow_id = ? AND msg_key = ? LOCK IN SHARE MODE`),
		// The next message of a topic, a seek of the next_message index, locked; with it the
		// stored completion time of the step it is to be consumed into, if that step exists.
		nextMessage: r.Replace(`SELECT m.id, m.msg_key, m.payload, m.created_at,
    (SELECT s.completed_at FROM {{steps}} AS s WHERE s.workflow_id = m.workflow_id AND s.name = ?)
    FROM {{messages}} AS m
    WHERE m.workflow_id = ? AND m.topic = ? AND m.consumed = FALSE
    ORDER BY m.id LIMIT 1 FOR UPDATE`),
		consumeMessage: r.Replace(`UPDATE {{messages}} SET consumed = TRUE, consumed_by = ?, consumed_at = ` + ts + `
    WHERE workflow_id = ? AND id = ?`),

		// CountStates: the newest sample+1 rows by primary key, walked backwards, grouped; the
		// caller drops the oldest row (the least MIN(id)) when sample+1 came back. With a name,
		// the optimizer either walks the primary key backwards skipping other names or reads
		// the name's range of an index and sorts it: see CountStates.
		countStates: r.Replace(`SELECT name, state, COUNT(*), MIN(id) FROM
    (SELECT id, name, state FROM {{workflows}} ORDER BY id DESC LIMIT ?) AS t
    GROUP BY name, state`),
		countStatesOf: r.Replace(`SELECT name, state, COUNT(*), MIN(id) FROM
    (SELECT id, name, state FROM {{workflows}} WHERE name = ? ORDER BY id DESC LIMIT ?) AS t
    GROUP BY name, state`),

		// BranchCounts: a capped count per state, each a range of the children index
		// (parent_step_id, state), and the newest final children of each final state, read
		// backwards along the same index (InnoDB appends the primary key, so a state's range
		// is in id order); the caller merges those by id. Kind 0 rows are counts, kind 1 rows
		// finish times.
		branchCounts: r.Replace(branchCountsSQL),

		// Backlog: the oldest BacklogProbe+1 due rows of the runnable index, numbered; one
		// row of counts over the first BacklogProbe of them (kind 0), then the expired leases
		// among those, whole, oldest run_at first (kind 1), each reached by primary key from
		// the numbered rows (STRAIGHT_JOIN: an IN subquery let the optimizer scan the table).
		// Lease expiry is judged by the server's clock, as Claim judges it, read once for the
		// statement.
		backlog: r.Replace(`WITH p AS (SELECT id, state, run_at, lease_until, ROW_NUMBER() OVER (ORDER BY run_at, id) AS rn
    FROM (SELECT id, state, run_at, lease_until FROM {{workflows}} FORCE INDEX (runnable)
        WHERE run_at <= ` + ts + ` ORDER BY run_at, id LIMIT ?) AS d)
SELECT 0 AS kind, COUNT(*), COALESCE(SUM(rn <= ? AND ` + runnableSQL + `), 0),
    MIN(IF(rn <= ? AND ` + runnableSQL + `, run_at, NULL)), ` + nulls(workflowColumnCount) + ` FROM p
UNION ALL
(SELECT 1, NULL, NULL, NULL, ` + qualified("w", workflowColumns) + `
    FROM p STRAIGHT_JOIN {{workflows}} AS w ON w.id = p.id
    WHERE p.rn <= ? AND ` + expiredIn("p.") + `
    ORDER BY p.run_at, p.id LIMIT ?)`),

		// The flow cache: every (name, flow key) pair (kind 0), then every stored flow (kind 1).
		loadFlows: r.Replace("SELECT 0, name, flow, 0, 0, 0, 0 FROM {{flow_names}}" +
			" UNION ALL SELECT 1, `key`, NULL, priority, concurrency, rate, per_us FROM {{flows}}"),
		// claimed, for a claim that took workflows with a flow: in flow priority order first.
		claimedByPriority: r.Replace(`SELECT ` + qualified("w", workflowColumns) + ` FROM {{workflows}} AS w
    LEFT JOIN {{flows}} AS f ON f.` + "`key`" + ` = w.flow
    WHERE w.run_at = ` + ts + ` AND w.claim_nonce = ? ORDER BY COALESCE(f.priority, 0) DESC, w.claim_run_at, w.id`),

		// Steps, error records and messages go with their workflow (ON DELETE CASCADE).
		// A cleanup's batch: locked for the transaction, skipping rows another cleanup holds.
		// The state list is appended by the caller (one placeholder per state).
		deleteFinished: r.Replace(`SELECT id FROM {{workflows}}
    WHERE finished_at < ` + ts + ` AND state IN (%s)
    ORDER BY finished_at, id LIMIT ? FOR UPDATE SKIP LOCKED`),
		// At most the step budget of the batch's step rows (IDs appended by the caller).
		deleteSteps: r.Replace(`DELETE FROM {{steps}} WHERE workflow_id IN (%s) LIMIT ?`),
		// The batch's workflows left without steps; their errors cascade.
		deleteEmptied: r.Replace(`DELETE FROM {{workflows}} WHERE id IN (%s)
    AND NOT EXISTS (SELECT 1 FROM {{steps}} s WHERE s.workflow_id = {{workflows}}.id)`),
	}
}

// storeNow is the server's clock, by which leases expire: UTC, to the microsecond the
// DATETIME(6) columns keep, whatever the session's time_zone. Like NOW(), it is read once
// when a statement starts, so every use within one statement sees the same instant.
const storeNow = "UTC_TIMESTAMP(6)"

// expiredSQL is the condition that a row holds a lease that ran out by the server's clock;
// runnableSQL, that a due row may be claimed (idle, or such a lease).
const (
	expiredSQL  = "(state = 'running' AND lease_until <= " + storeNow + ")"
	runnableSQL = "(state = 'idle' OR " + expiredSQL + ")"
)

// expiredIn is expiredSQL for the columns of alias (with its dot).
func expiredIn(alias string) string {
	return "(" + alias + "state = 'running' AND " + alias + "lease_until <= " + storeNow + ")"
}

// qualified prefixes each column of the comma-separated list cols with alias.
func qualified(alias, cols string) string {
	parts := strings.Split(cols, ", ")
	for i, c := range parts {
		parts[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// branchCountsSQL is the BranchCounts query: one capped count per state of storage.States,
// then the newest final children of each final state. Its parameters are listed by
// branchCountsArgs.
var branchCountsSQL = func() string {
	var b strings.Builder
	for i, st := range storage.States {
		if i > 0 {
			b.WriteString("\nUNION ALL\n")
		}
		fmt.Fprintf(&b, "SELECT 0 AS kind, '%s' AS state, COUNT(*) AS n, NULL AS finished_at FROM "+
			"(SELECT 1 FROM {{workflows}} FORCE INDEX (children) WHERE parent_step_id = ? AND state = '%s' LIMIT ?) AS c%d",
			st, st, i)
	}
	for _, st := range storage.States {
		if st.Final() {
			fmt.Fprintf(&b, "\nUNION ALL\n(SELECT 1, NULL, id, finished_at FROM {{workflows}} FORCE INDEX (children)"+
				" WHERE parent_step_id = ? AND state = '%s' ORDER BY id DESC LIMIT ?)", st)
		}
	}
	return b.String()
}()

// nulls is n NULL columns, to pad one side of a UNION.
func nulls(n int) string {
	return strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
}

// rowsSQL is n copies of the parenthesised row template, comma-separated: the VALUES list of
// a multi-row insert.
func rowsSQL(n int, row string) string {
	var b strings.Builder
	b.Grow(n * (len(row) + 3))
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		b.WriteString(row)
		b.WriteByte(')')
	}
	return b.String()
}

// placeholders is "?, ?, ..." n times, for IN lists.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// Multi-row statements are split only when one would be too big for the server: more
// placeholders than a prepared statement takes (when the driver does not interpolate), or more
// payload than fits comfortably in max_allowed_packet (16 MiB by default on MariaDB, and
// escaping can double binary data). Ordinary batches are one statement.
const (
	maxPlaceholders    = 65535
	maxStatementBytes  = 4 << 20
	rowOverheadBytes   = 64
	maxRowsPerChunkCap = 5000
)

// chunks splits n rows of cols columns into consecutive [start, end) ranges, each within
// the statement limits; size returns the payload bytes of row i. A row larger than the byte
// budget gets a statement of its own.
func chunks(n, cols int, size func(i int) int) [][2]int {
	maxRows := min(maxPlaceholders/cols, maxRowsPerChunkCap)
	var out [][2]int
	start, bytes := 0, 0
	for i := range n {
		b := size(i) + rowOverheadBytes
		if i > start && (i-start >= maxRows || bytes+b > maxStatementBytes) {
			out = append(out, [2]int{start, i})
			start, bytes = i, 0
		}
		bytes += b
	}
	if n > start {
		out = append(out, [2]int{start, n})
	}
	return out
}
