package postgres

import (
	"strings"
)

// The SQL of the store. Each unit of the contract is one statement: data-modifying CTEs let
// one statement check a lease, write the workflow row, upsert step records from arrays,
// append error records and notify listeners, all in the statement's implicit transaction.
// Values are always bound parameters (pgx named arguments); only the validated table names
// and the channel name are spliced in, once, when the store is built.

// workflowColumns are the columns scanned into a storage.Workflow, in workflowRow.dest's order.
var workflowColumns = []string{
	"id", "name", "key", "input", "output", "state", `"values"`, "run_at",
	"wait_kind", "wait_step", "wait_data", "lease_owner", "lease_until", "lease_token",
	"attempt", "parent_step_id", "trace_context", "last_error", "created_at", "updated_at",
	"finished_at", "tags", "flow",
}

// stepColumns are the columns scanned into a storage.Step, in stepRow.dest's order.
var stepColumns = []string{
	"workflow_id", "id", "name", "state", "attempts", "result", "meta", "last_error",
	"created_at", "updated_at", "completed_at",
}

// errorColumns are the columns scanned into a storage.ErrorRecord, in ListErrors' order.
var errorColumns = []string{
	"id", "workflow_id", "step", "attempt", "type", "message", `"values"`, "created_at",
}

func columns(cols []string, alias string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = alias + c
	}
	return strings.Join(out, ", ")
}

// fence is the condition under which a lease may write: its token is the stored one, the
// workflow is running and the stored lease has not expired by the database's clock.
//
// The database's clock is now(), the start of the statement's transaction, which for these
// single-statement units is the statement's start, rather than clock_timestamp(), which moves
// while the statement runs. now() is one instant for the whole statement, so the fence, the
// expiry a claim or heartbeat sets and every row of a batch claim agree on it, and it is
// stable, so the planner treats it as a constant. It lags real time only while the
// statement waits for a row lock; a write that waited may then pass the fence of a lease that
// ran out during the wait, but no claim can have taken the row meanwhile (the writer was
// queued on its lock, and a claim that got in first changed the token, which the re-check
// after the wait sees), so exclusivity holds, and the expiry a waiting heartbeat sets is only
// shorter.
const fence = `id = @id AND lease_token = @token AND state = 'running' AND lease_until > now()`

// upsertSteps inserts or replaces the step records in the arrays by (workflow, name), for the
// workflow whose id the CTE "f" returns (no row: nothing is written). A replaced record keeps
// its ID and CreatedAt; CompletedAt defaults to the earlier of the stored one and now for a
// completed step (the stored one is looked up by key, only for such a step). Rows go in
// array order, so new records get IDs in the order given.
const upsertSteps = `
	st AS (
		INSERT INTO {{steps}} AS s (workflow_id, name, state, attempts, result, meta, last_error, created_at, updated_at, completed_at)
		SELECT f.id, u.name, u.state, u.attempts, u.result, u.meta, u.last_error,
			coalesce(u.created_at, @now::timestamptz), @now::timestamptz,
			CASE WHEN u.completed_at IS NOT NULL THEN u.completed_at
			     WHEN u.state = 'completed' THEN least(@now::timestamptz,
			         (SELECT e.completed_at FROM {{steps}} e WHERE e.workflow_id = f.id AND e.name = u.name)) END
		FROM f
		CROSS JOIN unnest(@step_names::text[], @step_states::text[], @step_attempts::int[],
			@step_results::bytea[], @step_metas::bytea[], @step_errors::text[],
			@step_created::timestamptz[], @step_completed::timestamptz[])
			WITH ORDINALITY AS u(name, state, attempts, result, meta, last_error, created_at, completed_at, ord)
		ORDER BY u.ord
		ON CONFLICT (workflow_id, name) DO UPDATE SET
			state = excluded.state, attempts = excluded.attempts, result = excluded.result,
			meta = excluded.meta, last_error = excluded.last_error, updated_at = excluded.updated_at,
			completed_at = excluded.completed_at
		RETURNING s.id, s.name
	)`

