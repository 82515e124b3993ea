"""PostgreSQL backend (psycopg 3 and psycopg_pool), for large fleets or several service instances.

Every instance may ingest at once: the ledger insert (``ON CONFLICT DO NOTHING RETURNING``)
tells each transaction which reports are really new, rows are written in key order so two
instances cannot deadlock on them (a deadlock or serialization failure is retried anyway), and
the "is it newer" check is part of the UPDATE that replaces a VM's latest report. Migrations
and retention take advisory locks, so instances starting together or running retention at the
same hour do the work once. Batches go in as arrays (``unnest``): one statement per table.
"""

from __future__ import annotations

import functools
import math
import random
import re
import struct
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Sequence, Set, Tuple, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from .config import ROLLUP_GRACE_S, ROLLUP_STEP, StorageConfig
from .errors import StorageError, StoreClosed
from .incoming import Incoming
from .schema import apply_migrations, load_migrations
from .series import REFRESH_S
from .sqlstore import NEWER_SQL, LedgerKey, SqlStore, Tx, bucket_of

T = TypeVar("T")

#: Rolled-up buckets merged into ``rollups``: weighted mean, extremes and counts combined.
_MERGE_INTO_ROLLUPS = (
    "  ON CONFLICT (vm_key, metric_id, bucket) DO UPDATE SET"
    "  v_avg = (rollups.v_avg * rollups.n + excluded.v_avg * excluded.n)"
    "   / (rollups.n + excluded.n),"
    "  v_min = least(rollups.v_min, excluded.v_min),"
    "  v_max = greatest(rollups.v_max, excluded.v_max), n = rollups.n + excluded.n")

#: pg_advisory_lock keys ("vmdiag" in ASCII, then a number per purpose).
MIGRATE_LOCK = 0x766D64696167_0001
RETENTION_LOCK = 0x766D64696167_0002
#: Held (per transaction) by whoever rolls raw samples into rollups: a roll-up step or the
#: retention pass, so the two never aggregate the same rows.
ROLLUP_LOCK = 0x766D64696167_0003
#: Attempts of a write transaction that hit a deadlock or serialization failure.
WRITE_ATTEMPTS = 5

#: Time partitions (schema 4): raw samples by the hour, rollups by the day, or narrower when
#: a retention is short (a twelfth of it, in whole 5-minute buckets, so a bucket never spans
#: two partitions). Retention drops whole partitions, so data outlives its retention by up to
#: one partition width.
SAMPLE_PARTITION_S = 3600.0
ROLLUP_PARTITION_S = 86400.0
#: Partitions created ahead of the current one.
AHEAD = 3
#: Continuous roll-up (``roll_up``): an hour partition is rolled once it has been closed
#: ``ROLLUP_GRACE_S``, in transactions of this many VMs each (an index range of the primary
#: key), so no transaction is long: at 59 series a minute, 100 VMs are 354,000 samples an
#: hour, about 4 s (docs/storage.md).
ROLLUP_CHUNK_VMS = 100
#: ``meta`` rows of the roll-up's progress, one per hour partition it has started:
#: ``rolled:<start>`` = "<end> <vm_key>": that partition's raw samples of VMs up to
#: ``vm_key`` are in rollups (``ALL_KEYS``: all). Written in the transaction that rolls, deleted
#: in the one that drops the partition. Such rollups are not shown while their raw samples are
#: kept (``_visible_rollups``).
ROLLED_PREFIX = "rolled:"
NO_KEY = -1
ALL_KEYS = 2**31 - 1
#: (start, end, vm_key) of a partition the roll-up has started.
Rolled = Tuple[float, float, int]
#: Creating or dropping a partition locks its parent table exclusively for a moment; one that
#: would wait longer than this for a long query gives up, and the next pass tries again (a
#: waiting exclusive lock would hold every new query behind it).
PARTITION_LOCK_TIMEOUT_S = 5


