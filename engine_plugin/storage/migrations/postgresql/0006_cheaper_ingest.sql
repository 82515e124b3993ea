-- vmdiag store, PostgreSQL, schema version 6: less server work per report (issue 16).

-- Every report rewrites its VM's row in vms (times, run, seq). With an index on a column the
-- update changes, PostgreSQL writes a new entry into every index of the table and leaves the
-- old row for vacuum; without one it can update in place on the page (a HOT update) when the
-- page has room. received_at and ingested_at were indexed for range reads that no query makes
-- at fleet scale (vms_with_new_data looks back two minutes at least, which at 10,000 VMs is
-- most of the table, so it scans the 10,000 rows either way), so those indexes go, and pages
-- keep room for the new row versions.
DROP INDEX vms_received;
DROP INDEX vms_ingested;
ALTER TABLE vms SET (fillfactor = 50);

-- The same for a VM's latest report: its row (a pointer to the compressed report) is
-- replaced at every report; leave room for the new version on the page.
ALTER TABLE latest_reports SET (fillfactor = 50);

-- The index on samples' time served retention's "rows older than t" before schema 4; since
-- then retention drops whole hour partitions and only the default partition (times no
-- partition covers) is read by time. Every raw sample paid an index entry for it: keep it on
-- the default partition only.
DROP INDEX samples_t;
CREATE INDEX samples_default_t ON samples_default (t);