// insertErrors appends the error records in the arrays to the workflow "f" returns.
const insertErrors = `
	er AS (
		INSERT INTO {{errors}} (workflow_id, step, attempt, type, message, "values", created_at)
		SELECT f.id, u.step, u.attempt, u.type, u.message, u.vals, coalesce(u.created_at, @now::timestamptz)
		FROM f
		CROSS JOIN unnest(@err_steps::text[], @err_attempts::int[], @err_types::text[],
			@err_messages::text[], @err_values::bytea[], @err_created::timestamptz[])
			WITH ORDINALITY AS u(step, attempt, type, message, vals, created_at, ord)
		ORDER BY u.ord
	)`

// insertFlowNames records the (flow, name) pairs of the workflows the CTE "ins" inserted, for
// those with a flow key, skipping pairs already recorded (a data-modifying CTE runs to
// completion whether or not the statement reads it). A pair a concurrent statement inserts
// makes this one wait for that statement's outcome, then skip it or insert it.
const insertFlowNames = `
fn AS (
	INSERT INTO {{flow_names}} (flow, name)
	SELECT DISTINCT ins.flow, ins.name FROM ins WHERE ins.flow IS NOT NULL
	ON CONFLICT DO NOTHING
)`

// queries is the SQL of one store, with its table names filled in.
type queries struct {
	create, get, find, load                  string
	claim, heartbeat, saveSteps, finishRun   string
	release, leaseState                      string
	fenceState                               string
	wake, retry, cancel                      string
	spawn, spawnConflict, countChildren      string
	listErrors, deleteFinished, listColumns  string
	deleteEmptied                            string
	wakeMergeWaiters                         string
	cancelChildren, branchSteps              string
	createBatch, sendMessage, consumeMessage string
	countStates, countStatesName, keyPrefix  string
	branchCounts, backlog                    string
	claimFast, lockFlows, claimLimited       string
	putFlow, deleteFlow, listFlows           string
}

