-- 0003: flow control (storage.FlowController): a workflow's flow key, the stored flows, and
-- the (name, flow) pairs that exist, so a claim finds the flow keys of its names without
-- reading workflows.
--
-- {{workflows}}, {{flows}} and {{flow_names}} are replaced by the schema-qualified, quoted
-- table names, {{schema.}} by the quoted schema and a dot (or nothing when the search_path
-- decides), and {{prefix}} by the validated table prefix, before this file runs. Existing
-- rows keep working: a workflow without a flow has a NULL flow.

-- The flow key a workflow was created with; NULL for none. It never changes.
ALTER TABLE {{workflows}} ADD COLUMN flow text;

-- The runnable index keeps only the rows without a flow, so a claim of them walks no row a
-- flow holds back; the governed rows get an index of their own, by flow key and name, whose
-- ranges a claim reads one (flow, name) pair at a time, only as far as the flow's limits
-- leave room. A running row stays in it with its future run_at (the lease's end by the
-- claimer's clock). Every index costs each claim and finish a new entry, so there is one
-- more only: the running governed rows by lease expiry, which a limited claim counts by the
-- database's clock (a run's run_at is by its claimer's clock, which may run behind or ahead).
DROP INDEX {{schema.}}"{{prefix}}workflows_runnable";
CREATE INDEX "{{prefix}}workflows_runnable" ON {{workflows}} (run_at, id)
    WHERE state IN ('idle', 'running') AND run_at IS NOT NULL AND flow IS NULL;
CREATE INDEX "{{prefix}}workflows_flow_runnable" ON {{workflows}} (flow, name, run_at, id)
    WHERE state IN ('idle', 'running') AND run_at IS NOT NULL AND flow IS NOT NULL;
CREATE INDEX "{{prefix}}workflows_flow_running" ON {{workflows}} (flow, lease_until)
    WHERE state = 'running' AND flow IS NOT NULL;

-- One row per stored flow (storage.Flow). per_ns is the rate's window in nanoseconds (0
-- without a rate). claims holds the database-clock times of the key's claims in the current
-- window, oldest first: a claim drops the times that left the window and appends its own,
-- so it holds at most Rate entries (at most the larger rate, just after a change).
CREATE TABLE {{flows}} (
    key         text        PRIMARY KEY,
    priority    integer     NOT NULL DEFAULT 0,
    concurrency integer     NOT NULL DEFAULT 0,
    rate        integer     NOT NULL DEFAULT 0,
    per_ns      bigint      NOT NULL DEFAULT 0,
    claims      timestamptz[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL
);

-- Every (flow, name) pair a workflow was ever created with, written by the statement that
-- creates the workflow (insert-or-ignore). A claim reads it to find which flow keys its names
-- have and which names share a key; it is small (pairs, not workflows) and never shrinks.
CREATE TABLE {{flow_names}} (
    flow text NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (flow, name)
);
