package postgres

import "strings"

// The SQL of flow control. A workflow with a flow key lives in the governed runnable index
// (flow, name, run_at, id) instead of the runnable one, so every claim reads it one
// (flow, name) pair at a time, from the pairs in flow_names: a held-back backlog is never
// walked by a claim of other workflows, and a limited pair is read only as far as its room.

// A probe for a pair's first due row is written as a lateral subquery with ORDER BY run_at,
// id and LIMIT 1, the governed index's own order, so the planner seeks the pair's range
// rather than turning an EXISTS into a semi-join or a scan of the table that stops at the
// first match (which reads the whole table when the pair has nothing due).
//
// govRunnable is the predicate of the governed runnable index, and govDue adds the claim's
// condition: due by the caller's clock (@now) and idle or leased until no later than the
// database's clock. Both are spelled out on the alias w in every statement, so the planner
// can prove the partial index applies.
const (
	govRunnable = `w.state IN ('idle', 'running') AND w.run_at IS NOT NULL AND w.flow IS NOT NULL`
	govDue      = govRunnable + ` AND w.run_at <= @now::timestamptz AND (w.state = 'idle' OR w.lease_until <= now())`
)

// flowPer is the rate window of the flows row f as an interval, rounded up to the
// microsecond the database keeps, so the window is never shorter than stored.
const flowPer = `(((f.per_ns + 999) / 1000) * interval '1 microsecond')`

// flowRunning counts the running workflows of the flow key {{key}} whose lease is live by the
// database's clock, at most {{cap}}: the range of the flow-running index after now(), so
// expired leases are not read and the count holds whatever the claimers' clocks say.
const flowRunning = `(SELECT count(*) FROM (
	SELECT 1 FROM {{workflows}} w
	WHERE w.flow = {{key}} AND w.state = 'running' AND w.lease_until > now()
	LIMIT {{cap}}
) AS x)`

// flowRoom is how many workflows of the flows row f a claim of @limit may take: the least of
// @limit, the concurrency left beside the live runs and the rate left beside the claims in the
// window ending at {{clock}}, as storage.FlowCapacity computes it.
var flowRoom = `greatest(0, least(@limit::bigint,
	CASE WHEN f.concurrency > 0 THEN f.concurrency - ` + strings.NewReplacer("{{key}}", "f.key", "{{cap}}", "f.concurrency").Replace(flowRunning) + `
	     ELSE @limit::bigint END,
	CASE WHEN f.rate > 0 THEN f.rate - (SELECT count(*) FROM unnest(f.claims) AS t(at) WHERE t.at > {{clock}} - ` + flowPer + `)
	     ELSE @limit::bigint END))`

// claimSources are the CTEs every claim starts with. "pairs" is the (flow, name) pairs of the
// claimed names with their flow's priority and whether it is limited (a key without a stored
// flow: priority 0, no limits), read in the statement's snapshot. "free"
// locks the first due rows without a flow from the runnable index, as a claim did before flow
// control, and "loose" the first due rows of each pair whose flow has no limits (or is not
// stored), each up to @limit: the claim takes the first @limit of them all in priority
// order, so the rows of a source beyond its first @limit can never be among them. A row of
// a limited flow is never taken from these: only the limited claim takes those, under its
// flow's lock.
const claimSources = `
pairs AS (
	SELECT fn.flow, fn.name, coalesce(fl.priority, 0) AS priority,
		coalesce(fl.concurrency > 0 OR fl.rate > 0, false) AS limited
	FROM {{flow_names}} fn LEFT JOIN {{flows}} fl ON fl.key = fn.flow
	WHERE cardinality(@names::text[]) = 0 OR fn.name = ANY(@names::text[])
), free AS (
	SELECT id, run_at, 0 AS priority FROM {{workflows}}
	WHERE state IN ('idle', 'running') AND run_at IS NOT NULL AND flow IS NULL AND run_at <= @now::timestamptz
		AND (state = 'idle' OR lease_until <= now())
		AND (cardinality(@names::text[]) = 0 OR name = ANY(@names::text[]))
	ORDER BY run_at, id
	LIMIT @limit
	FOR UPDATE SKIP LOCKED
), loose AS (
	SELECT g.id, g.run_at, p.priority
	FROM (SELECT * FROM pairs WHERE NOT limited) AS p
	CROSS JOIN LATERAL (
		SELECT w.id, w.run_at FROM {{workflows}} w
		WHERE w.flow = p.flow AND w.name = p.name AND ` + govDue + `
		ORDER BY w.run_at, w.id
		LIMIT @limit
		FOR UPDATE SKIP LOCKED
	) AS g
)`

