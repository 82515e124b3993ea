-- vmdiag store, SQLite, schema version 7: nothing to do. PostgreSQL's schema 7 drops the
-- index on rollups' bucket from its day partitions (its planner could take it for a
-- series' read once the statistics lag); SQLite has no partitions, its retention deletes
-- expired rollups by bucket, and it keeps no statistics the service does not take.
-- Kept so both backends share version numbers.
PRAGMA user_version = 7;
