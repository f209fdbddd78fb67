-- The greatest collector config revision (collectorapi.Config.Revision) any
-- replica has loaded. Each replica raises it before it accepts ingest under a
-- newer config; the survey engine reads it after it reads a batch of its
-- record feed and consumes nothing while it is above the revision of its own
-- config, whose surveys may not know what those records trigger.
CREATE TABLE cxop_config_revision (
    name     text PRIMARY KEY,
    revision bigint NOT NULL
);

INSERT INTO cxop_config_revision (name, revision) VALUES ('collector', 0);
