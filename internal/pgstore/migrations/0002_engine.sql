-- The survey engine's state (internal/survey/engine): an ordered key-value
-- table holding the engine's keys as the embedded store does, including the
-- record feed (keys 's/feed/' || sequence) that each append writes.
CREATE TABLE cxop_engine_kv (
    key   bytea PRIMARY KEY,
    value bytea NOT NULL
);

-- The engine's lock among replicas: a lease with a fencing token. Taking it
-- bumps the token; every engine write transaction updates this row where the
-- token is still its own, so a replica that lost the lock commits nothing.
-- Times are Unix nanoseconds.
CREATE TABLE cxop_engine_lock (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at bigint NOT NULL
);

INSERT INTO cxop_engine_lock (name, holder, token, expires_at) VALUES ('engine', '', 0, 0);
