"""PostgreSQL backend (psycopg 3 and psycopg_pool), for large fleets or several service instances.

Every instance may ingest at once: the ledger insert (``ON CONFLICT DO NOTHING RETURNING``)
tells each transaction which reports are really new, rows are written in key order so two
instances cannot deadlock on them (a deadlock or serialization failure is retried anyway), and
the "is it newer" check is part of the UPDATE that replaces a VM's latest report. Migrations
and retention take advisory locks, so instances starting together or running retention at the
same hour do the work once. Batches go in as arrays (``unnest``): one statement per table.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Sequence, Set, Tuple, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from .config import StorageConfig
from .errors import SchemaTooNew, StorageError, StoreClosed
from .incoming import Incoming
from .schema import CREATE_VERSIONS_TABLE, load_migrations
from .sqlstore import NEWER_SQL, LedgerKey, SqlStore, Tx

T = TypeVar("T")

#: pg_advisory_lock keys ("vmdiag" in ASCII, then a number per purpose).
MIGRATE_LOCK = 0x766D64696167_0001
RETENTION_LOCK = 0x766D64696167_0002
#: Attempts of a write transaction that hit a deadlock or serialization failure.
WRITE_ATTEMPTS = 5

_SQL_CACHE: Dict[str, str] = {}


def _pg(sql: str) -> str:
    """Translate the shared ``?`` placeholders to psycopg's ``%s``."""
    out = _SQL_CACHE.get(sql)
    if out is None:
        out = _SQL_CACHE[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


def describe_url(url: str) -> str:
    """The connection target without its password, for error messages and logs."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable PostgreSQL URL>"
    params.pop("password", None)
    return " ".join("%s=%s" % (k, v) for k, v in sorted(params.items()))


class _PgTx(Tx):
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def cursor(self) -> psycopg.Cursor[Any]:
        return self._cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(_pg(sql), params)
        return self._cur.rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(_pg(sql), rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        self._cur.execute(_pg(sql), params)
        return self._cur.fetchall()


class PostgresStore(SqlStore):
    """``postgresql://user@host/dbname`` (any libpq URL or conninfo)."""

    backend = "postgresql"
    # DataError: a value beyond a column's type (bigint out of range), a NUL in text...
    _data_errors = (OverflowError, psycopg.DataError, UnicodeEncodeError)
    _least = "least"
    _greatest = "greatest"
    _now_sql = "extract(epoch FROM clock_timestamp())::float8"

    def __init__(self, config: StorageConfig) -> None:
        super().__init__(config)
        self._target = describe_url(config.url)
        self._closed = False
        self._pool = ConnectionPool(config.url, min_size=1, max_size=config.pool_size,
                                    kwargs={"autocommit": True}, open=False,
                                    name="vmdiag-store", timeout=config.busy_timeout_s)
        try:
            self._pool.open(wait=True, timeout=config.busy_timeout_s)
        except Exception as err:
            self._pool.close()
            raise StorageError("cannot connect to PostgreSQL (%s): %s; check [storage] url, "
                               "that the server runs and that pg_hba.conf admits this user"
                               % (self._target, err)) from err

    # -- transactions -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store was closed; open a new one")

    def _write(self, work: Callable[[Tx], T]) -> T:
        self._check_open()
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn, conn.transaction(), \
                        conn.cursor() as cur:
                    return work(_PgTx(cur))
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    def _read(self, work: Callable[[Tx], T], snapshot: bool = False) -> T:
        self._check_open()
        with self._pool.connection() as conn:
            if not snapshot:
                with conn.cursor() as cur:
                    return work(_PgTx(cur))
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return work(_PgTx(cur))

    @contextmanager
    def _retention_guard(self) -> Iterator[bool]:
        # A session lock on its own connection: the retention steps run on pool connections,
        # and must not wait for the connection that holds the lock.
        self._check_open()
        with psycopg.connect(self.config.url, autocommit=True) as conn:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (RETENTION_LOCK,)).fetchone()
            allowed = bool(got and got[0])
            try:
                yield allowed
            finally:
                if allowed:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK,))

    # -- dialect ----------------------------------------------------------------------------

    def _in(self, column: str, values: Sequence[Any]) -> Tuple[str, List[Any]]:
        return "%s = ANY(?)" % column, [list(values)]

    def _bucket(self, column: str) -> str:
        return "floor(%s / 300) * 300" % column

    def _insert_ledger(self, tx: Tx, rows: List[Tuple[int, str, int, float]]) -> Set[LedgerKey]:
        if not rows:
            return set()
        cols = [list(c) for c in zip(*rows)]
        found = tx.fetchall(
            "INSERT INTO ingested (vm_key, run_id, seq, ingested_at)"
            " SELECT * FROM unnest(?::int4[], ?::text[], ?::int8[], ?::float8[])"
            " ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING RETURNING vm_key, run_id, seq", cols)
        return {(r[0], r[1], r[2]) for r in found}

    def _insert_samples(self, tx: Tx, rows: List[Tuple[int, int, float, float]]) -> None:
        if not rows:
            return
        assert isinstance(tx, _PgTx)
        try:
            # COPY is 2-3 times faster than INSERT ... ON CONFLICT; a point that exists
            # already (a report re-sent under a new seq) is rare, and then the savepoint
            # rolls the COPY back and the careful statement runs instead.
            with tx.cursor.connection.transaction(), tx.cursor.copy(
                    "COPY samples (vm_key, metric_id, t, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", "int4", "float8", "float8"])
                for row in rows:
                    copy.write_row(row)
        except pg_errors.UniqueViolation:
            tx.execute("INSERT INTO samples (vm_key, metric_id, t, value)"
                       " SELECT * FROM unnest(?::int4[], ?::int4[], ?::float8[], ?::float8[])"
                       " ON CONFLICT DO NOTHING", [list(c) for c in zip(*rows)])

    def _update_latests(self, tx: Tx, items: List[Tuple[int, Incoming]]) -> None:
        """All VMs of a batch in three statements: lock their rows in key order (two
        instances updating the same VMs then queue instead of deadlocking), update those
        whose report is newer (the rule of ``incoming.is_newer``), store those reports."""
        if not items:
            return
        items = sorted(items, key=lambda pair: pair[0])
        keys = [vm_key for vm_key, _ in items]
        tx.execute("SELECT vm_key FROM vms WHERE vm_key = ANY(?) ORDER BY vm_key FOR UPDATE",
                   (keys,))
        cols: List[List[Any]] = [keys]
        for field in ("host_id", "hostname", "agent_version", "received_at", "report_time",
                      "run_id", "seq", "worst_status", "worst_checks", "ingested_at"):
            cols.append([getattr(item, field) for _, item in items])
        newer = NEWER_SQL.format(v="vms.").replace("?", "n.%s") % (
            "run_id", "seq", "run_id", "ingested_at", "ingested_at", "received_at")
        changed = {r[0] for r in tx.fetchall(
            "UPDATE vms SET host_id = n.host_id, hostname = COALESCE(n.hostname, vms.hostname),"
            " agent_version = COALESCE(n.agent_version, vms.agent_version),"
            " received_at = n.received_at, report_time = n.report_time, run_id = n.run_id,"
            " seq = n.seq, worst_status = COALESCE(n.worst_status, vms.worst_status),"
            " worst_checks = COALESCE(n.worst_checks, vms.worst_checks),"
            " ingested_at = n.ingested_at"
            " FROM unnest(?::int4[], ?::text[], ?::text[], ?::text[], ?::float8[],"
            " ?::float8[], ?::text[], ?::int8[], ?::text[], ?::text[], ?::float8[])"
            " AS n(vm_key, host_id, hostname, agent_version, received_at, report_time, run_id,"
            " seq, worst_status, worst_checks, ingested_at)"
            " WHERE vms.vm_key = n.vm_key AND (" + newer + ") RETURNING vms.vm_key", cols)}
        # executemany (pipelined), not an array: quoting 10 MB of JSON into an array literal
        # costs more than the whole insert.
        tx.executemany("INSERT INTO latest_reports (vm_key, report) VALUES (?, ?)"
                       " ON CONFLICT (vm_key) DO UPDATE SET report = excluded.report",
                       [(vm_key, item.report_json()) for vm_key, item in items
                        if vm_key in changed])

    def _insert_rollups(self, tx: Tx,
                        rows: List[Tuple[int, int, float, float, float, float, int]]) -> None:
        if rows:
            tx.execute("INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
                       " SELECT * FROM unnest(?::int4[], ?::int4[], ?::float8[], ?::float8[],"
                       " ?::float8[], ?::float8[], ?::int8[]) ON CONFLICT DO NOTHING",
                       [list(c) for c in zip(*rows)])

    def _roll(self, tx: Tx, end: float) -> Tuple[int, int]:
        # One statement: exactly the rows deleted are the rows rolled, whatever commits
        # concurrently.
        row = tx.fetchone(
            "WITH moved AS (DELETE FROM samples WHERE t < ?"
            "  RETURNING vm_key, metric_id, t, value),"
            " ins AS (INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
            "  SELECT vm_key, metric_id, floor(t / 300) * 300, avg(value), min(value),"
            "  max(value), count(*) FROM moved GROUP BY 1, 2, 3"
            "  ON CONFLICT (vm_key, metric_id, bucket) DO UPDATE SET"
            "  v_avg = (rollups.v_avg * rollups.n + excluded.v_avg * excluded.n)"
            "   / (rollups.n + excluded.n),"
            "  v_min = least(rollups.v_min, excluded.v_min),"
            "  v_max = greatest(rollups.v_max, excluded.v_max), n = rollups.n + excluded.n"
            "  RETURNING 1)"
            " SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM ins)", (end,))
        assert row is not None
        return int(row[0]), int(row[1])

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> int:
        migrations = load_migrations("postgresql")

        def work(tx: Tx) -> int:
            # Serialises instances starting at once; released at commit.
            tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
            tx.execute(CREATE_VERSIONS_TABLE)
            applied = {r[0] for r in tx.fetchall("SELECT version FROM schema_migrations")}
            newest = max(applied, default=0)
            if newest > len(migrations):
                raise SchemaTooNew("the database (%s) has schema version %d but this vmdiag "
                                   "knows only up to %d; upgrade vmdiag on this machine"
                                   % (self._target, newest, len(migrations)))
            for migration in migrations:
                if migration.version not in applied:
                    for statement in migration.statements:
                        tx.execute(statement)
                    tx.execute("INSERT INTO schema_migrations (version, name, applied_at)"
                               " VALUES (?, ?, ?)",
                               (migration.version, migration.name, time.time()))
            self._prefer_lz4(tx)
            return len(migrations)
        return self._write(work)

    @staticmethod
    def _prefer_lz4(tx: Tx) -> None:
        """Compress stored reports with lz4 (PostgreSQL 14+ built with lz4) instead of pglz:
        several times cheaper per report written. Optional, so it is no migration: servers
        without lz4 keep pglz."""
        assert isinstance(tx, _PgTx)
        try:
            with tx.cursor.connection.transaction():
                row = tx.fetchone("SELECT attcompression FROM pg_attribute WHERE attrelid ="
                                  " 'latest_reports'::regclass AND attname = 'report'")
                if row is not None and row[0] != "l":
                    tx.execute("ALTER TABLE latest_reports ALTER COLUMN report"
                               " SET COMPRESSION lz4")
        except (pg_errors.UndefinedColumn, pg_errors.FeatureNotSupported,
                pg_errors.SyntaxError, pg_errors.InvalidParameterValue):
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