def partition_widths(config: StorageConfig) -> Dict[str, float]:
    """Width in seconds of the time partitions of ``samples`` and ``rollups``."""
    def width(longest: float, retention: float) -> float:
        return max(ROLLUP_STEP, math.floor(min(longest, retention / 12) / ROLLUP_STEP)
                   * ROLLUP_STEP)
    return {"samples": width(SAMPLE_PARTITION_S, config.raw_retention_s),
            "rollups": width(ROLLUP_PARTITION_S, config.rollup_retention_s)}


def missing_partitions(start: float, end: float, width: float,
                       existing: Sequence[Tuple[str, float, float]]) -> List[Tuple[float, float]]:
    """Ranges to create so that ``[start, end)`` is covered: steps of ``width`` (multiples of
    it), less what the ``existing`` partitions (name, start, end; sorted) cover. After a
    retention change the existing ones may have another width: a step they cover in part
    gets a partition for each uncovered piece. Every bound stays a multiple of 5 minutes
    (widths are), so a bucket never spans two partitions."""
    out: List[Tuple[float, float]] = []
    low = start
    while low < end:
        high = low + width
        piece = low
        for _, a, b in existing:
            if b <= piece or a >= high:
                continue
            if a > piece:
                out.append((piece, a))
            piece = max(piece, b)
        if piece < high:
            out.append((piece, high))
        low = high
    return out


_BOUND = re.compile(r"FROM \('?([-0-9.e+]+)'?\) TO \('?([-0-9.e+]+)'?\)")

_SQL_CACHE: Dict[str, str] = {}

#: COPY's binary format (PostgreSQL docs, "COPY", "Binary Format"): a header, per row the field
#: count and each field as its length and value in network order, a trailer. A sample row is
#: (int4 vm_key, int4 metric_id, float8 t, float8 value).
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_SAMPLE_ROW = struct.Struct("!hiiiiidid")


