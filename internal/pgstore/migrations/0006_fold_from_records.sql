-- The fold reads the records themselves above its watermark instead of a
-- copy of each in cxop_tail: per record, the append no longer writes a tail
-- row and the fold no longer deletes it. A record's sequence is drawn
-- before its transaction commits, so the fold folds only up to a sequence
-- every append that could still commit below it has ended: it notes the
-- highest sequence drawn and then its own transaction id (mark_seq,
-- mark_xid), and once the oldest transaction still running is younger than
-- that id, every sequence up to mark_seq is settled (fold.go).
--
-- Before this file runs, the migration step drains cxop_tail into the
-- rollups in the same transaction, with the tail locked against appends of
-- older replicas (migrate.go, drainTail), so every record committed before
-- it is folded when the watermark moves to the last of them below.

-- The fold's index, on seq + 0 rather than seq: only statements that
-- write seq + 0 (the fold's, and counts of the tail) can use it. A
-- summary reads one subject's tail by (kind, subject, seq); offered a
-- plain (seq) index, the planner would take it whenever a day's statistics
-- predate the day's other subjects (a new day, a burst of interactions)
-- and read every subject's tail to find one survey's few answers.
CREATE INDEX cxop_records_fold ON cxop_records ((seq + 0));

ALTER TABLE cxop_fold
    ADD COLUMN settled  bigint NOT NULL DEFAULT 0,
    ADD COLUMN mark_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN mark_xid bigint NOT NULL DEFAULT 0;

DROP TABLE cxop_tail;

UPDATE cxop_fold
SET watermark = greatest(watermark, (SELECT coalesce(max(seq + 0), 0) FROM cxop_records)),
    settled   = greatest(watermark, (SELECT coalesce(max(seq + 0), 0) FROM cxop_records))
WHERE name = 'rollups';