func buildQueries(s *Store) queries {
	r := s.replacer()
	wcols := columns(workflowColumns, "")
	q := queries{
		// The insert returns nothing when the name and key exist; the second branch then
		// reads the stored row. A row inserted by a concurrent transaction that committed
		// after this statement's snapshot is invisible to both: the caller runs it again.
		create: `
WITH ins AS (
	INSERT INTO {{workflows}} (name, key, input, state, run_at, trace_context, tags, parent_step_id, flow, created_at, updated_at)
	VALUES (@name, @key, @input, 'idle', @run_at::timestamptz, @trace, nullif(@tags::text, '')::jsonb, @parent,
		nullif(@flow::text, ''), @now::timestamptz, @now::timestamptz)
	ON CONFLICT (name, key) DO NOTHING
	RETURNING ` + wcols + `
), n AS (
	SELECT pg_notify({{channel}}, '') FROM ins WHERE ins.run_at <= @now::timestamptz
),` + insertFlowNames + `
SELECT true, ` + columns(workflowColumns, "ins.") + ` FROM ins, (SELECT count(*) FROM n) AS notified
UNION ALL
SELECT false, ` + wcols + ` FROM {{workflows}}
WHERE name = @name AND key = @key AND NOT EXISTS (SELECT 1 FROM ins)`,

		get:  `SELECT ` + wcols + ` FROM {{workflows}} WHERE id = @id`,
		find: `SELECT ` + wcols + ` FROM {{workflows}} WHERE name = @name AND key = @key`,

		// The workflow row (kind 0) then its step rows (kind 1) in ID order: one query, one
		// snapshot. Each kind leaves the other's columns NULL.
		load: `
SELECT 0 AS kind, 0::bigint AS sort, ` + wcols + `, ` + nulls(len(stepColumns)) + `
FROM {{workflows}} WHERE id = @id
UNION ALL
SELECT 1, s.id, ` + nulls(len(workflowColumns)) + `, ` + columns(stepColumns, "s.") + `
FROM {{steps}} s WHERE s.workflow_id = @id
ORDER BY 1, 2`,

		heartbeat: `
UPDATE {{workflows}} SET lease_until = now() + @ttl::interval, run_at = @run_at::timestamptz
WHERE ` + fence,

		saveSteps: `
WITH f AS (
	UPDATE {{workflows}} SET
		"values" = coalesce(@values::bytea, "values"),
		last_error = coalesce(@last_error::text, last_error),
		updated_at = @now::timestamptz
	WHERE ` + fence + `
	RETURNING id
),` + upsertSteps + `,` + insertErrors + `
SELECT count(*) FROM f`,

		// For idle, run_at is the earlier of the run's own and a wake received during the
		// run (NULL is none: least ignores it). Listeners hear of a row runnable at once.
		finishRun: `
WITH f AS (
	UPDATE {{workflows}} SET
		state = @state::text, output = @output::bytea, attempt = @attempt::int,
		"values" = coalesce(@values::bytea, "values"),
		last_error = coalesce(@last_error::text, last_error),
		run_at = CASE WHEN @state::text = 'idle' THEN least(@run_at::timestamptz, wake_at,
			-- A run that suspends to receive a message already waiting (one that committed
			-- after the run looked) runs again at once: a safeguard beside the send's wake.
			CASE WHEN @wait_kind::text = 'message' AND EXISTS (
				SELECT 1 FROM {{messages}} mm WHERE mm.workflow_id = @id
					AND mm.topic = convert_from(@wait_data::bytea, 'UTF8') AND mm.consumed_at IS NULL)
			THEN @now::timestamptz END) END,
		wait_kind = @wait_kind::text, wait_step = @wait_step::text, wait_data = @wait_data::bytea,
		finished_at = CASE WHEN @state::text IN ('completed', 'failed') THEN @now::timestamptz ELSE finished_at END,
		wake_at = NULL, lease_until = NULL, updated_at = @now::timestamptz
	WHERE ` + fence + `
	RETURNING id, run_at
),` + upsertSteps + `,` + insertErrors + `,
n AS (
	SELECT pg_notify({{channel}}, '') FROM f WHERE f.run_at <= @now::timestamptz
)
SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM n)`,

		release: `
WITH f AS (
	UPDATE {{workflows}} SET
		state = 'idle', run_at = @now::timestamptz, wake_at = NULL, lease_until = NULL,
		updated_at = @now::timestamptz
	WHERE ` + fence + `
	RETURNING id
), n AS (
	SELECT pg_notify({{channel}}, '') FROM f
)
SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM n)`,

		// Read after a write matched no row, to say why.
		leaseState: `SELECT state, lease_token, lease_until FROM {{workflows}} WHERE id = @id`,
		// Read after a fenced write matched no row, with the lease's owner and the database's
		// clock, for storage.Fence to say why.
		fenceState: `SELECT state, lease_owner, lease_token, lease_until, now() FROM {{workflows}} WHERE id = @id`,

		wake: `
WITH u AS (
	UPDATE {{workflows}} SET
		run_at = CASE WHEN state = 'idle' THEN least(run_at, @at::timestamptz) ELSE run_at END,
		wake_at = CASE WHEN state = 'running' THEN least(wake_at, @at::timestamptz) ELSE wake_at END
	WHERE id = @id AND state IN ('idle', 'running')
	RETURNING state
), n AS (
	SELECT pg_notify({{channel}}, '') FROM u WHERE u.state = 'idle'
)
SELECT (SELECT count(*) FROM u), EXISTS (SELECT 1 FROM {{workflows}} WHERE id = @id), (SELECT count(*) FROM n)`,

		retry: `
WITH f AS (
	UPDATE {{workflows}} SET
		state = 'idle', run_at = @now::timestamptz, attempt = 0,
		wait_kind = '', wait_step = '', wait_data = NULL, wake_at = NULL, finished_at = NULL,
		updated_at = @now::timestamptz
	WHERE id = @id AND state IN ('stalled', 'failed')
	RETURNING ` + wcols + `
),` + upsertSteps + `,
n AS (
	SELECT pg_notify({{channel}}, '') FROM f
)
SELECT ` + columns(workflowColumns, "f.") + ` FROM f, (SELECT count(*) FROM n) AS notified`,

		cancel: `
WITH u AS (
	UPDATE {{workflows}} SET ` + cancelSet + `
	WHERE id = @id AND state NOT IN ('completed', 'failed', 'cancelled')
	RETURNING id
)
SELECT (SELECT count(*) FROM u), (SELECT state FROM {{workflows}} WHERE id = @id)`,

		// The fence also requires the branch step to be in the batch or stored, so a batch
		// naming an unknown branch writes nothing. Children are inserted in batch order,
		// skipping existing names and keys (and repeats within the batch). A skipped child
		// must already be a child of this branch step: the last column counts the distinct
		// names and keys (d) neither inserted (ch) nor found with this parent, and when any
		// is left it fails the statement, so none of its writes is kept. ON CONFLICT sees rows
		// committed after the statement's snapshot while the parent check does not, so a key
		// taken concurrently is counted as a conflict too, never skipped. A failing cast
		// raises the error because plain SQL has no RAISE; its text carries spawnConflictMark,
		// and it depends on the counts, so the planner cannot fold it into a constant. The
		// parent check runs only when some child was skipped (the CASE is evaluated in order).
		spawn: `
WITH f AS (
	UPDATE {{workflows}} SET updated_at = @now::timestamptz
	WHERE ` + fence + `
		AND (@branch::text = ANY(@step_names::text[])
			OR EXISTS (SELECT 1 FROM {{steps}} WHERE workflow_id = @id AND name = @branch::text))
	RETURNING id
),` + upsertSteps + `,
b AS (
	SELECT coalesce(
		(SELECT st.id FROM st WHERE st.name = @branch::text),
		(SELECT s.id FROM {{steps}} s WHERE s.workflow_id = f.id AND s.name = @branch::text)) AS id
	FROM f
), ch AS (
	INSERT INTO {{workflows}} (name, key, input, state, run_at, trace_context, tags, parent_step_id, flow, created_at, updated_at)
	SELECT u.name, u.key, u.input, 'idle', coalesce(u.run_at, @now::timestamptz), u.trace, nullif(u.tags, '')::jsonb, b.id,
		nullif(u.flow, ''), @now::timestamptz, @now::timestamptz
	FROM b
	CROSS JOIN unnest(@child_names::text[], @child_keys::text[], @child_inputs::bytea[],
		@child_traces::bytea[], @child_tags::text[], @child_run_at::timestamptz[], @child_flows::text[])
		WITH ORDINALITY AS u(name, key, input, trace, tags, run_at, flow, ord)
	ORDER BY u.ord
	ON CONFLICT (name, key) DO NOTHING
	RETURNING run_at, name, flow
), n AS (
	SELECT pg_notify({{channel}}, '') WHERE EXISTS (SELECT 1 FROM ch WHERE ch.run_at <= @now::timestamptz)
), fn AS (
	INSERT INTO {{flow_names}} (flow, name)
	SELECT DISTINCT ch.flow, ch.name FROM ch WHERE ch.flow IS NOT NULL
	ON CONFLICT DO NOTHING
), d AS (
	SELECT DISTINCT u.name, u.key FROM unnest(@child_names::text[], @child_keys::text[]) AS u(name, key)
)
SELECT b.id, i.n, (SELECT count(*) FROM n),
	CASE WHEN i.n >= (SELECT count(*) FROM d) THEN 0
	     WHEN i.n + (SELECT count(*) FROM d JOIN {{workflows}} w ON w.name = d.name AND w.key = d.key
	                 WHERE w.parent_step_id = b.id) >= (SELECT count(*) FROM d) THEN 0
	     ELSE ('` + spawnConflictMark + ` ' || ((SELECT count(*) FROM d) - i.n))::int END
FROM b, (SELECT count(*) AS n FROM ch) AS i`,

		// After a refused batch: the first child, in batch order, whose name and key another
		// parent step (or a root) holds, with the number of such children. The branch step is
		// -1 when it is not stored (the refused batch would have recorded it), so every
		// holder counts.
		spawnConflict: `
WITH d AS (
	SELECT u.name, u.key, min(u.ord) AS ord
	FROM unnest(@child_names::text[], @child_keys::text[]) WITH ORDINALITY AS u(name, key, ord)
	GROUP BY u.name, u.key
), br AS (
	SELECT coalesce((SELECT id FROM {{steps}} WHERE workflow_id = @id AND name = @branch::text), -1) AS id
)
SELECT w.id, w.name, w.key, coalesce(w.parent_step_id, 0), greatest(br.id, 0), count(*) OVER ()
FROM d JOIN {{workflows}} w ON w.name = d.name AND w.key = d.key
CROSS JOIN br
WHERE coalesce(w.parent_step_id, 0) <> br.id
ORDER BY d.ord
LIMIT 1`,

		// One index range per (step, state) pair, each read with equality on both leading
		// columns of the children index and stopped at the cap, and the outer LIMIT stops at
		// the cap overall. Written as a lateral join rather than "= ANY(...) AND = ANY(...)",
		// which a generic plan may answer by reading every child of the steps and filtering
		// on state. (No ORDER BY: it invites a walk of the primary key.) The pairs must be
		// distinct; the caller deduplicates.
		countChildren: `
SELECT count(*) FROM (
	SELECT 1
	FROM unnest(@step_ids::bigint[]) AS p(id)
	CROSS JOIN unnest(@states::text[]) AS st(state)
	CROSS JOIN LATERAL (
		SELECT 1 FROM {{workflows}} w
		WHERE w.parent_step_id = p.id AND w.state = st.state
		LIMIT @cap
	) AS c
	LIMIT @cap
) AS t`,

		// The outer row is the workflow, so no row means an unknown workflow; a workflow
		// without error records gives one all-NULL row. The lateral query reads the oldest
		// records in order from the (workflow_id, id) index and stops at the limit.
		listErrors: `
SELECT ` + columns(errorColumns, "e.") + `
FROM {{workflows}} w
LEFT JOIN LATERAL (
	SELECT * FROM {{errors}} WHERE workflow_id = w.id ORDER BY id LIMIT @limit
) AS e ON true
WHERE w.id = @id
ORDER BY e.id`,

		// Oldest first along the finished index; the ids go through an array so the delete
		// finds them by primary key under any plan. Rows another cleanup holds are skipped.
		// The first statement of a cleanup locks its batch (skipping rows another cleanup
		// holds) and deletes at most @budget of the batch's step rows; the second, in the same
		// transaction, deletes the batch's workflows left without steps (errors and messages cascade).
		deleteFinished: `
WITH batch AS (
	SELECT id FROM {{workflows}}
	WHERE finished_at < @before::timestamptz AND state = ANY(@states::text[])
	ORDER BY finished_at
	LIMIT @limit
	FOR UPDATE SKIP LOCKED
), gone AS (
	DELETE FROM {{steps}} WHERE id = ANY(ARRAY(
		SELECT id FROM {{steps}} WHERE workflow_id IN (SELECT id FROM batch) LIMIT @budget
	))
	RETURNING 1
)
SELECT ARRAY(SELECT id FROM batch), (SELECT count(*) FROM gone)`,
		deleteEmptied: `
DELETE FROM {{workflows}} w WHERE w.id = ANY(@ids::bigint[])
AND NOT EXISTS (SELECT 1 FROM {{steps}} s WHERE s.workflow_id = w.id)`,

		listColumns: `SELECT ` + wcols + ` FROM {{workflows}}`,
	}
	for _, p := range []*string{
		&q.create, &q.get, &q.find, &q.load, &q.heartbeat, &q.saveSteps, &q.finishRun,
		&q.release, &q.leaseState, &q.fenceState, &q.wake, &q.retry, &q.cancel, &q.spawn, &q.spawnConflict, &q.countChildren,
		&q.listErrors, &q.deleteFinished, &q.deleteEmptied, &q.listColumns,
	} {
		*p = r.Replace(*p)
	}
	q.wakeMergeWaiters = r.Replace(wakeMergeWaiters)
	q.cancelChildren, q.branchSteps = r.Replace(cancelChildren), r.Replace(branchSteps)
	cols := strings.NewReplacer(
		"{{insertFlowNames}}", insertFlowNames,
		"{{wcols}}", wcols,
		"{{ins.wcols}}", columns(workflowColumns, "ins."),
		"{{w.wcols}}", columns(workflowColumns, "w."),
		"{{mcols}}", columns(messageColumns, ""),
		"{{m.mcols}}", columns(messageColumns, "m."),
		"{{x.mcols}}", columns(messageColumns, "x."),
		"{{c.mcols}}", columns(messageColumns, "c."),
		"{{u.wcols}}", columns(workflowColumns, "u."),
		"{{nulls}}", nulls(len(workflowColumns)),
	)
	q.claim = r.Replace(cols.Replace(claimPlain))
	q.claimFast = r.Replace(cols.Replace(claimFast))
	q.lockFlows = r.Replace(lockFlows)
	q.claimLimited = r.Replace(cols.Replace(claimLimited))
	q.putFlow, q.deleteFlow, q.listFlows = r.Replace(putFlow), r.Replace(deleteFlow), r.Replace(listFlows)
	q.keyPrefix = r.Replace(keyPrefix)
	q.countStates = r.Replace(strings.ReplaceAll(countStates, "{{where}}", ""))
	q.countStatesName = r.Replace(strings.ReplaceAll(countStates, "{{where}}", "WHERE name = @name"))
	q.branchCounts = r.Replace(branchCounts)
	q.backlog = r.Replace(cols.Replace(strings.ReplaceAll(backlog, "{{nulls}}", nulls(len(workflowColumns)))))
	q.createBatch = r.Replace(cols.Replace(createBatch))
	q.sendMessage = r.Replace(cols.Replace(sendMessage))
	q.consumeMessage = r.Replace(cols.Replace(consumeMessage))
	return q
}