def copy_samples_data(rows: Sequence[Tuple[int, int, float, float]]) -> bytes:
    """The whole binary COPY stream of sample rows: packed with one ``struct`` call a row,
    several times cheaper than psycopg's ``write_row`` (which adapts each value by its type)."""
    pack = _SAMPLE_ROW.pack
    return b"".join([_COPY_HEADER] + [pack(4, 4, vm_key, 4, metric_id, 8, t, 8, value)
                                      for vm_key, metric_id, t, value in rows]
                    + [_COPY_TRAILER])


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

    def fetchnumbers(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        # binary results: a float8 is sent as its 8 bytes, not printed by the server and
        # parsed here (a third to a half of the client's CPU of a history read's rows)
        self._cur.execute(_pg(sql), params, binary=True)
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

    # -- retention by partitions (schema 4) ------------------------------------------------

    def apply_retention(self, now: float) -> Dict[str, int]:
        """Whole partitions: each hour of raw samples past raw retention is rolled into
        rollups with one aggregate over its partition and the partition dropped; a day of
        rollups past rollup retention is dropped. Only rows of the default partitions (times
        no partition covers) are deleted one by one. Data therefore outlives its retention by
        up to one partition width (``partition_widths``)."""
        if not self._read(lambda tx: self._is_partitioned(tx, "samples")):
            return super().apply_retention(now)  # a store not migrated to schema 4
        cfg = self.config
        stats = {"raw_rolled": 0, "rollups_written": 0, "rollups_deleted": 0,
                 "ledger_pruned": 0, "vms_removed": 0, "event_states_pruned": 0, "skipped": 0,
                 "partitions_dropped": 0, "partitions_created": 0, "lock_timeouts": 0,
                 "partitions_rolled_before": 0,
                 "roll_ms": 0, "drop_ms": 0, "create_ms": 0, "prune_ms": 0}
        width = partition_widths(cfg)["samples"]
        raw_cutoff = math.floor(bucket_of(now - cfg.raw_retention_s) / width) * width
        rollup_cutoff = now - cfg.rollup_retention_s
        with self._retention_guard() as allowed:
            if not allowed:
                stats["skipped"] = 1
                return stats
            try:
                self._retention_partitions(now, raw_cutoff, rollup_cutoff, stats)
            except pg_errors.LockNotAvailable:
                # a long query held a table: what is left is done by the next pass
                stats["lock_timeouts"] = 1
            started = time.perf_counter()
            self._prune(now, raw_cutoff, stats)
            stats["prune_ms"] = int(1000 * (time.perf_counter() - started))
        return stats

    def _retention_partitions(self, now: float, raw_cutoff: float, rollup_cutoff: float,
                              stats: Dict[str, int]) -> None:
        started = time.perf_counter()
        for name, start, end in self._read(lambda tx: self._partitions(tx, "samples")):
            if end > raw_cutoff:
                break
            moved, written = self._write(functools.partial(
                self._roll_partition, name=name, start=start, end=end))
            stats["raw_rolled"] += moved
            stats["rollups_written"] += written
            stats["partitions_dropped"] += 1
            stats["partitions_rolled_before"] += moved == 0
        moved, written = self._write(lambda tx: self._roll_default(tx, raw_cutoff))
        stats["raw_rolled"] += moved
        stats["rollups_written"] += written
        stats["roll_ms"] = int(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        for name, _, end in self._read(lambda tx: self._partitions(tx, "rollups")):
            if end > rollup_cutoff:
                break
            stats["rollups_deleted"] += self._write(
                functools.partial(self._drop_partition, name=name))
            stats["partitions_dropped"] += 1
        stats["rollups_deleted"] += self._write(lambda tx: tx.execute(
            "DELETE FROM rollups_default WHERE bucket < ?", (rollup_cutoff,)))
        stats["drop_ms"] = int(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        stats["partitions_created"] = self._write(lambda tx: self._ensure_partitions(
            tx, now, {"samples": raw_cutoff, "rollups": rollup_cutoff}))
        stats["create_ms"] = int(1000 * (time.perf_counter() - started))

    def _roll_partition(self, tx: Tx, name: str, start: float, end: float) -> Tuple[int, int]:
        """Drop one expired hour of raw samples, rolling into rollups first whatever of it the
        continuous roll-up (``roll_up``) has not rolled yet: normally nothing."""
        # SHARE: ingest (which inserts) waits, readers do not; from this commit on ingest
        # drops samples older than ``end`` (raw_cutoff) instead of re-creating them.
        tx.execute("SET LOCAL lock_timeout = '%ds'" % PARTITION_LOCK_TIMEOUT_S)
        tx.execute("SELECT pg_advisory_xact_lock(?)", (ROLLUP_LOCK,))
        tx.execute("LOCK TABLE %s IN SHARE MODE" % name)
        current = self._raw_cutoff(tx)
        if current is None or end > current:
            self._set_meta(tx, "raw_cutoff", repr(end))
        done = {r[0]: r for r in self._rolled(tx)}.get(start)
        after = done[2] if done is not None and done[1] == end else NO_KEY
        moved = written = 0
        if after < ALL_KEYS:
            moved, written = self._roll_keys(tx, name, after, ALL_KEYS)
        tx.execute("DELETE FROM meta WHERE key = ?", (ROLLED_PREFIX + repr(start),))
        tx.execute("DROP TABLE %s" % name)
        return moved, written

    def _roll_keys(self, tx: Tx, name: str, after: int, upto: int) -> Tuple[int, int]:
        """Roll the samples of partition ``name`` of VMs ``after < vm_key <= upto`` into
        rollups, merging with what a bucket holds; (samples rolled, rollup rows written)."""
        row = tx.fetchone(
            "WITH agg AS (SELECT vm_key, metric_id, " + self._bucket("t") + " AS b,"
            "  avg(value) AS a, min(value) AS lo, max(value) AS hi, count(*) AS n"
            "  FROM " + name + " WHERE vm_key > ? AND vm_key <= ? GROUP BY 1, 2, 3),"
            " ins AS (INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
            "  SELECT vm_key, metric_id, b, a, lo, hi, n FROM agg"
            + _MERGE_INTO_ROLLUPS +
            "  RETURNING 1)"
            " SELECT (SELECT coalesce(sum(n), 0) FROM agg), (SELECT count(*) FROM ins)",
            (after, upto))
        assert row is not None
        return int(row[0]), int(row[1])

    @staticmethod
    def _rolled(tx: Tx) -> List[Rolled]:
        """The roll-up's progress per partition, oldest first."""
        out = []
        for key, value in tx.fetchall("SELECT key, value FROM meta WHERE key LIKE ?",
                                      (ROLLED_PREFIX + "%",)):
            end, vm_key = value.split()
            out.append((float(key[len(ROLLED_PREFIX):]), float(end), int(vm_key)))
        return sorted(out)

    # -- continuous roll-up -------------------------------------------------------------------

    def roll_up(self, now: float, budget_s: float = 30.0) -> Dict[str, int]:
        """Roll closed hour partitions of raw samples into rollups ahead of retention, in
        transactions of ``ROLLUP_CHUNK_VMS`` VMs, until nothing is due or ``budget_s`` is
        spent; the leader calls it every minute. Idempotent and safe beside ingest, another
        instance's roll-up and the retention pass: each step takes ``ROLLUP_LOCK``, reads the
        progress (``ROLLED_PREFIX`` rows) and records its own in the same transaction. The
        retention pass then only drops partitions. Raw samples stay (queries show them, not
        these rollups, until retention); a sample arriving late for a rolled part is merged
        into its rollup by the ingest that stores it (``_merge_late``)."""
        stats = {"rolled": 0, "rollups_written": 0, "steps": 0, "partitions_done": 0,
                 "lock_timeouts": 0, "roll_ms": 0}
        if not self._read(lambda tx: self._is_partitioned(tx, "samples")):
            return stats
        started = time.perf_counter()
        while time.perf_counter() - started < budget_s:
            try:
                step = self._write(lambda tx: self._roll_up_step(tx, now))
            except pg_errors.LockNotAvailable:
                stats["lock_timeouts"] += 1
                break
            if step is None:
                break
            stats["steps"] += 1
            stats["rolled"] += step[0]
            stats["rollups_written"] += step[1]
            stats["partitions_done"] += step[2]
        stats["roll_ms"] = int(1000 * (time.perf_counter() - started))
        return stats

    def _roll_up_step(self, tx: Tx, now: float) -> Tuple[int, int, int] | None:
        """One chunk of VMs of the oldest closed partition not rolled yet; None if none."""
        tx.execute("SET LOCAL lock_timeout = '%ds'" % PARTITION_LOCK_TIMEOUT_S)
        tx.execute("SELECT pg_advisory_xact_lock(?)", (ROLLUP_LOCK,))
        done = {start: (end, key) for start, end, key in self._rolled(tx)}
        cutoff = self._raw_cutoff(tx)
        for name, start, end in self._partitions(tx, "samples"):
            if end > now - ROLLUP_GRACE_S:
                return None
            if cutoff is not None and end <= cutoff:
                continue  # expired: the retention pass rolls what is left and drops it
            after = done[start][1] if start in done and done[start][0] == end else NO_KEY
            if after >= ALL_KEYS:
                continue
            row = tx.fetchone("SELECT vm_key FROM vms WHERE vm_key > ? ORDER BY vm_key"
                              " LIMIT 1 OFFSET ?", (after, ROLLUP_CHUNK_VMS - 1))
            upto = int(row[0]) if row else ALL_KEYS
            # SHARE: an ingest writing into this hour (a late report) finishes first
            tx.execute("LOCK TABLE %s IN SHARE MODE" % name)
            moved, written = self._roll_keys(tx, name, after, upto)
            self._set_meta(tx, ROLLED_PREFIX + repr(start), "%r %d" % (end, upto))
            return moved, written, int(upto == ALL_KEYS)
        return None

    def _merge_late(self, tx: Tx, rows: List[Tuple[int, int, float, float]]) -> None:
        """Samples just stored that the roll-up had already rolled past (a late report, an
        import): merge them into their rollups too. The progress is read after the samples
        are written: a roll-up step of their partition either committed before they were
        (then it is seen here) or waits for this transaction in its SHARE lock (and then
        rolls them itself)."""
        if not rows:
            return
        done = [r for r in self._rolled(tx) if r[2] > NO_KEY]
        if not done:
            return
        lowest = done[0][0]
        late: Dict[Tuple[int, int, float], List[float]] = {}
        for vm_key, metric_id, t, value in rows:
            if t < lowest:
                continue
            for start, end, upto in done:
                if start <= t < end:
                    if vm_key <= upto:
                        late.setdefault((vm_key, metric_id, bucket_of(t)), []).append(value)
                    break
        if not late:
            return
        cols: List[List[Any]] = [[], [], [], [], [], [], []]
        for (vm_key, metric_id, bucket), values in sorted(late.items()):
            for col, value in zip(cols, (vm_key, metric_id, bucket,
                                         math.fsum(values) / len(values), min(values),
                                         max(values), len(values))):
                col.append(value)
        tx.execute("INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
                   " SELECT * FROM unnest(?::int4[], ?::int4[], ?::float8[], ?::float8[],"
                   " ?::float8[], ?::float8[], ?::int8[])" + _MERGE_INTO_ROLLUPS, cols)

    def _rolled_span(self, tx: Tx) -> Tuple[float, float] | None:
        """The hour partitions the continuous roll-up (``roll_up``) rolled whole, from the
        oldest, while they follow one another without a gap."""
        full = [(start, end) for start, end, upto in self._rolled(tx) if upto >= ALL_KEYS]
        if not full:
            return None
        first = rolled = full[0][0]
        for start, end in full:
            if start > rolled:
                break
            rolled = max(rolled, end)
        return first, rolled

    def _visible_rollups(self, tx: Tx) -> Tuple[str, List[Any]]:
        """SQL condition (on ``bucket`` and ``vm_key``) for rollups queries may show: not
        those the continuous roll-up wrote for raw samples still kept."""
        ranges: List[List[Any]] = []
        for start, end, upto in self._rolled(tx):
            if upto <= NO_KEY:
                continue
            if ranges and ranges[-1][1] == start and ranges[-1][2] == upto == ALL_KEYS:
                ranges[-1][1] = end  # contiguous whole hours: one range
            else:
                ranges.append([start, end, upto])
        if not ranges:
            return "1 = 1", []
        sql = " AND ".join("NOT (bucket >= ? AND bucket < ? AND vm_key <= ?)" for _ in ranges)
        return sql, [value for r in ranges for value in r]

    def _roll_default(self, tx: Tx, end: float) -> Tuple[int, int]:
        """Rows of the default partition older than ``end``, the row way (normally none)."""
        moved = self._roll(tx, end, "samples_default")
        current = self._raw_cutoff(tx)
        if current is None or end > current:
            self._set_meta(tx, "raw_cutoff", repr(end))
        return moved

    @staticmethod
    def _drop_partition(tx: Tx, name: str) -> int:
        """Drop an expired partition of rollups; return its rows: the planner's estimate
        (counting a day of a large fleet would read it all), counted if it has none yet."""
        tx.execute("SET LOCAL lock_timeout = '%ds'" % PARTITION_LOCK_TIMEOUT_S)
        row = tx.fetchone("SELECT reltuples FROM pg_class WHERE oid = to_regclass(?)", (name,))
        rows = int(row[0]) if row and row[0] is not None else -1
        if rows < 0:  # never analysed
            counted = tx.fetchone("SELECT count(*) FROM %s" % name)
            rows = int(counted[0]) if counted else 0
        tx.execute("DROP TABLE %s" % name)
        return rows

    # -- dialect ----------------------------------------------------------------------------

    _lock_timeouts = (pg_errors.LockNotAvailable,)

    def _lock_names(self, tx: Tx) -> None:
        # SHARE ROW EXCLUSIVE waits for, and holds off, every INSERT into metrics: ingest
        # inserts a VM's names before it registers its series, so no series is registered
        # on a name this transaction drops. Ingest of known series does not touch metrics.
        tx.execute("SET LOCAL lock_timeout = '%ds'" % PARTITION_LOCK_TIMEOUT_S)
        tx.execute("LOCK TABLE metrics IN SHARE ROW EXCLUSIVE MODE")

    def _in(self, column: str, values: Sequence[Any]) -> Tuple[str, List[Any]]:
        return "%s = ANY(?)" % column, [list(values)]

    def _bucket(self, column: str) -> str:
        return "floor({0} / {1}) * {1}".format(column, int(ROLLUP_STEP))

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
            data = copy_samples_data(rows)
            with tx.cursor.connection.transaction(), tx.cursor.copy(
                    "COPY samples (vm_key, metric_id, t, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(data)
        except pg_errors.UniqueViolation:
            inserted = tx.fetchall(
                "INSERT INTO samples (vm_key, metric_id, t, value)"
                " SELECT * FROM unnest(?::int4[], ?::int4[], ?::float8[], ?::float8[])"
                " ON CONFLICT DO NOTHING RETURNING vm_key, metric_id, t, value",
                [list(c) for c in zip(*rows)])
            rows = [(r[0], r[1], r[2], r[3]) for r in inserted]
        self._merge_late(tx, rows)

    def _upsert_series(self, tx: Tx, rows: List[Tuple[int, int, float]]) -> None:
        # one statement: a batch of new VMs registers tens of thousands of series
        if rows:
            tx.execute("INSERT INTO series (vm_key, metric_id, seen_at)"
                       " SELECT * FROM unnest(?::int4[], ?::int4[], ?::float8[])"
                       " ON CONFLICT (vm_key, metric_id) DO UPDATE SET seen_at = excluded.seen_at"
                       " WHERE series.seen_at < excluded.seen_at - %r" % REFRESH_S,
                       [list(c) for c in zip(*rows)])

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

    def _roll(self, tx: Tx, end: float, table: str = "samples") -> Tuple[int, int]:
        # One statement: exactly the rows deleted are the rows rolled, whatever commits
        # concurrently.
        row = tx.fetchone(
            "WITH moved AS (DELETE FROM " + table + " WHERE t < ?"
            "  RETURNING vm_key, metric_id, t, value),"
            " ins AS (INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
            "  SELECT vm_key, metric_id, " + self._bucket("t") + ", avg(value), min(value),"
            "  max(value), count(*) FROM moved GROUP BY 1, 2, 3"
            + _MERGE_INTO_ROLLUPS +
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
            version = apply_migrations(tx, migrations, "the database (%s)" % self._target)
            self._adopt_unpartitioned(tx, time.time())
            self._backfill_series(tx, time.time())
            self._prefer_lz4(tx)
            return version
        return self._write(work)

    # -- time partitions (schema 4) ---------------------------------------------------------

    @staticmethod
    def _partitions(tx: Tx, table: str) -> List[Tuple[str, float, float]]:
        """(name, start, end) of ``table``'s time partitions, oldest first (not the default
        one)."""
        out = []
        for name, bound in tx.fetchall(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = ?::regclass",
                (table,)):
            match = _BOUND.search(bound or "")
            if match:
                out.append((name, float(match.group(1)), float(match.group(2))))
        return sorted(out, key=lambda p: p[1])

    @staticmethod
    def _is_partitioned(tx: Tx, table: str) -> bool:
        row = tx.fetchone("SELECT relkind FROM pg_class WHERE oid = to_regclass(?)", (table,))
        return row is not None and row[0] == "p"

    def _create_partition(self, tx: Tx, table: str, column: str, start: float,
                          end: float) -> None:
        """Create ``table``'s partition for ``[start, end)``; rows the default partition
        holds in that range move into it. The caller holds the parent's lock."""
        name = "%s_p%d" % (table, int(start))
        moved = tx.fetchall("DELETE FROM %s_default WHERE %s >= ? AND %s < ? RETURNING *"
                            % (table, column, column), (start, end))
        tx.execute("CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%r) TO (%r)"
                   % (name, table, float(start), float(end)))
        if moved:
            tx.executemany("INSERT INTO %s VALUES (%s)" % (name, ", ".join("?" * len(moved[0]))),
                           moved)

    def _ensure_partitions(self, tx: Tx, now: float, since: Dict[str, float]) -> int:
        """Partitions from ``since[table]`` up to the ones kept ready ahead of ``now``; the
        number created. Existing partitions are left as they are, whatever their width (a
        retention changed since they were made): only the gaps between them are filled."""
        tx.execute("SET LOCAL lock_timeout = '%ds'" % PARTITION_LOCK_TIMEOUT_S)
        created = 0
        widths = partition_widths(self.config)
        for table, column in (("samples", "t"), ("rollups", "bucket")):
            width = widths[table]
            start = math.floor(since[table] / width) * width
            end = math.floor(now / width) * width + (AHEAD + 1) * width
            if not missing_partitions(start, end, width, self._partitions(tx, table)):
                continue
            # The parent first (the order ingest locks in), so no insert into the default
            # partition slips in between moving its rows and creating a partition; then look
            # again (another instance may have created some meanwhile).
            tx.execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE" % table)
            for low, high in missing_partitions(start, end, width, self._partitions(tx, table)):
                self._create_partition(tx, table, column, low, high)
                created += 1
        return created

    def _adopt_unpartitioned(self, tx: Tx, now: float) -> None:
        """After migration 4: partitions for the rows of the unpartitioned tables (within
        retention; older or far-future rows go to the default partitions), the rows moved
        over, the old tables dropped. One pass over the data, in the migration's
        transaction."""
        cfg = self.config
        widths = partition_widths(cfg)
        since = {"samples": now - cfg.raw_retention_s - widths["samples"],
                 "rollups": now - cfg.rollup_retention_s - widths["rollups"]}
        for table in ("samples", "rollups"):
            old = table + "_unpartitioned"
            if tx.fetchone("SELECT to_regclass(?)", (old,))[0] is None:  # type: ignore[index]
                continue
            self._ensure_partitions(tx, now, since)
            tx.execute("INSERT INTO %s SELECT * FROM %s" % (table, old))
            tx.execute("DROP TABLE %s" % old)
        if self._is_partitioned(tx, "samples"):
            self._ensure_partitions(tx, now, since)

    #: JSON columns compressed with lz4 where the server can (``_prefer_lz4``): the latest
    #: reports, and the health pass's evaluation states (4-6 kB, rewritten for every VM at
    #: every pass: pglz cost the server about 0.1 ms of the 0.15 of each state's upsert) and
    #: verdicts.
    LZ4_COLUMNS = (("latest_reports", "report"), ("event_states", "state"),
                   ("verdicts", "verdict"))

    @classmethod
    def _prefer_lz4(cls, tx: Tx) -> None:
        """Compress the JSON of ``LZ4_COLUMNS`` with lz4 (PostgreSQL 14+ built with lz4)
        instead of pglz: several times cheaper per value written. Optional, so it is no
        migration: servers without lz4 keep pglz; values written before stay as they are."""
        assert isinstance(tx, _PgTx)
        for table, column in cls.LZ4_COLUMNS:
            try:
                with tx.cursor.connection.transaction():
                    row = tx.fetchone("SELECT attcompression FROM pg_attribute WHERE attrelid"
                                      " = ?::regclass AND attname = ?", (table, column))
                    if row is not None and row[0] != "l":
                        tx.execute("ALTER TABLE %s ALTER COLUMN %s SET COMPRESSION lz4"
                                   % (table, column))
            except (pg_errors.UndefinedColumn, pg_errors.FeatureNotSupported,
                    pg_errors.SyntaxError, pg_errors.InvalidParameterValue):
                pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
