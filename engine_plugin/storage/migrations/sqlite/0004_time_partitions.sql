-- vmdiag store, SQLite, schema version 4: nothing to do. PostgreSQL's schema 4 partitions
-- the time series by time; SQLite has no partitions and keeps deleting expired rows
-- (docs/storage.md, "Retention and resolution"). Kept so both backends share version numbers.
PRAGMA user_version = 4;
