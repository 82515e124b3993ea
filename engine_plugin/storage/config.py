"""What the service tells the store: where the database is and how long data lives."""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600.0
DAY = 24 * HOUR

#: Width of a rollup bucket in seconds; the "5m" resolution of ``Store.history``.
ROLLUP_STEP = 300.0
#: The roll-up ahead of retention (``Store.roll_up``) rolls an hour of raw samples once it
#: has been closed this long (reports arrive up to a relay's batch interval and retries late).
ROLLUP_GRACE_S = 300.0


@dataclass(frozen=True)
class StorageConfig:
    """Store settings; the defaults are the documented ones (docs/storage.md).

    ``pool_size`` bounds the PostgreSQL connection pool (the service calls the store from a
    thread executor, so more connections than executor threads buy nothing).
    ``max_series_per_vm``: most series (metric names) one VM may have; samples of new ones
    beyond it are dropped and counted (``series.py``).
    """

    url: str = "sqlite:////var/lib/vmdiag/vmdiag.db"
    raw_retention_s: float = 48 * HOUR
    rollup_retention_s: float = 30 * DAY
    vm_retention_s: float = 30 * DAY
    pool_size: int = 4
    busy_timeout_s: float = 30.0
    max_series_per_vm: int = 5000

    def __post_init__(self) -> None:
        for name in ("raw_retention_s", "rollup_retention_s", "vm_retention_s"):
            if getattr(self, name) <= 0:
                raise ValueError("StorageConfig.%s must be above 0 seconds" % name)
        if self.rollup_retention_s < self.raw_retention_s:
            raise ValueError("StorageConfig.rollup_retention_s (%s) must not be shorter than "
                             "raw_retention_s (%s): rollups are made from expiring raw samples"
                             % (self.rollup_retention_s, self.raw_retention_s))
        if self.pool_size < 1:
            raise ValueError("StorageConfig.pool_size must be at least 1")
        if self.max_series_per_vm < 1:
            raise ValueError("StorageConfig.max_series_per_vm must be at least 1")
