-- Records, their idempotency keys, the unfolded tail and the rollups.
-- Times are unix nanoseconds in bigint: the same integers the embedded store
-- keeps, so bucket arithmetic is exact and no time zone is involved.

-- One row per (kind, subject, id) ever accepted and not yet past retention.
-- The primary key is what makes a record count once across replicas: a
-- concurrent claim of the same key waits on it and then does nothing.
CREATE TABLE cxop_ids (
    kind        text   NOT NULL CHECK (kind IN ('e', 'r')),
    subject     text   NOT NULL,
    id          text   NOT NULL,
    -- What the client sent under the id; 0 is unknown and never conflicts.
    fingerprint bigint NOT NULL,
    event_time  bigint NOT NULL,
    PRIMARY KEY (kind, subject, id)
);
CREATE INDEX cxop_ids_event_time ON cxop_ids (event_time);

CREATE SEQUENCE cxop_record_seq;

-- The raw records, kept for export, partitioned by day of event time so that
-- retention drops whole partitions. Partitions are created ahead of time
-- and on demand (cxop_records_pYYYYMMDD).
CREATE TABLE cxop_records (
    seq           bigint           NOT NULL DEFAULT nextval('cxop_record_seq'),
    event_time    bigint           NOT NULL,
    kind          text             NOT NULL,
    subject       text             NOT NULL,
    id            text             NOT NULL,
    customer_hash bigint           NOT NULL,
    wait_seconds  double precision NOT NULL,
    flags         smallint         NOT NULL,
    score         smallint         NOT NULL,
    -- The normalised JSON exactly as the collector exports it (jsonb would
    -- reorder keys and respace it).
    body          bytea            NOT NULL
) PARTITION BY RANGE (event_time);
CREATE INDEX cxop_records_subject ON cxop_records (kind, subject, seq);

-- Records stored but not yet folded into the rollups: what a record adds
-- to them, without the body. The fold deletes the rows it folds in the
-- transaction that writes the buckets, so at any snapshot a record is in
-- exactly one of cxop_tail and cxop_rollups.
CREATE TABLE cxop_tail (
    seq           bigint           PRIMARY KEY,
    kind          text             NOT NULL,
    subject       text             NOT NULL,
    event_time    bigint           NOT NULL,
    customer_hash bigint           NOT NULL,
    wait_seconds  double precision NOT NULL,
    flags         smallint         NOT NULL,
    score         smallint         NOT NULL
);
CREATE INDEX cxop_tail_subject ON cxop_tail (kind, subject, event_time);

-- Rollup buckets: internal/rollup's aggregates in their checkpoint encoding.
CREATE TABLE cxop_rollups (
    kind         text     NOT NULL,
    subject      text     NOT NULL,
    resolution   smallint NOT NULL,
    bucket_start bigint   NOT NULL,
    value        bytea    NOT NULL,
    PRIMARY KEY (kind, subject, resolution, bucket_start)
);
CREATE INDEX cxop_rollups_age ON cxop_rollups (resolution, bucket_start);

-- Where the fold stands: the highest record sequence folded and how many
-- records it folded in all.
CREATE TABLE cxop_fold (
    name      text        PRIMARY KEY,
    watermark bigint      NOT NULL,
    folded    bigint      NOT NULL,
    folded_at timestamptz
);
INSERT INTO cxop_fold (name, watermark, folded) VALUES ('rollups', 0, 0);

INSERT INTO cxop_leases (name, holder, expires_at) VALUES
    ('fold', '', TIMESTAMPTZ '1970-01-01 00:00:00+00'),
    ('retention', '', TIMESTAMPTZ '1970-01-01 00:00:00+00');
