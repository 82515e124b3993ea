-- vmdiag store, PostgreSQL, schema version 2: the engine's clock orders reports (issue 10).

-- When this engine stored each VM's latest report (its own clock). Order across agent runs
-- and silence use it; received_at stays the relay's time, clamped to the engine's.
ALTER TABLE vms ADD COLUMN ingested_at double precision;

-- Existing rows: a relay time in the future (a fast or hostile relay clock) no longer pins
-- the VM's latest report; both times become at most the time of this migration.
UPDATE vms SET received_at = extract(epoch FROM now())
    WHERE received_at > extract(epoch FROM now());
UPDATE vms SET ingested_at = received_at;

-- The idempotency ledger is pruned by the engine's receive time, so a relay's clock cannot
-- keep a row forever nor drop it early (and let a replay in).
ALTER TABLE ingested RENAME COLUMN received_at TO ingested_at;
UPDATE ingested SET ingested_at = extract(epoch FROM now())
    WHERE ingested_at > extract(epoch FROM now());
CREATE INDEX vms_ingested ON vms (ingested_at);
