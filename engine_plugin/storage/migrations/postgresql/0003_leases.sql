-- vmdiag store, PostgreSQL, schema version 3: several instances share the work (issue 16).

-- Leases: who does a duty that must run once across service instances (health passes, oVirt
-- event delivery, retention) and until when. The holder renews its lease; expires_at is the
-- database server's clock, so instances with skewed clocks agree. A holder that dies stops
-- renewing and another instance takes the lease once it expired.
CREATE TABLE leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  double precision NOT NULL,
    acquired_at double precision NOT NULL
);

-- The engine receive time of the latest report a verdict was computed from: a VM whose
-- latest report is newer has new data for the health pass, whichever instance stored it.
ALTER TABLE verdicts ADD COLUMN data_through double precision;
