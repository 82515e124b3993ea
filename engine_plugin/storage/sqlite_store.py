"""SQLite backend: one file, WAL, one writer connection behind a lock, a reader per thread.

WAL lets readers run while the writer commits, so the API never waits for an ingest.
``synchronous=NORMAL`` in WAL mode can lose the last transactions on power loss but never
corrupts the file; the relay retries unacknowledged batches, and ingest is idempotent.
``BEGIN IMMEDIATE`` takes the file's write lock at the start of every write, so a second
process on the same file waits (``busy_timeout``) instead of failing half way.

Processes of one service (``[ingest] processes``) write the file at once. SQLite's own lock
makes a waiting writer poll, sleeping up to 100 ms between tries: a writer that commits and
begins again at once keeps the lock, and the others starve until their busy timeout. So every
write first takes an exclusive ``flock`` on ``<file>-write.lock``, which the kernel hands to a
waiting process the moment it is released (and drops if its holder dies).
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Sequence, Set, Tuple, TypeVar

from .config import HOUR, ROLLUP_GRACE_S, StorageConfig
from .errors import StorageError, StoreClosed, UnsupportedUrl
from .schema import apply_migrations, load_migrations
from .sqlstore import ROLL_SPAN, LedgerKey, SqlStore, Tx, bucket_of

T = TypeVar("T")
#: How long close() waits for reads in flight before closing their connections anyway.
CLOSE_WAIT_S = 60.0
#: ``meta`` row of the roll-up ahead of retention (``roll_up``): "<from> <to>": the raw
#: samples from ``from`` to ``to`` (5-minute bucket starts) are in rollups too, which queries
#: do not show while those raw samples are kept (``_visible_rollups``).
ROLLED_KEY = "rolled_ahead"
#: Merging a 5-minute rollup with new samples: count-weighted mean, extremes, counts.
_MERGE_ROLLUP = (" ON CONFLICT (vm_key, metric_id, bucket) DO UPDATE SET"
                 " v_avg = (v_avg * n + excluded.v_avg * excluded.n) / (n + excluded.n),"
                 " v_min = min(v_min, excluded.v_min), v_max = max(v_max, excluded.v_max),"
                 " n = n + excluded.n")


def sqlite_path(url: str) -> str:
    """``sqlite:////abs/path.db`` -> ``/abs/path.db``; ``sqlite:///rel.db`` -> ``rel.db``."""
    if not url.startswith("sqlite:///"):
        raise UnsupportedUrl("%r is not a SQLite URL; write sqlite:////absolute/path.db" % url)
    path = url[len("sqlite:///"):]
    if not path or path == ":memory:" or path.startswith("file:"):
        raise UnsupportedUrl("%r: the store needs a database file shared by its connections; "
                             "write sqlite:////absolute/path.db" % url)
    return path


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.executemany(sql, rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()


class SqliteStore(SqlStore):
    """The default store: ``sqlite:////var/lib/vmdiag/vmdiag.db``."""

    backend = "sqlite"
    # sqlite3 raises OverflowError binding an int beyond 64 bits, and ProgrammingError for a
    # string with a lone surrogate, which the driver cannot encode.
    _data_errors = (OverflowError, sqlite3.DataError, UnicodeEncodeError)

    def __init__(self, config: StorageConfig) -> None:
        super().__init__(config)
        self.path = sqlite_path(config.url)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise StorageError("cannot open %s: folder %s does not exist; create it (the "
                               "package creates /var/lib/vmdiag) or change [storage] url"
                               % (self.path, folder))
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: List[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Reads in flight, so close() waits for them: closing a sqlite3 connection while
        # another thread runs a query on it crashes the process (a health pass in the store's
        # executor can still be reading when the service stops).
        self._reads = 0
        self._reads_done = threading.Condition(self._readers_lock)
        self._closed = False
        self._instance_lock: int | None = None
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        write_lock = self.path + "-write.lock"
        try:
            self._write_lock = os.open(write_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as err:
            self._writer.close()
            raise StorageError("cannot open %s (%s); the service user must be able to write "
                               "the database's folder" % (write_lock, err.strerror)) from err

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.config.busy_timeout_s,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise StorageError("cannot open SQLite database %s: %s; check the path and that "
                               "the service user may write the folder" % (self.path, err)) \
                from err
        conn.execute("PRAGMA busy_timeout=%d" % int(self.config.busy_timeout_s * 1000))
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def _file_write_lock(self) -> Iterator[None]:
        """The write lock among processes (the module's docstring says why)."""
        fcntl.flock(self._write_lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._write_lock, fcntl.LOCK_UN)

    def _write(self, work: Callable[[Tx], T]) -> T:
        with self._lock:
            if self._closed:
                raise StoreClosed("the store was closed; open a new one")
            with self._file_write_lock():
                return self._write_locked(work)

    def _write_locked(self, work: Callable[[Tx], T]) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(_SqliteTx(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreClosed("the store was closed; open a new one")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, work: Callable[[Tx], T], snapshot: bool = False) -> T:
        conn = self._reader()
        with self._reads_done:
            if self._closed:
                raise StoreClosed("the store was closed; open a new one")
            self._reads += 1
        try:
            if not snapshot:
                return work(_SqliteTx(conn))
            conn.execute("BEGIN")
            try:
                return work(_SqliteTx(conn))
            finally:
                conn.execute("COMMIT")
        finally:
            with self._reads_done:
                self._reads -= 1
                self._reads_done.notify_all()

    # -- dialect ----------------------------------------------------------------------------

    def _in(self, column: str, values: Sequence[Any]) -> Tuple[str, List[Any]]:
        return "%s IN (%s)" % (column, ", ".join("?" * len(values))), list(values)

    def _bucket(self, column: str) -> str:
        return "CAST(%s / 300 AS INTEGER) * 300" % column

    def _insert_ledger(self, tx: Tx, rows: List[Tuple[int, str, int, float]]) -> Set[LedgerKey]:
        new: Set[LedgerKey] = set()
        for row in rows:
            if tx.execute("INSERT INTO ingested (vm_key, run_id, seq, ingested_at)"
                          " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", row):
                new.add((row[0], row[1], row[2]))
        return new

    def _insert_samples(self, tx: Tx, rows: List[Tuple[int, int, float, float]]) -> None:
        """Insert the rows, keeping existing points; those the roll-up already rolled past
        (``roll_up``: a late report, an import) are merged into their rollups too, each one
        that was new (one writer at a time: the roll-up cannot run in between)."""
        insert = ("INSERT INTO samples (vm_key, metric_id, t, value) VALUES (?, ?, ?, ?)"
                  " ON CONFLICT DO NOTHING")
        rolled = self._rolled_ahead(tx) if rows else None
        if rolled is None:
            tx.executemany(insert, rows)
            return
        low, high = rolled
        tx.executemany(insert, [r for r in rows if not low <= r[2] < high])
        late: Dict[Tuple[int, int, float], List[float]] = {}
        for row in rows:
            if low <= row[2] < high and tx.execute(insert, row):
                late.setdefault((row[0], row[1], bucket_of(row[2])), []).append(row[3])
        tx.executemany("INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)" + _MERGE_ROLLUP,
                       [key + (math.fsum(values) / len(values), min(values), max(values),
                               len(values)) for key, values in sorted(late.items())])

    def _insert_rollups(self, tx: Tx,
                        rows: List[Tuple[int, int, float, float, float, float, int]]) -> None:
        tx.executemany("INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)

    def _roll(self, tx: Tx, end: float) -> Tuple[int, int]:
        """Retention: move the raw samples before ``end`` (one 5-minute bucket, ``_roll_step``)
        into rollups; a bucket the roll-up already rolled (``roll_up``) is only deleted."""
        rolled = self._rolled_ahead(tx)
        oldest = tx.fetchone("SELECT min(t) FROM samples")
        written = 0
        if (rolled is None or oldest is None or oldest[0] is None
                or not (rolled[0] <= bucket_of(oldest[0]) and end <= rolled[1])):
            written = self._roll_into_rollups(tx, None, end)
        moved = tx.execute("DELETE FROM samples WHERE t < ?", (end,))
        return moved, written

    @staticmethod
    def _roll_into_rollups(tx: Tx, start: float | None, end: float) -> int:
        """Merge the 5-minute aggregates of the raw samples from ``start`` (None: the
        oldest) to ``end`` into rollups; the rollup rows written."""
        # INDEXED BY: without it the planner prefers scanning the whole table in key order
        # (to skip sorting for GROUP BY), which costs the full table for every 5 minutes.
        return tx.execute(
            "INSERT INTO rollups (vm_key, metric_id, bucket, v_avg, v_min, v_max, n)"
            " SELECT vm_key, metric_id, CAST(t / 300 AS INTEGER) * 300 AS b, avg(value),"
            " min(value), max(value), count(*) FROM samples INDEXED BY samples_t"
            " WHERE t < ?" + ("" if start is None else " AND t >= ?")
            + " GROUP BY vm_key, metric_id, b" + _MERGE_ROLLUP,
            (end,) if start is None else (end, start))

    # -- roll-up ahead of retention ---------------------------------------------------------

    @staticmethod
    def _rolled_ahead(tx: Tx) -> Tuple[float, float] | None:
        row = tx.fetchone("SELECT value FROM meta WHERE key = ?", (ROLLED_KEY,))
        if row is None:
            return None
        low, high = row[0].split()
        return float(low), float(high)

    def _rolled_span(self, tx: Tx) -> Tuple[float, float] | None:
        rolled = self._rolled_ahead(tx)
        if rolled is None:
            return None
        cutoff = self._raw_cutoff(tx)
        low = rolled[0] if cutoff is None else max(rolled[0], cutoff)
        return (low, rolled[1]) if low < rolled[1] else None

    def _visible_rollups(self, tx: Tx) -> Tuple[str, List[Any]]:
        span = self._rolled_span(tx)
        if span is None:
            return "1 = 1", []
        return "NOT (bucket >= ? AND bucket < ?)", list(span)

    def roll_up(self, now: float, budget_s: float = 30.0) -> Dict[str, int]:
        """Roll the raw samples of closed hours (closed ``ROLLUP_GRACE_S``) into rollups
        ahead of retention, oldest first, 5 minutes of the whole fleet a transaction (as
        retention rolls them), until nothing is due or ``budget_s`` is spent; the leader calls
        it every minute. The progress is one ``meta`` row (``ROLLED_KEY``), written in the
        step's transaction. Raw samples stay (queries show them, not these rollups, until
        retention deletes them, ``_roll``); a sample arriving late for a rolled bucket is
        merged into its rollup by the ingest that stores it (``_insert_samples``). So a
        refit's 5-minute means of the last two days are read from rollups
        (``_history_reads``), not averaged from raw samples at each read."""
        stats = {"rolled": 0, "rollups_written": 0, "steps": 0, "roll_ms": 0}
        end = math.floor((now - ROLLUP_GRACE_S) / HOUR) * HOUR
        started = time.perf_counter()
        while time.perf_counter() - started < budget_s:
            step = self._write(lambda tx: self._roll_ahead_step(tx, end))
            if step is None:
                break
            stats["steps"] += 1
            stats["rolled"] += step[0]
            stats["rollups_written"] += step[1]
        stats["roll_ms"] = int(1000 * (time.perf_counter() - started))
        return stats

    def _roll_ahead_step(self, tx: Tx, end: float) -> Tuple[int, int] | None:
        """Roll the next 5 minutes before ``end``; (samples, rollup rows), or None if none
        is due."""
        rolled = self._rolled_ahead(tx)
        cutoff = self._raw_cutoff(tx)
        if rolled is None:
            row = tx.fetchone("SELECT min(t) FROM samples")
            if row is None or row[0] is None:
                return None
            low = high = bucket_of(row[0])
        else:
            low, high = rolled
        if cutoff is not None and high < cutoff:
            # retention rolled up to its cutoff itself (or the samples begin behind it): go
            # on from there; what lies behind it is retention's (``_roll``)
            low = high = cutoff
        if high >= end:
            return None
        step_end = min(high + ROLL_SPAN, end)
        count = tx.fetchone("SELECT count(*) FROM samples WHERE t >= ? AND t < ?",
                            (high, step_end))
        written = self._roll_into_rollups(tx, high, step_end)
        self._set_meta(tx, ROLLED_KEY, "%r %r" % (low, step_end))
        return (int(count[0]) if count else 0), written

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> int:
        migrations = load_migrations("sqlite")

        def work(tx: Tx) -> int:
            version = apply_migrations(tx, migrations, self.path)
            self._backfill_series(tx, time.time())
            return version
        return self._write(work)

    def claim_instance(self) -> None:
        """One service instance per SQLite file: the duties that must run once (health
        passes, oVirt events, retention) are coordinated by leases in the database, but two
        processes writing one SQLite file also queue on its single write lock, so a second
        instance buys nothing. An exclusive ``flock`` on ``<file>-instance.lock`` (released
        by the kernel when the process dies, even by SIGKILL) makes the second one refuse to
        start instead of doubling the work. Tools (``vmdiag-engine retention``) do not claim
        it."""
        lock_path = self.path + "-instance.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as err:
            raise StorageError("cannot open %s (%s); the service user must be able to write "
                               "the database's folder" % (lock_path, err.strerror)) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise StorageError(
                "another vmdiag-engine (pid %s) already serves the SQLite store %s; a SQLite "
                "store serves one instance: stop the other one, or point every instance's "
                "[storage] url at one PostgreSQL database to run several" % (holder, self.path)
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._instance_lock = fd

    def close(self) -> None:
        if self._instance_lock is not None:
            os.close(self._instance_lock)  # releases the flock
            self._instance_lock = None
        with self._lock:
            if self._closed:
                return
            with self._reads_done:
                self._closed = True
                # no new read starts now; let those running finish (a pass reads for seconds
                # at most), then their connections may go
                self._reads_done.wait_for(lambda: self._reads == 0, timeout=CLOSE_WAIT_S)
                readers, self._readers = self._readers, []
            for conn in readers:
                conn.close()
            try:
                with self._file_write_lock():
                    self._writer.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._writer.close()
            os.close(self._write_lock)
