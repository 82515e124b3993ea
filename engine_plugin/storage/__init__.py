"""Engine-side storage: latest reports, metric time series, verdicts and event state.

::

    from engine_plugin.storage import open_store
    store = open_store("sqlite:////var/lib/vmdiag/vmdiag.db")   # or postgresql://user@host/db
    store.migrate()
    store.ingest(envelopes)

Two backends share one interface (``Store``) and one test suite; docs/storage.md describes
the schema, retention and running several service instances on one PostgreSQL database.
"""

from __future__ import annotations

from typing import Union

from .config import ROLLUP_STEP, StorageConfig
from .errors import SchemaTooNew, StorageError, StoreClosed, UnsupportedUrl
from .records import IngestResult, LatestReport, VmSummaryRow
from .store import Store

__all__ = ["open_store", "Store", "StorageConfig", "IngestResult", "LatestReport",
           "VmSummaryRow", "StorageError", "SchemaTooNew", "StoreClosed", "UnsupportedUrl",
           "ROLLUP_STEP"]


def open_store(config: Union[str, StorageConfig]) -> Store:
    """A store for a URL or a ``StorageConfig``; call ``migrate()`` before first use.

    The PostgreSQL driver is imported only for ``postgresql://`` URLs, so SQLite installs do
    not need psycopg.
    """
    if isinstance(config, str):
        config = StorageConfig(url=config)
    url = config.url
    if url.startswith("sqlite:"):
        from .sqlite_store import SqliteStore
        return SqliteStore(config)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore
        return PostgresStore(config)
    raise UnsupportedUrl("unknown store URL %r; use sqlite:////absolute/path.db or "
                         "postgresql://user@host/dbname" % url)
