-- TaskForge's store on PostgreSQL: the same records as the JSON Lines store.
-- Ids are the 64-bit execution ids, stored as BIGINT (same bits).

CREATE TABLE taskforge_functions (
    function_id      TEXT PRIMARY KEY,
    -- Registration order, kept when a function is registered again.
    seq              BIGSERIAL NOT NULL,
    name             TEXT NOT NULL,
    language         TEXT NOT NULL,
    code             BYTEA NOT NULL,
    timeout_ms       BIGINT NOT NULL,
    max_attempts     INTEGER NOT NULL,
    max_memory_bytes BIGINT NOT NULL,
    created_at_us    BIGINT NOT NULL
);

CREATE TABLE taskforge_executions (
    id                   BIGINT PRIMARY KEY,
    -- Acceptance order.
    seq                  BIGSERIAL NOT NULL,
    function_id          TEXT NOT NULL,
    -- Emptied when the execution finishes.
    payload              BYTEA NOT NULL,
    max_attempts         INTEGER NOT NULL,
    timeout_ms           BIGINT NOT NULL,
    schedule_to_start_ms BIGINT,
    created_at_us        BIGINT NOT NULL,
    idempotency_key      TEXT,
    request_digest       BIGINT,
    attempts_started     INTEGER NOT NULL DEFAULT 0,
    -- The end: NULL status while pending or running.
    status               TEXT,
    attempt              INTEGER,
    worker_id            TEXT,
    started_at_us        BIGINT,
    finished_at_us       BIGINT,
    error                TEXT,
    output               BYTEA,
    logs                 TEXT
);

-- A start reads the unfinished executions in acceptance order...
CREATE INDEX taskforge_executions_live ON taskforge_executions (seq) WHERE status IS NULL;
-- ...and the finished ones in the order they finished.
CREATE INDEX taskforge_executions_finished ON taskforge_executions (finished_at_us) WHERE status IS NOT NULL;
