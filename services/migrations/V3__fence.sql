-- The fence of a leading scheduler's transaction, as one statement that
-- fails rather than returns: a group commit is sent as one pipeline (BEGIN,
-- this, its writes, COMMIT) without waiting for answers in between, and an
-- error here aborts the transaction, so the writes behind it never commit.
-- FOR SHARE holds the lease row until the transaction ends: a scheduler
-- taking the lease over waits for the commit, and after it, this fails.
CREATE FUNCTION taskforge_fence(held BIGINT) RETURNS VOID AS $$
BEGIN
    PERFORM 1 FROM taskforge_lease WHERE id = 1 AND epoch = held FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'epoch % no longer holds the scheduler lease', held
            USING ERRCODE = 'TF001';
    END IF;
END
$$ LANGUAGE plpgsql;
