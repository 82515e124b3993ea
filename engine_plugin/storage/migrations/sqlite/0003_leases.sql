-- vmdiag store, SQLite, schema version 3: several instances share the work (issue 16).

-- Leases: who does a duty that must run once across service instances and until when (the
-- table is shared with PostgreSQL's schema; one SQLite file serves one instance).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    acquired_at REAL NOT NULL
);

-- The engine receive time of the latest report a verdict was computed from: a VM whose
-- latest report is newer has new data for the health pass.
ALTER TABLE verdicts ADD COLUMN data_through REAL;