// claimUpdate leases the rows "pick" chose. A row is claimable when due by the caller's
// clock (@now) and idle or leased until no later than the database's clock (now(); see
// fence). Claimed rows leave the runnable range for the caller (run_at moves to @run_at, the
// caller's now plus the TTL) and their lease expires the TTL after the database's now(). A
// live lease that is due by a caller whose clock runs ahead is filtered out without being
// locked. A wake due by now is covered by the run starting now; a later one is kept for
// FinishRun. "c" collects the ids of the locked rows in claim order into one array, so the
// UPDATE finds them by primary key whatever plan the server caches (a join with the locked
// rows can turn into a scan of the table under a generic plan), and the position in the
// array gives the caller the claim order back. claimResult returns a first row (pos 0) that
// carries the claim tier the statement found the names need (see claimTier), then each
// claimed row with its 1-based position.
const (
	claimUpdate = `
c AS (
	SELECT array_agg(id ORDER BY priority DESC, run_at, id) AS ids FROM pick
), u AS (
	UPDATE {{workflows}} AS w SET
		state = 'running', lease_owner = @owner, lease_token = w.lease_token + 1,
		lease_until = now() + @ttl::interval, run_at = @run_at::timestamptz, updated_at = @now::timestamptz,
		wake_at = CASE WHEN w.wake_at <= @now::timestamptz THEN NULL ELSE w.wake_at END
	FROM c
	WHERE w.id = ANY(c.ids)
	RETURNING array_position(c.ids, w.id) AS pos, {{w.wcols}}
)`
	claimResult = `
SELECT 0 AS pos, {{tier}} AS tier, {{nulls}}
UNION ALL
SELECT u.pos, NULL, {{u.wcols}} FROM u
ORDER BY 1`
)

// claimPlain is the claim of names that no workflow with a flow key was created with: one
// statement, the claim from the runnable index as before flow control, small enough to plan
// in a fraction of the fast path's time. "g" reads the (flow, name) pairs of the names with
// their flows: when there is one, the names need the fast path (or the limited one, when a
// flow is limited), and the statement claims nothing (the walk of the index is gated on it,
// so nothing is locked) and says so; the store runs the statement of that tier at once.
var claimPlain = `
WITH g AS (
	SELECT coalesce(max(CASE WHEN f.concurrency > 0 OR f.rate > 0 THEN 2 ELSE 1 END), 0) AS tier
	FROM {{flow_names}} fn LEFT JOIN {{flows}} f ON f.key = fn.flow
	WHERE cardinality(@names::text[]) = 0 OR fn.name = ANY(@names::text[])
), pick AS (
	SELECT id, run_at, 0 AS priority FROM {{workflows}}
	WHERE state IN ('idle', 'running') AND run_at IS NOT NULL AND flow IS NULL AND run_at <= @now::timestamptz
		AND (state = 'idle' OR lease_until <= now())
		AND (cardinality(@names::text[]) = 0 OR name = ANY(@names::text[]))
		AND (SELECT tier FROM g) = 0
	ORDER BY run_at, id
	LIMIT @limit
	FOR UPDATE SKIP LOCKED
),` + claimUpdate + strings.ReplaceAll(claimResult, "{{tier}}", "(SELECT tier FROM g)")

