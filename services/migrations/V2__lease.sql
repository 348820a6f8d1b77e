-- The lease of the leading scheduler: one row. A scheduler acquires it once
-- it has expired (on the database's clock) and becomes leader for the next
-- epoch; the leader renews it. Every transaction the leader commits checks
-- that the epoch is still its own (fencing), so a deposed leader cannot
-- write again.

CREATE TABLE taskforge_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    epoch      BIGINT NOT NULL,
    -- Who holds it, and where clients reach it.
    holder     TEXT NOT NULL,
    url        TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

INSERT INTO taskforge_lease (id, epoch, holder, url, expires_at)
VALUES (1, 0, '', '', '-infinity');
