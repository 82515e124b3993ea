-- vmdiag store, SQLite, schema version 6: less work per report (issue 16).

-- Every report rewrites its VM's row in vms (times, run, seq): each index on a changed column
-- is one entry deleted and one inserted. received_at and ingested_at were indexed for range
-- reads that no query makes at fleet scale (vms_with_new_data looks back two minutes at
-- least, which at 10,000 VMs is most of the table), so those indexes go. samples_t stays:
-- SQLite's retention reads raw samples by time.
DROP INDEX vms_received;
DROP INDEX vms_ingested;