// claimFast is the claim of the fast path, one statement: the due rows without a flow and
// those of flows without limits, in (priority DESC, run_at, id) order. "lim" says whether a
// limited flow of the claimed names has a due row, which only the limited path may take:
// then the statement claims nothing (its sources are never read, so nothing is locked) and
// says so, and the store takes the limited path at once, so a claim's order never depends
// on which path it guessed. Names without any (flow, name) pair send the store back to the
// plain claim.
var claimFast = `
WITH ` + claimSources + `, lim AS (
	SELECT EXISTS (
		SELECT 1 FROM (SELECT * FROM pairs WHERE limited) AS p
		CROSS JOIN LATERAL (
			SELECT 1 FROM {{workflows}} w WHERE w.flow = p.flow AND w.name = p.name AND ` + govDue + `
			ORDER BY w.run_at, w.id
			LIMIT 1
		) AS due) AS flag
), pick AS (
	SELECT id, run_at, priority FROM free WHERE NOT (SELECT flag FROM lim)
	UNION ALL
	SELECT id, run_at, priority FROM loose WHERE NOT (SELECT flag FROM lim)
	ORDER BY priority DESC, run_at, id
	LIMIT @limit
),` + claimUpdate + strings.ReplaceAll(claimResult, "{{tier}}",
	"CASE WHEN (SELECT flag FROM lim) THEN 2 WHEN EXISTS (SELECT 1 FROM pairs) THEN 1 ELSE 0 END")

// lockFlows is the first statement of the limited path. "cand" is the limited flows of the
// claimed names with a due row, "locked" locks those with room left (as this snapshot sees
// it: a flow it finds full is left for a later claim) in key order, waiting for a concurrent
// claim that holds one, so concurrent limited claims of one flow take turns and never
// deadlock. The keys locked go into a setting local to the transaction, for the second
// statement. It returns how many limited flows had a due row, and whether the names have a
// (flow, name) pair at all.
var lockFlows = `
WITH cand AS (
	SELECT DISTINCT f.key
	FROM {{flows}} f JOIN {{flow_names}} fn ON fn.flow = f.key
	CROSS JOIN LATERAL (
		SELECT 1 FROM {{workflows}} w WHERE w.flow = fn.flow AND w.name = fn.name AND ` + govDue + `
		ORDER BY w.run_at, w.id
		LIMIT 1
	) AS due
	WHERE (f.concurrency > 0 OR f.rate > 0)
		AND (cardinality(@names::text[]) = 0 OR fn.name = ANY(@names::text[]))
), locked AS (
	SELECT f.key FROM {{flows}} f
	WHERE f.key IN (SELECT key FROM cand) AND ` + strings.ReplaceAll(flowRoom, "{{clock}}", "now()") + ` > 0
	ORDER BY f.key
	FOR UPDATE OF f
)
SELECT (SELECT count(*) FROM cand),
	EXISTS (SELECT 1 FROM {{flow_names}} fn WHERE cardinality(@names::text[]) = 0 OR fn.name = ANY(@names::text[])),
	set_config('` + flowKeysSetting + `', coalesce((SELECT array_agg(key ORDER BY key) FROM locked)::text, '{}'), true)`

// flowKeysSetting is the transaction-local setting through which lockFlows hands the keys it
// locked to claimLimited.
const flowKeysSetting = "chronoforge.flow_keys"

