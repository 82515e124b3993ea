-- vmdiag store, PostgreSQL, schema version 7: a series' rollups are read by its key only.

-- A refit reads one VM's series over a week of rollups by (vm_key, metric_id, bucket), the
-- primary key. The index on bucket alone served retention's "rows older than" before schema
-- 4; since then retention drops whole day partitions. But the planner could still pick it:
-- once autovacuum has analysed a day partition, buckets written after that (the roll-up
-- adds every hour) lie beyond its statistics, the bucket range looks empty, and an index scan
-- on bucket looks cheapest. It then walks every VM's rollups of those hours to find one
-- VM's: at 100 VMs, 50 ms of the server for a 2 ms read, and 100 times that at 10,000
-- (docs/storage.md, "Schema"). Keep the index on the default partition only, which
-- retention still reads by time, as schema 6 did for samples.
DROP INDEX rollups_bucket;
CREATE INDEX rollups_default_bucket ON rollups_default (bucket);
