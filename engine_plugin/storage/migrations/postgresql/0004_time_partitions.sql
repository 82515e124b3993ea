-- vmdiag store, PostgreSQL, schema version 4: time series partitioned by time (issue 16).

-- Raw samples by hour and rollups by day, so retention drops whole partitions instead of
-- deleting rows. The service (PostgresStore) creates the partitions: the ones the existing
-- rows need right after this migration, in the same transaction, which then moves the rows
-- over and drops the unpartitioned tables; then every retention pass the ones coming up.
-- Rows outside every partition (a guest clock far ahead) land in the default partitions.
ALTER TABLE samples RENAME TO samples_unpartitioned;
ALTER TABLE samples_unpartitioned RENAME CONSTRAINT samples_pkey TO samples_unpartitioned_pkey;
ALTER INDEX samples_t RENAME TO samples_unpartitioned_t;
ALTER TABLE rollups RENAME TO rollups_unpartitioned;
ALTER TABLE rollups_unpartitioned RENAME CONSTRAINT rollups_pkey TO rollups_unpartitioned_pkey;
ALTER INDEX rollups_bucket RENAME TO rollups_unpartitioned_bucket;

CREATE TABLE samples (
    vm_key    integer NOT NULL,
    metric_id integer NOT NULL,
    t         double precision NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (vm_key, metric_id, t) INCLUDE (value)
) PARTITION BY RANGE (t);
CREATE INDEX samples_t ON samples (t);
CREATE TABLE samples_default PARTITION OF samples DEFAULT;

CREATE TABLE rollups (
    vm_key    integer NOT NULL,
    metric_id integer NOT NULL,
    bucket    double precision NOT NULL,
    v_avg     double precision NOT NULL,
    v_min     double precision NOT NULL,
    v_max     double precision NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (vm_key, metric_id, bucket) INCLUDE (v_avg, v_min, v_max, n)
) PARTITION BY RANGE (bucket);
CREATE INDEX rollups_bucket ON rollups (bucket);
CREATE TABLE rollups_default PARTITION OF rollups DEFAULT;