// claimLimited is the second statement of the limited path, in the same implicit transaction
// as lockFlows, so its snapshot is taken after the flows' locks were granted: every claim of
// a locked flow that committed before is visible to it, and none can commit while it runs.
// "lk" is the locked flows with the room each leaves (live runs counted from the governed
// index, the rate window from the flows row), "held" locks each one's first due rows over its
// pairs up to its room. The claim takes the first @limit of those and of the fast path's
// sources in priority order, and appends its claims' times to each rate-limited flow's
// window, dropping the times that left it. The rate window is judged and recorded by "ck",
// the database's clock when this statement began, after the locks were granted: now() is the
// start of the transaction, before lockFlows waited, and a claim recorded that early would
// leave the window before its time. A limited flow this transaction did not lock (one
// limited since lockFlows looked) is left alone.
var claimLimited = `
WITH ck AS (
	SELECT clock_timestamp() AS at
), ` + claimSources + `, lk AS (
	SELECT f.key, f.priority, ` + strings.ReplaceAll(flowRoom, "{{clock}}", "(SELECT at FROM ck)") + ` AS room
	FROM {{flows}} f
	WHERE f.key = ANY(coalesce(nullif(current_setting('` + flowKeysSetting + `', true), ''), '{}')::text[])
), held AS (
	SELECT k.key, k.priority, g.id, g.run_at
	FROM lk AS k
	CROSS JOIN LATERAL (
		SELECT h.id, h.run_at FROM pairs p
		CROSS JOIN LATERAL (
			SELECT w.id, w.run_at FROM {{workflows}} w
			WHERE w.flow = p.flow AND w.name = p.name AND ` + govDue + `
			ORDER BY w.run_at, w.id
			LIMIT k.room
			FOR UPDATE SKIP LOCKED
		) AS h
		WHERE p.flow = k.key
		ORDER BY h.run_at, h.id
		LIMIT k.room
	) AS g
	WHERE k.room > 0
), pick AS (
	SELECT id, run_at, priority, NULL::text AS key FROM free
	UNION ALL
	SELECT id, run_at, priority, NULL FROM loose
	UNION ALL
	SELECT id, run_at, priority, key FROM held
	ORDER BY priority DESC, run_at, id
	LIMIT @limit
), rl AS (
	UPDATE {{flows}} f SET claims = ARRAY(
		SELECT t.at FROM unnest(f.claims) AS t(at) WHERE t.at > ck.at - ` + flowPer + ` ORDER BY t.at
	) || array_fill(ck.at, ARRAY[n.n::int])
	FROM (SELECT key, count(*) AS n FROM pick WHERE key IS NOT NULL GROUP BY key) AS n, ck
	WHERE f.key = n.key AND f.rate > 0
),` + claimUpdate + strings.ReplaceAll(claimResult, "{{tier}}", "NULL::int")

// flowColumns are the columns scanned into a storage.Flow.
const flowColumns = `key, priority, concurrency, rate, per_ns, updated_at`

// putFlow is PutFlow's second statement, after the first took the flows' advisory lock (so
// it counts the stored flows exactly). It inserts the flow, or replaces the stored one unless
// @if_missing, and returns the row written (kind 1) or the stored row left alone (kind 0); no
// row when a new key would exceed @max flows. A rate's window of claims is kept across a
// change (they are claims all the same) and emptied when the rate is removed.
const putFlow = `
WITH ins AS (
	INSERT INTO {{flows}} AS f (key, priority, concurrency, rate, per_ns, updated_at)
	SELECT @key::text, @priority::int, @concurrency::int, @rate::int, @per_ns::bigint, @now::timestamptz
	WHERE EXISTS (SELECT 1 FROM {{flows}} WHERE key = @key::text) OR (SELECT count(*) FROM {{flows}}) < @max
	ON CONFLICT (key) DO UPDATE SET
		priority = excluded.priority, concurrency = excluded.concurrency, rate = excluded.rate,
		per_ns = excluded.per_ns, updated_at = excluded.updated_at,
		claims = CASE WHEN excluded.rate = 0 THEN '{}' ELSE f.claims END
	WHERE NOT @if_missing::bool
	RETURNING ` + flowColumns + `
)
SELECT 1, ` + flowColumns + ` FROM ins
UNION ALL
SELECT 0, ` + flowColumns + ` FROM {{flows}} WHERE key = @key::text AND NOT EXISTS (SELECT 1 FROM ins)`

// deleteFlow is DeleteFlow's statement. The key's pairs stay in flow_names: a key without a
// stored flow governs nothing.
const deleteFlow = `DELETE FROM {{flows}} WHERE key = @key`

// listFlows is ListFlows' statement: every stored flow in key order, with its live runs and
// its due workflows (by the caller's @now), each counted per name of the key up to @probe.
var listFlows = `
SELECT ` + flowColumns + `,
	` + strings.NewReplacer("{{key}}", "f.key", "{{cap}}", "@probe").Replace(flowRunning) + `,
	(SELECT count(*) FROM {{flow_names}} dn CROSS JOIN LATERAL (
		SELECT 1 FROM {{workflows}} w
		WHERE w.flow = dn.flow AND w.name = dn.name AND ` + govDue + `
		LIMIT @probe
	) AS x WHERE dn.flow = f.key)
FROM {{flows}} f
ORDER BY f.key`
