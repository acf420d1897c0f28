-- 0002: workflow tags, bulk creates and mailboxes.
--
-- Placeholders and statement splitting as in 0001. A statement that only adds columns or
-- indexes (ALTER TABLE) is not repeatable in SQL that MySQL and MariaDB both accept (MySQL
-- has no ADD COLUMN IF NOT EXISTS), so Migrate treats its "duplicate column" and
-- "duplicate key name" errors as "already applied": one ALTER TABLE is atomic, so a column
-- that exists means the whole statement ran.

-- tags: the workflow's tags as one JSON object of strings (NULL when none), written once at
-- creation; MariaDB stores JSON as LONGTEXT with a JSON_VALID check, MySQL natively.
-- ListWorkflows matches them with JSON_CONTAINS, which may scan: no index.
-- create_nonce: the random nonce of the CreateWorkflows call that inserted the row (NULL for
-- rows made otherwise), so that call tells the rows it created from those that existed.
ALTER TABLE {{workflows}}
    ADD COLUMN tags JSON NULL,
    ADD COLUMN create_nonce BIGINT NULL;

-- A workflow's mailbox, clustered by workflow. A message is consumed at most once; consumed
-- messages stay (their key stays taken) until the workflow is deleted, and go with it
-- (ON DELETE CASCADE). AUTO_INCREMENT needs an index that starts with id; ids grow in the
-- order messages are stored, and sends to one workflow are serialised on its row.
CREATE TABLE IF NOT EXISTS {{messages}} (
    workflow_id BIGINT         NOT NULL,
    id          BIGINT         NOT NULL AUTO_INCREMENT,
    topic       VARBINARY(128) NOT NULL,
    -- The idempotency key, NULL for none: NULLs never collide in a unique index.
    msg_key     VARBINARY(512) NULL,
    payload     LONGBLOB       NULL,
    consumed    BOOLEAN        NOT NULL DEFAULT FALSE,
    consumed_by VARBINARY(128) NULL,
    consumed_at DATETIME(6)    NULL,
    created_at  DATETIME(6)    NOT NULL,
    PRIMARY KEY (workflow_id, id),
    UNIQUE KEY workflow_key (workflow_id, msg_key),
    -- The next unconsumed message of a topic: one index seek, in id order.
    KEY next_message (workflow_id, topic, consumed, id),
    KEY by_id (id),
    CONSTRAINT `{{prefix}}messages_workflow` FOREIGN KEY (workflow_id)
        REFERENCES {{workflows}} (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
