-- vmdiag store, SQLite, schema version 1. Times are Unix seconds (REAL).

-- Small key/value facts of the store itself, e.g. raw_cutoff: samples older than this were
-- already rolled up, so ingest drops late ones instead of double counting them.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per VM: the compact integer key every time-series row uses, plus what the fleet
-- table shows, so a summary never has to read full reports.
CREATE TABLE vms (
    vm_key        INTEGER PRIMARY KEY,
    vm_id         TEXT NOT NULL UNIQUE,
    host_id       TEXT,
    hostname      TEXT,
    agent_version TEXT,
    received_at   REAL,
    report_time   REAL,
    run_id        TEXT,
    seq           INTEGER,
    worst_status  TEXT,
    worst_checks  TEXT
);
CREATE INDEX vms_host ON vms (host_id);
CREATE INDEX vms_received ON vms (received_at);

-- The newest full report of each VM (JSON text), apart from vms so scans of vms stay small.
CREATE TABLE latest_reports (
    vm_key INTEGER PRIMARY KEY,
    report TEXT NOT NULL
);

-- Idempotency ledger: one row per report ever accepted, within raw retention.
CREATE TABLE ingested (
    vm_key      INTEGER NOT NULL,
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (vm_key, run_id, seq)
) WITHOUT ROWID;
CREATE INDEX ingested_received ON ingested (received_at);

-- Metric-name dictionary: samples carry a small integer instead of the name.
CREATE TABLE metrics (
    metric_id INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE
);

-- Raw samples. WITHOUT ROWID makes the primary key the table itself: a clustered, covering
-- index, so one series over a time range is one contiguous range read.
CREATE TABLE samples (
    vm_key    INTEGER NOT NULL,
    metric_id INTEGER NOT NULL,
    t         REAL NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (vm_key, metric_id, t)
) WITHOUT ROWID;
-- Retention walks raw samples by time.
CREATE INDEX samples_t ON samples (t);

-- 5-minute rollups of expired raw samples; bucket is the start of the 5 minutes.
CREATE TABLE rollups (
    vm_key    INTEGER NOT NULL,
    metric_id INTEGER NOT NULL,
    bucket    REAL NOT NULL,
    v_avg     REAL NOT NULL,
    v_min     REAL NOT NULL,
    v_max     REAL NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (vm_key, metric_id, bucket)
) WITHOUT ROWID;
CREATE INDEX rollups_bucket ON rollups (bucket);

-- Health verdict per VM, as the health pass last stored it (JSON text).
CREATE TABLE verdicts (
    vm_key     INTEGER PRIMARY KEY,
    verdict    TEXT NOT NULL,
    updated_at REAL NOT NULL
);

-- What was last raised as an oVirt event under a key, so a steady state raises nothing new.
CREATE TABLE event_states (
    key        TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_states_updated ON event_states (updated_at);