func nulls(n int) string {
	return strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
}

// The operator queries (storage.Inspector): each is one statement whose cost is bounded by
// its sample, cap or probe, not by the size of the table.

// keyPrefix is ListWorkflows' condition for ListFilter.KeyPrefix. The key's first
// characters must equal the prefix: equality is bytewise under a deterministic collation (a
// database's default collation is one), so LIKE's wildcards need no escaping. A range on
// key would be bytewise only under the C collation, so the (name, key) index serves the name
// alone and the prefix filters its entries; the IDs found go through an array, so the page
// is then read by primary key. Without the array the planner may walk the primary key in
// ID order and filter every row on name and prefix until the page is full, which reads the
// whole table when few keys match.
const keyPrefix = `id = ANY(ARRAY(
	SELECT id FROM {{workflows}}
	WHERE name = @name AND left(key, @prefix_len::int) = @key_prefix::text))`

// countStates counts the newest @limit workflows (of @name, where {{where}} says so) by name
// and state, walking the primary key backwards and stopping at the limit. The caller asks
// for one row more than the sample: if it came, the group holding the oldest ID (min(id))
// gave it, and the caller takes it off, so the statement both counts the sample exactly and
// tells whether older workflows exist.
const countStates = `
SELECT name, state, count(*), min(id) FROM (
	SELECT id, name, state FROM {{workflows}} {{where}}
	ORDER BY id DESC
	LIMIT @limit
) AS t
GROUP BY name, state`

