-- The history is listed and filtered in the database, so the scheduler keeps
-- none of it in memory. Listings run in execution id order, which is the
-- ids' unsigned order: `sort_key` is the id with its sign bit flipped, which
-- orders as a signed BIGINT exactly as the id does unsigned.
ALTER TABLE taskforge_executions
    ADD COLUMN sort_key BIGINT GENERATED ALWAYS AS (id # (-9223372036854775808)) STORED;

CREATE INDEX taskforge_history_by_id ON taskforge_executions (sort_key)
    WHERE status IS NOT NULL;
CREATE INDEX taskforge_history_by_status ON taskforge_executions (status, sort_key)
    WHERE status IS NOT NULL;
CREATE INDEX taskforge_history_by_function ON taskforge_executions (function_id, sort_key)
    WHERE status IS NOT NULL;
