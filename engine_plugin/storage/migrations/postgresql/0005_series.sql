-- vmdiag store, PostgreSQL, schema version 5: a registry of each VM's series (issue 10
-- follow-up).

-- One row per series a VM has (its metric names in use). Ingest registers a VM's new series
-- here, and refuses new ones beyond [storage] max_series_per_vm; seen_at (engine time) is
-- refreshed at most once a day per series (not indexed, so the update is a HOT one), so
-- retention can drop series nobody reported for longer than rollup retention and then the
-- metric names no series uses. The rows of the data already stored are added by the
-- migration step after this file (``SqlStore._backfill_series``).
CREATE TABLE series (
    vm_key    integer NOT NULL,
    metric_id integer NOT NULL,
    seen_at   double precision NOT NULL,
    PRIMARY KEY (vm_key, metric_id)
);
-- Which names are still used (retention's pruning of metrics).
CREATE INDEX series_metric ON series (metric_id);
INSERT INTO meta (key, value) VALUES ('series_backfill', 'pending');