// branchCounts is BranchCounts' statement: for each state of @states (kind 0), the count of
// the branch's children in it, one range of the children index with equality on both
// leading columns, stopped at @cap (the ORDER BY, the index's own order within the range,
// keeps the planner from a bitmap scan, which would read the whole range); then (kind 1) the IDs and finish times of the @recent
// final children (@final states) with the highest IDs, each final state's newest read
// backwards from its range of the children index, merged. The states come from arrays
// through lateral joins, as in countChildren: with a literal state the planner, knowing
// that state common, may walk the table for it instead. Rows come in no particular order.
const branchCounts = `
SELECT 0 AS kind, st.state, c.n, NULL::bigint AS id, NULL::timestamptz AS finished_at
FROM unnest(@states::text[]) AS st(state)
CROSS JOIN LATERAL (
	SELECT count(*) AS n FROM (
		SELECT 1 FROM {{workflows}} w WHERE w.parent_step_id = @step AND w.state = st.state
		ORDER BY w.id LIMIT @cap
	) AS x
) AS c
UNION ALL
SELECT 1, NULL, NULL, r.id, r.finished_at FROM (
	SELECT f.id, f.finished_at
	FROM unnest(@final::text[]) AS fs(state)
	CROSS JOIN LATERAL (
		SELECT w.id, w.finished_at FROM {{workflows}} w
		WHERE w.parent_step_id = @step AND w.state = fs.state
		ORDER BY w.id DESC LIMIT @recent
	) AS f
	ORDER BY f.id DESC LIMIT @recent
) AS r`

