-- 0003: flow control (see "Flow control" in package storage).
--
-- Placeholders and statement splitting as in 0001; an ALTER TABLE that finds its column
-- already added was applied before (see 0002).
--
-- flow: the flow key a workflow was created with (NULL: none); it never changes.
--
-- MySQL has no partial indexes, so the runnable rows are split between indexes with stored
-- generated columns that are NULL where a row does not belong, the way run_at itself is NULL
-- for rows that can never be claimed:
--   free_at: run_at of the rows without a flow. Claims walk the `claim` index (now on
--     (name, free_at)) and `free` for them, so they never step over a flow's held-back rows.
--   flow_at: run_at of the rows with a flow. A claim walks the first due rows of one
--     (flow, name) pair of `flow_claim`, as far as the flow's limits leave room for.
--   running_until: lease_until of the running rows with a flow, so that the live leases of
--     a flow are one range of `flow_running`.
-- A row without a flow keeps NULL in flow_at and running_until whatever it does, so InnoDB
-- never rewrites its entries in `flow_claim` and `flow_running`: a store that uses no flows
-- pays only for `free`. `runnable (run_at)` stays for the readers of every due row (Backlog,
-- a claim's read-back).
ALTER TABLE {{workflows}}
    ADD COLUMN flow VARBINARY(128) NULL,
    ADD COLUMN free_at DATETIME(6) AS (IF(flow IS NULL, run_at, NULL)) STORED,
    ADD COLUMN flow_at DATETIME(6) AS (IF(flow IS NULL, NULL, run_at)) STORED,
    ADD COLUMN running_until DATETIME(6) AS (IF(flow IS NOT NULL AND state = 'running', lease_until, NULL)) STORED,
    DROP INDEX claim,
    ADD KEY claim (name, free_at),
    ADD KEY free (free_at),
    ADD KEY flow_claim (flow, name, flow_at),
    ADD KEY flow_running (flow, running_until);

-- The stored flows, at most storage.MaxFlows. claim_log is the rate's sliding window: a JSON
-- array of [claim time in Unix microseconds by the server's clock, claims at that time],
-- oldest first, kept only while Rate is set and only as long as an entry is in the window.
-- A claim of a limited flow locks its row (SELECT ... FOR UPDATE), which serialises the
-- claims of the flow across every process.
CREATE TABLE IF NOT EXISTS {{flows}} (
    `key`       VARBINARY(128) NOT NULL,
    priority    INT            NOT NULL DEFAULT 0,
    concurrency INT            NOT NULL DEFAULT 0,
    rate        INT            NOT NULL DEFAULT 0,
    per_us      BIGINT         NOT NULL DEFAULT 0,
    claim_log   JSON           NULL,
    updated_at  DATETIME(6)    NOT NULL,
    PRIMARY KEY (`key`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every (workflow name, flow key) pair a workflow was ever created with, written (INSERT
-- IGNORE) before or with the workflow: a claim walks `flow_claim` pair by pair, so it must
-- know the pairs, and a flow's due count (ListFlows) sums them. Pairs are never deleted.
CREATE TABLE IF NOT EXISTS {{flow_names}} (
    name VARBINARY(128) NOT NULL,
    flow VARBINARY(128) NOT NULL,
    PRIMARY KEY (name, flow),
    KEY by_flow (flow, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
