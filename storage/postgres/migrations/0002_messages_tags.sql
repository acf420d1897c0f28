-- 0002: workflow tags and mailboxes (SendMessage, ConsumeMessage).
--
-- {{workflows}} and {{messages}} are replaced by the schema-qualified, quoted table names,
-- and {{prefix}} by the validated table prefix, before this file runs. Existing rows keep
-- working: a workflow without tags has NULL tags.

-- Tags given at creation, a JSON object of strings; NULL when none. ListWorkflows filters
-- on them with jsonb containment (@>). No index serves that filter: a tag listing walks
-- the primary key in ID order and stops at the page's limit (the contract allows a tag
-- filter to scan), which keeps every insert free of a GIN index's cost.
ALTER TABLE {{workflows}} ADD COLUMN tags jsonb;

-- One row per message. msg_key is NULL for a message sent without an idempotency key.
-- consumed_by and consumed_at are set together when ConsumeMessage takes the message.
CREATE TABLE {{messages}} (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id bigint      NOT NULL REFERENCES {{workflows}} (id) ON DELETE CASCADE,
    topic       text        NOT NULL,
    msg_key     text,
    payload     bytea,
    created_at  timestamptz NOT NULL,
    consumed_by text        NOT NULL DEFAULT '',
    consumed_at timestamptz
);

-- The next unconsumed message of a workflow's topic is one seek of this index: consumed
-- messages leave it.
CREATE INDEX "{{prefix}}messages_next" ON {{messages}} (workflow_id, topic, id)
    WHERE consumed_at IS NULL;

-- A workflow holds at most one message per key. Keyless messages have a NULL key, which
-- never conflicts, so the index needs no predicate, and being whole it also finds every
-- message of a workflow: the ON DELETE CASCADE of DeleteFinished uses it.
CREATE UNIQUE INDEX "{{prefix}}messages_workflow_key" ON {{messages}} (workflow_id, msg_key);
