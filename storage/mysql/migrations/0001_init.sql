-- 0001: the workflow queue, its step records and its error records (DESIGN.md section 6).
--
-- {{workflows}}, {{steps}} and {{errors}} are replaced by the schema-qualified, quoted table
-- names, and {{prefix}} by the validated table prefix, before this file runs. Statements are
-- separated by a semicolon at the end of a line. MySQL commits DDL statement by statement,
-- so every statement is written to be repeatable (IF NOT EXISTS): a migration interrupted
-- half way is finished by the next Migrate.
--
-- Names, keys and other strings are VARBINARY: they compare byte for byte, so case, '$' and
-- trailing spaces are all significant (the utf8mb4_bin collation pads with spaces on MySQL
-- 8, so 'k' and 'k ' would collide in the unique index), and the column lengths are the
-- contract's byte limits. Times are DATETIME(6) in UTC, written and read by the backend as
-- text, so neither the session time zone nor the driver's loc setting changes them.

-- One row per workflow: the queue entry and the workflow's state together. A row is
-- runnable when it is idle or running (an expired lease) and run_at <= now; while leased,
-- run_at equals lease_until, so a claimed row leaves the runnable range by itself.
CREATE TABLE IF NOT EXISTS {{workflows}} (
    id             BIGINT          NOT NULL AUTO_INCREMENT,
    name           VARBINARY(128)  NOT NULL,
    `key`          VARBINARY(512)  NOT NULL,
    input          LONGBLOB        NULL,
    output         LONGBLOB        NULL,
    state          VARBINARY(16)   NOT NULL,
    `values`       LONGBLOB        NULL,
    run_at         DATETIME(6)     NULL,
    wait_kind      VARBINARY(128)  NOT NULL DEFAULT '',
    wait_step      VARBINARY(128)  NOT NULL DEFAULT '',
    wait_data      MEDIUMBLOB      NULL,
    -- A wake received while the workflow was running; the run's finish applies it.
    wake_at        DATETIME(6)     NULL,
    -- Counts wakes of idle or running rows, so that Wake's UPDATE always changes the row it
    -- matches and its affected-row count answers "was it woken" in one statement.
    wake_count     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    lease_owner    VARBINARY(128)  NOT NULL DEFAULT '',
    lease_until    DATETIME(6)     NULL,
    lease_token    BIGINT          NOT NULL DEFAULT 0,
    -- The last claim that took the row: its random nonce and the run_at the row had, so the
    -- claim reads back exactly its rows in run_at order.
    claim_nonce    BIGINT          NULL,
    claim_run_at   DATETIME(6)     NULL,
    attempt        BIGINT          NOT NULL DEFAULT 0,
    parent_step_id BIGINT          NULL,
    trace_context  MEDIUMBLOB      NULL,
    last_error     MEDIUMBLOB      NULL,
    created_at     DATETIME(6)     NOT NULL,
    updated_at     DATETIME(6)     NOT NULL,
    finished_at    DATETIME(6)     NULL,
    PRIMARY KEY (id),
    -- 128 + 512 bytes: well inside InnoDB's 3,072-byte index key limit.
    UNIQUE KEY name_key (name, `key`),
    -- Rows that are not runnable have a NULL run_at (final, stalled, waiting for a signal)
    -- or a future one. A claim for given names walks each name's range of `claim` in run_at
    -- order and stops after LIMIT rows, so it reads (and locks) only rows it may take: under
    -- REPEATABLE READ, InnoDB keeps the lock of every row a locking read passes, even one the
    -- WHERE rejects. A claim for any name, and listings of due rows, walk `runnable`.
    KEY claim (name, run_at),
    KEY runnable (run_at),
    -- The capped count of a branch's incomplete children, and listing a branch's children.
    KEY children (parent_step_id, state),
    -- Cleanup of finished workflows, oldest first.
    KEY finished (finished_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Step records, clustered by workflow so that Load reads one workflow's steps as one range.
-- AUTO_INCREMENT needs an index that starts with id; ids grow in insertion order.
CREATE TABLE IF NOT EXISTS {{steps}} (
    workflow_id  BIGINT         NOT NULL,
    id           BIGINT         NOT NULL AUTO_INCREMENT,
    name         VARBINARY(128) NOT NULL,
    state        VARBINARY(16)  NOT NULL,
    attempts     BIGINT         NOT NULL DEFAULT 0,
    result       LONGBLOB       NULL,
    meta         MEDIUMBLOB     NULL,
    last_error   MEDIUMBLOB     NULL,
    created_at   DATETIME(6)    NOT NULL,
    updated_at   DATETIME(6)    NOT NULL,
    completed_at DATETIME(6)    NULL,
    PRIMARY KEY (workflow_id, id),
    UNIQUE KEY workflow_name (workflow_id, name),
    KEY by_id (id),
    CONSTRAINT `{{prefix}}steps_workflow` FOREIGN KEY (workflow_id)
        REFERENCES {{workflows}} (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Error records, clustered by workflow, oldest first.
CREATE TABLE IF NOT EXISTS {{errors}} (
    workflow_id BIGINT         NOT NULL,
    id          BIGINT         NOT NULL AUTO_INCREMENT,
    step        MEDIUMBLOB     NOT NULL,
    attempt     BIGINT         NOT NULL DEFAULT 0,
    type        VARBINARY(256) NOT NULL DEFAULT '',
    message     MEDIUMBLOB     NOT NULL,
    `values`    MEDIUMBLOB     NULL,
    created_at  DATETIME(6)    NOT NULL,
    PRIMARY KEY (workflow_id, id),
    KEY by_id (id),
    CONSTRAINT `{{prefix}}errors_workflow` FOREIGN KEY (workflow_id)
        REFERENCES {{workflows}} (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
