-- Rollup bucket versions, so that a replica can keep decoded buckets in
-- memory and ask the database only whether each is still the one it holds.
-- Every insert or update of a bucket row, by any writer (the fold of any
-- replica, a rollup replacement), takes a new number from one sequence, so
-- (bucket, version) names one content for the life of the database: a
-- number is never handed out twice. Rows written before this migration keep
-- version 0 until they are next written.
CREATE SEQUENCE cxop_rollup_version;

ALTER TABLE cxop_rollups ADD COLUMN version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION cxop_rollup_new_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('cxop_rollup_version');
    RETURN NEW;
END
$$;

CREATE TRIGGER cxop_rollup_version BEFORE INSERT OR UPDATE ON cxop_rollups
    FOR EACH ROW EXECUTE FUNCTION cxop_rollup_new_version();
