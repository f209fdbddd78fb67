-- Rollup bucket versions drawn at random instead of from a sequence.
-- A sequence goes back with the database: restored from a backup, or
-- failed over to a replica that had not received its last writes, it hands
-- out the numbers of buckets written after that point again, and a bucket
-- rewritten in the same order came back at the version a replica's cache
-- held for the content that was lost. A version of 59 random bits from the
-- server's strong random source (gen_random_uuid) does not come again with
-- the database: a cached bucket is served stale only if a later write of
-- that same bucket draws exactly the version it holds.
--
-- The sign bit is cleared: -1 stands for "no version held" in the summary
-- statement. The sequence stays, unused, so that a replica of the previous
-- build still running during a rolling upgrade can read it.
CREATE OR REPLACE FUNCTION cxop_rollup_new_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := ('x' || left(replace(gen_random_uuid()::text, '-', ''), 16))::bit(64)::bigint & 9223372036854775807;
    RETURN NEW;
END
$$;
