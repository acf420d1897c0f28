-- 0001: the workflow queue, its step records and its error records (DESIGN.md section 6).
--
-- {{workflows}}, {{steps}} and {{errors}} are replaced by the schema-qualified, quoted table
-- names, and {{prefix}} by the validated table prefix, before this file runs.

-- One row per workflow: it is the queue entry and the workflow's state together. A row is
-- runnable when it is idle or running (an expired lease) and run_at <= now; while leased,
-- run_at equals lease_until, so a claimed row leaves the runnable range by itself.
CREATE TABLE {{workflows}} (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL,
    key            text        NOT NULL,
    input          bytea,
    output         bytea,
    state          text        NOT NULL
        CHECK (state IN ('idle', 'running', 'completed', 'failed', 'stalled', 'cancelled')),
    "values"       bytea,
    run_at         timestamptz,
    wait_kind      text        NOT NULL DEFAULT '',
    wait_step      text        NOT NULL DEFAULT '',
    wait_data      bytea,
    -- A wake received while the workflow was running; the run's finish applies it.
    wake_at        timestamptz,
    lease_owner    text        NOT NULL DEFAULT '',
    lease_until    timestamptz,
    lease_token    bigint      NOT NULL DEFAULT 0,
    attempt        integer     NOT NULL DEFAULT 0,
    parent_step_id bigint,
    trace_context  bytea,
    last_error     text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    CONSTRAINT "{{prefix}}workflows_name_key" UNIQUE (name, key)
);

-- Claim walks this in (run_at, id) order and stops after LIMIT rows, without sorting the
-- backlog of due rows.
CREATE INDEX "{{prefix}}workflows_runnable" ON {{workflows}} (run_at, id)
    WHERE state IN ('idle', 'running') AND run_at IS NOT NULL;

-- The capped count of a branch's incomplete children, and listing a branch's children of one
-- state in ID order.
CREATE INDEX "{{prefix}}workflows_children" ON {{workflows}} (parent_step_id, state, id)
    WHERE parent_step_id IS NOT NULL;

-- Cleanup of finished workflows, oldest first.
CREATE INDEX "{{prefix}}workflows_finished" ON {{workflows}} (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE {{steps}} (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id  bigint      NOT NULL REFERENCES {{workflows}} (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('pending', 'completed', 'failed')),
    attempts     integer     NOT NULL DEFAULT 0,
    result       bytea,
    meta         bytea,
    last_error   text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    completed_at timestamptz,
    CONSTRAINT "{{prefix}}steps_workflow_name_key" UNIQUE (workflow_id, name)
);

CREATE TABLE {{errors}} (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id bigint      NOT NULL REFERENCES {{workflows}} (id) ON DELETE CASCADE,
    step        text        NOT NULL DEFAULT '',
    attempt     integer     NOT NULL DEFAULT 0,
    type        text        NOT NULL DEFAULT '',
    message     text        NOT NULL DEFAULT '',
    "values"    bytea,
    created_at  timestamptz NOT NULL
);

CREATE INDEX "{{prefix}}errors_workflow" ON {{errors}} (workflow_id, id);
