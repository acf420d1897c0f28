package postgres

// The SQL of bulk creation and of mailboxes.

// messageColumns are the columns scanned into a storage.Message, in messageRow.dest's order.
var messageColumns = []string{
	"id", "workflow_id", "topic", "msg_key", "payload", "created_at", "consumed_by", "consumed_at",
}

// createBatch is CreateWorkflows' statement: one INSERT ... SELECT FROM unnest(...) ON
// CONFLICT DO NOTHING over the whole batch, in batch order (so new rows get IDs in that
// order), then every row of the batch: the inserted ones from RETURNING and the existing ones
// read by (name, key) in the statement's snapshot, each with its 1-based position in the
// batch (one probe of the unique index per workflow: the LIMIT keeps the planner from
// turning a large batch into a merge join with a walk of the whole index). A row a
// concurrent transaction committed after that snapshot is skipped by the
// insert (ON CONFLICT sees it) but invisible to the read, so its position is missing from
// the result; the caller reads those positions again with a new statement. Listeners hear
// of a new workflow due by its own Now.
const createBatch = `
WITH u AS (
	SELECT * FROM unnest(@names::text[], @keys::text[], @inputs::bytea[], @traces::bytea[], @tags::text[],
		@parents::bigint[], @run_at::timestamptz[], @nows::timestamptz[], @flows::text[])
		WITH ORDINALITY AS u(name, key, input, trace, tags, parent, run_at, now, flow, ord)
), ins AS (
	INSERT INTO {{workflows}} (name, key, input, state, run_at, trace_context, tags, parent_step_id, flow, created_at, updated_at)
	SELECT u.name, u.key, u.input, 'idle', coalesce(u.run_at, u.now), u.trace, nullif(u.tags, '')::jsonb,
		nullif(u.parent, 0), nullif(u.flow, ''), u.now, u.now
	FROM u
	ORDER BY u.ord
	ON CONFLICT (name, key) DO NOTHING
	RETURNING {{wcols}}
), n AS (
	SELECT pg_notify({{channel}}, '') WHERE EXISTS (SELECT 1 FROM ins WHERE ins.run_at <= ins.created_at)
),{{insertFlowNames}}
SELECT u.ord, true, {{ins.wcols}}
FROM ins JOIN u ON u.name = ins.name AND u.key = ins.key
CROSS JOIN (SELECT count(*) FROM n) AS notified
UNION ALL
SELECT u.ord, false, {{w.wcols}}
FROM u CROSS JOIN LATERAL (
	SELECT * FROM {{workflows}} x WHERE x.name = u.name AND x.key = u.key LIMIT 1
) AS w`

// sendMessage is SendMessage's statement.
//
// "w" locks the workflow row (FOR UPDATE), so a Cancel or FinishRun either committed before
// and is seen (the lock returns the newest row version), or waits until the message is
// stored; its state decides whether a message may be stored. "old" is the message already
// stored under the key (none for a keyless message), read in the statement's snapshot. The
// insert runs only for a workflow that is not final and a key not found; the message wakes
// the workflow as Wake does (an idle one waiting on the topic: run_at moves earlier; a
// running one remembers the wake) and listeners hear of an idle one woken.
//
// The snapshot can miss a message committed after it while the statement waited for the
// lock: the insert then finds the key taken (ON CONFLICT sees it) and stores nothing, and if
// the workflow went final meanwhile, the refusal may hide the stored message. "moved" says
// the row version locked is not the one in the snapshot; the caller runs the statement again
// in both cases, with a snapshot that sees what committed first.
const sendMessage = `
WITH w AS MATERIALIZED (
	SELECT id, state, xmin AS version FROM {{workflows}} WHERE id = @id FOR UPDATE
), old AS (
	SELECT {{mcols}} FROM {{messages}} WHERE workflow_id = @id AND msg_key = @key::text
), ins AS (
	INSERT INTO {{messages}} (workflow_id, topic, msg_key, payload, created_at)
	SELECT w.id, @topic::text, @key::text, @payload::bytea, @now::timestamptz
	FROM w
	WHERE w.state NOT IN ('completed', 'failed', 'cancelled') AND NOT EXISTS (SELECT 1 FROM old)
	ON CONFLICT (workflow_id, msg_key) DO NOTHING
	RETURNING {{mcols}}
), u AS (
	UPDATE {{workflows}} SET
		run_at = CASE WHEN state = 'idle' THEN least(run_at, @now::timestamptz) ELSE run_at END,
		wake_at = CASE WHEN state = 'running' THEN least(wake_at, @now::timestamptz) ELSE wake_at END
	WHERE id = @id AND EXISTS (SELECT 1 FROM ins)
		AND (state = 'running' OR (state = 'idle' AND wait_kind = @wait_kind::text AND wait_data = @topic_data::bytea))
	RETURNING state
), n AS (
	SELECT pg_notify({{channel}}, '') FROM u WHERE u.state = 'idle'
)
SELECT w.state, w.version IS DISTINCT FROM (SELECT xmin FROM {{workflows}} WHERE id = @id) AS moved,
	m.created, {{m.mcols}}, (SELECT count(*) FROM u), (SELECT count(*) FROM n)
FROM (SELECT 1) AS one
LEFT JOIN w ON true
LEFT JOIN (SELECT true AS created, * FROM ins UNION ALL SELECT false, * FROM old) AS m ON true`

// consumeMessage is ConsumeMessage's statement: SaveSteps' fenced update of the workflow
// row with the commit's step and error records, then, under the same fence, the oldest
// unconsumed message of the topic (one seek of the messages_next index), marked consumed,
// and the step record it is consumed into, upserted as completed with the payload as
// result. The fenced update holds the workflow row's lock, so no other write of the lease
// runs meanwhile; the message is locked too and re-checked after a wait, so a message is
// consumed once even by two calls of one lease at once. The consumed step is inserted after
// the commit's steps (it waits for "st"), so new records get IDs in that order.
const consumeMessage = `
WITH f AS (
	UPDATE {{workflows}} SET
		"values" = coalesce(@values::bytea, "values"),
		last_error = coalesce(@last_error::text, last_error),
		updated_at = @now::timestamptz
	WHERE ` + fence + `
	RETURNING id
),` + upsertSteps + `,` + insertErrors + `,
m AS (
	SELECT id FROM {{messages}}
	WHERE workflow_id = @id AND topic = @topic::text AND consumed_at IS NULL AND EXISTS (SELECT 1 FROM f)
	ORDER BY id
	LIMIT 1
	FOR UPDATE
), c AS (
	UPDATE {{messages}} AS x SET consumed_by = @step::text, consumed_at = @now::timestamptz
	FROM m
	WHERE x.id = m.id AND x.consumed_at IS NULL
	RETURNING {{x.mcols}}
), cs AS (
	INSERT INTO {{steps}} AS s (workflow_id, name, state, attempts, result, meta, last_error, created_at, updated_at, completed_at)
	SELECT c.workflow_id, @step::text, 'completed', 1, c.payload, NULL, '', @now::timestamptz, @now::timestamptz, @now::timestamptz
	FROM c, (SELECT count(*) FROM st) AS after_commit_steps
	ON CONFLICT (workflow_id, name) DO UPDATE SET
		state = 'completed', attempts = 1, result = excluded.result, meta = NULL, last_error = '',
		updated_at = excluded.updated_at, completed_at = least(s.completed_at, excluded.completed_at)
	RETURNING s.id
)
SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM cs), {{c.mcols}}
FROM (SELECT 1) AS one
LEFT JOIN c ON true`
