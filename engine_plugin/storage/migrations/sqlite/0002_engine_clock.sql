-- vmdiag store, SQLite, schema version 2: the engine's clock orders reports (issue 10).

-- When this engine stored each VM's latest report (its own clock). Order across agent runs
-- and silence use it; received_at stays the relay's time, clamped to the engine's.
ALTER TABLE vms ADD COLUMN ingested_at REAL;

-- Existing rows: a relay time in the future (a fast or hostile relay clock) no longer pins
-- the VM's latest report; both times become at most the time of this migration.
UPDATE vms SET received_at = CAST(strftime('%s', 'now') AS REAL)
    WHERE received_at > CAST(strftime('%s', 'now') AS REAL);
UPDATE vms SET ingested_at = received_at;

-- The idempotency ledger is pruned by the engine's receive time, so a relay's clock cannot
-- keep a row forever nor drop it early (and let a replay in).
ALTER TABLE ingested RENAME COLUMN received_at TO ingested_at;
UPDATE ingested SET ingested_at = CAST(strftime('%s', 'now') AS REAL)
    WHERE ingested_at > CAST(strftime('%s', 'now') AS REAL);
CREATE INDEX vms_ingested ON vms (ingested_at);