// backlog is Backlog's statement. "p" walks the runnable index in (run_at, id) order from
// the oldest row due by the caller's clock (@now), and the governed index the same way for
// each (flow, name) pair, each stopping after @probe_rows (the probe and one more, which
// tells whether the probe was full); it numbers the first @probe_rows of them all, sorting
// only the rows those walks read. "r" keeps
// the rows of the probe proper that are runnable: idle, or running with a lease expired by
// the database's clock (now(), as Claim judges it). Row kind 0 carries the counts and the
// earliest RunAt and comes first; the rows of kind 1 are the running ones among them, at
// most @limit of the oldest, read by primary key (the caller puts them in RunAt order).
var backlog = `
WITH p AS (
	SELECT id, run_at, state, lease_until, row_number() OVER (ORDER BY run_at, id) AS rn
	FROM (
		(SELECT id, run_at, state, lease_until FROM {{workflows}}
		WHERE state IN ('idle', 'running') AND run_at IS NOT NULL AND flow IS NULL AND run_at <= @now::timestamptz
		ORDER BY run_at, id
		LIMIT @probe_rows)
		UNION ALL
		SELECT g.id, g.run_at, g.state, g.lease_until
		FROM {{flow_names}} fn
		CROSS JOIN LATERAL (
			SELECT w.id, w.run_at, w.state, w.lease_until FROM {{workflows}} w
			WHERE w.flow = fn.flow AND w.name = fn.name AND ` + govRunnable + ` AND w.run_at <= @now::timestamptz
			ORDER BY w.run_at, w.id
			LIMIT @probe_rows
		) AS g
	) AS due
	ORDER BY run_at, id
	LIMIT @probe_rows
), r AS (
	SELECT id, run_at, rn, state = 'running' AS expired FROM p
	WHERE rn <= @probe AND (state = 'idle' OR lease_until <= now())
)
SELECT 0 AS kind, (SELECT count(*) FROM p), (SELECT count(*) FROM r), (SELECT min(run_at) FROM r),
	{{nulls}}
UNION ALL
SELECT 1, NULL, NULL, NULL, {{wcols}} FROM {{workflows}}
WHERE id = ANY(ARRAY(SELECT id FROM r WHERE expired ORDER BY rn LIMIT @limit))
ORDER BY 1`
