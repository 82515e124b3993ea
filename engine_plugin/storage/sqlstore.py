"""The part of the store both SQL backends share: queries, ingest flow, retention flow.

A backend supplies transactions (``_write``, ``_read``), a few dialect pieces (``_in``,
``_bucket``, ``_least``/``_greatest``) and the bulk statements where the fast way differs
(ledger, samples, rolling a time step). SQL here is written with ``?`` placeholders; the
PostgreSQL backend translates them.
"""

from __future__ import annotations

import abc
import itertools
import math
import operator
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
)

from ..fastjson import dumps_stored, loads_stored
from .config import ROLLUP_STEP
from .downsample import lttb
from .errors import Unstorable
from .extract import prefix_match
from .incoming import Incoming, encode_latest_candidates, newest_per_vm, prepare
from .records import DUPLICATE, STORED, IngestResult, LatestReport, VmSummaryRow
from .series import REFRESH_S, SLACK_S, SeriesCache
from .store import Point, Store

T = TypeVar("T")
#: incoming.is_newer as SQL on the row ``vms`` (unqualified columns) against parameters
#: (run_id, seq, run_id, ingested_at, ingested_at, received_at) of the candidate.
NEWER_SQL = ("{v}received_at IS NULL OR {v}ingested_at IS NULL OR {v}run_id IS NULL"
             " OR {v}seq IS NULL OR ({v}run_id = ? AND {v}seq < ?) OR ({v}run_id <> ? AND"
             " ({v}ingested_at < ? OR ({v}ingested_at = ? AND {v}received_at < ?)))")
LedgerKey = Tuple[int, str, int]

#: Ids per ``IN (...)`` list; keeps statements small and below SQLite's variable limit.
CHUNK = 500
#: Raw samples rolled per retention transaction: one bucket, so ingest waits little.
ROLL_SPAN = ROLLUP_STEP
#: Rollups dropped per retention transaction.
DROP_SPAN = 3600.0
#: ``meta`` row: the newest rollup bucket ``import_history`` ever wrote (``_rollups_from``).
IMPORTED_KEY = "imported_rollups_to"


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def bucket_of(t: float) -> float:
    return math.floor(t / ROLLUP_STEP) * ROLLUP_STEP


class Tx(abc.ABC):
    """One transaction (or read snapshot) on one connection."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return its row count."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row."""

    @abc.abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        """Run a query; return all rows."""

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Tuple[Any, ...] | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def fetchnumbers(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        """``fetchall`` of a query whose columns are all integers and floats, in the driver's
        fastest form for them (the same values)."""
        return self.fetchall(sql, params)


class SqlStore(Store):
    """Everything but connections and a few dialect-specific statements."""

    #: SQL names of the two-argument min/max.
    _least = "min"
    _greatest = "max"
    #: SQL expression: the database's clock in Unix seconds (leases use it, so instances
    #: with skewed clocks agree on when a lease expires).
    _now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._series = SeriesCache()

    # -- what a backend provides ------------------------------------------------------------

    @abc.abstractmethod
    def _write(self, work: Callable[[Tx], T]) -> T:
        """Run ``work`` in one write transaction (retried by the backend when it may be)."""

    @abc.abstractmethod
    def _read(self, work: Callable[[Tx], T], snapshot: bool = False) -> T:
        """Run ``work`` on a reader; with ``snapshot`` all its queries see one state."""

    @abc.abstractmethod
    def _in(self, column: str, values: Sequence[Any]) -> Tuple[str, List[Any]]:
        """SQL condition "column is one of values" and its parameters."""

    @abc.abstractmethod
    def _bucket(self, column: str) -> str:
        """SQL expression: start of the rollup bucket of a time column."""

    @abc.abstractmethod
    def _insert_ledger(self, tx: Tx, rows: List[Tuple[int, str, int, float]]) -> Set[LedgerKey]:
        """Insert ledger rows, skipping existing ones; return the keys that were new."""

    @abc.abstractmethod
    def _insert_samples(self, tx: Tx, rows: List[Tuple[int, int, float, float]]) -> None:
        """Insert (vm_key, metric_id, t, value) rows, keeping existing points."""

    @abc.abstractmethod
    def _insert_rollups(self, tx: Tx,
                        rows: List[Tuple[int, int, float, float, float, float, int]]) -> None:
        """Insert rollup rows, keeping existing ones."""

    @abc.abstractmethod
    def _roll(self, tx: Tx, end: float) -> Tuple[int, int]:
        """Move raw samples with ``t < end`` into rollups; (samples moved, rollups written)."""

    @contextmanager
    def _retention_guard(self) -> Iterator[bool]:
        """Yields whether this caller may run retention now (one instance at a time)."""
        yield True

    # -- keys -------------------------------------------------------------------------------

    def _ensure_vms(self, tx: Tx, hosts: Dict[str, str | None]) -> Dict[str, int]:
        """vm_key of each vm_id, creating rows for new VMs (in vm_id order, to avoid deadlocks
        between instances creating the same VMs)."""
        ids = sorted(hosts)
        # Known VMs first, with one query: after its first report a VM is always known, and
        # an insert per VM that finds it there was a statement per report for nothing.
        keys = self._vm_keys(tx, ids)
        missing = [vm_id for vm_id in ids if vm_id not in keys]
        if missing:
            tx.executemany(self._insert_ignore("vms", ("vm_id", "host_id"), ("vm_id",)),
                           [(vm_id, hosts[vm_id]) for vm_id in missing])
            keys.update(self._vm_keys(tx, missing))
        return keys

    def _vm_keys(self, tx: Tx, vm_ids: Sequence[str]) -> Dict[str, int]:
        keys: Dict[str, int] = {}
        for part in chunks(list(vm_ids)):
            cond, params = self._in("vm_id", part)
            for vm_key, vm_id in tx.fetchall("SELECT vm_key, vm_id FROM vms WHERE " + cond,
                                             params):
                keys[vm_id] = vm_key
        return keys

    def _ensure_metrics(self, tx: Tx, names: Iterable[str]) -> Dict[str, int]:
        """metric_id of each name, creating the missing ones (in name order, so two
        transactions creating the same names queue rather than deadlock). Always asks the
        database: retention may have dropped a name another process still remembers."""
        wanted = sorted(set(names))
        found: Dict[str, int] = {}
        if wanted:
            tx.executemany(self._insert_ignore("metrics", ("name",), ("name",)),
                           [(name,) for name in wanted])
            for part in chunks(wanted):
                cond, params = self._in("name", part)
                found.update((name, metric_id) for metric_id, name in tx.fetchall(
                    "SELECT metric_id, name FROM metrics WHERE " + cond, params))
        return found

    def _register_series(self, tx: Tx, wanted: Dict[int, Set[str]], now: float
                         ) -> Dict[int, Dict[str, int]]:
        """Register (or confirm) the series ``wanted`` of each vm_key; ``{vm_key: {name:
        metric_id}}`` of those accepted. A VM's series already
        registered are always accepted and their ``seen_at`` refreshed; new ones only while
        the VM has fewer than ``max_series_per_vm`` (the first ones in name order).

        The count is what this transaction sees: with two processes registering new series
        of one VM at once (PostgreSQL), each may add up to the room it saw, so a VM can end
        with up to that many more than the cap (at most the cap times the writers), never
        more after that. SQLite has one writer at a time: exact there."""
        cap = self.config.max_series_per_vm
        counts = dict.fromkeys(wanted, 0)
        registered: Dict[int, Set[str]] = {vm_key: set() for vm_key in wanted}
        for part in chunks(sorted(wanted)):
            cond, params = self._in("s.vm_key", part)
            for vm_key, name in tx.fetchall(
                    "SELECT s.vm_key, m.name FROM series s JOIN metrics m"
                    " ON m.metric_id = s.metric_id WHERE " + cond, params):
                counts[vm_key] += 1
                if name in wanted[vm_key]:
                    registered[vm_key].add(name)
        accepted: Dict[int, List[str]] = {}
        for vm_key, names in wanted.items():
            new = sorted(names - registered[vm_key])
            room = max(cap - counts[vm_key], 0)
            accepted[vm_key] = sorted(registered[vm_key]) + new[:room]
        # The names first: their INSERT takes the lock retention's pruning waits for
        # (PostgreSQL), and the ids are read after it, so a name pruned meanwhile is made
        # again rather than used dangling.
        ids = self._ensure_metrics(tx, (name for names in accepted.values() for name in names))
        self._upsert_series(tx, sorted((vm_key, ids[name], now)
                                       for vm_key, names in accepted.items() for name in names))
        return {vm_key: {name: ids[name] for name in names}
                for vm_key, names in accepted.items()}

    def _upsert_series(self, tx: Tx, rows: List[Tuple[int, int, float]]) -> None:
        """Register (vm_key, metric_id, seen_at) rows, refreshing ``seen_at`` of existing
        ones; a backend may do it in one statement."""
        tx.executemany(
            "INSERT INTO series (vm_key, metric_id, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (vm_key, metric_id) DO UPDATE SET seen_at = excluded.seen_at"
            " WHERE series.seen_at < excluded.seen_at - %r" % REFRESH_S, rows)

    def _metric_ids_of(self, tx: Tx, vm_key: int) -> Set[int]:
        """Every metric_id the VM has samples or rollups of."""
        ids: Set[int] = set()
        for table in ("samples", "rollups"):
            # Loose index scan: one index probe per distinct metric instead of reading
            # every sample of the VM.
            ids.update(r[0] for r in tx.fetchall(
                "WITH RECURSIVE m(id) AS ("
                " SELECT (SELECT min(metric_id) FROM {t} WHERE vm_key = ?)"
                " UNION ALL SELECT (SELECT min(metric_id) FROM {t}"
                "  WHERE vm_key = ? AND metric_id > m.id) FROM m WHERE m.id IS NOT NULL)"
                " SELECT id FROM m WHERE id IS NOT NULL".format(t=table),
                (vm_key, vm_key)))
        return ids

    def _backfill_series(self, tx: Tx, now: float) -> None:
        """After migration 5: register the series of the data already stored (seen now, so
        they are kept at least a rollup retention). One loose index scan per VM."""
        if tx.fetchone("SELECT value FROM meta WHERE key = 'series_backfill'") is None:
            return
        for (vm_key,) in tx.fetchall("SELECT vm_key FROM vms ORDER BY vm_key"):
            tx.executemany("INSERT INTO series (vm_key, metric_id, seen_at) VALUES (?, ?, ?)"
                           " ON CONFLICT DO NOTHING",
                           [(vm_key, mid, now) for mid in sorted(self._metric_ids_of(tx, vm_key))])
        tx.execute("DELETE FROM meta WHERE key = 'series_backfill'")

    @staticmethod
    def _insert_ignore(table: str, columns: Sequence[str], conflict: Sequence[str]) -> str:
        return "INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) DO NOTHING" % (
            table, ", ".join(columns), ", ".join("?" * len(columns)), ", ".join(conflict))

    # -- ingest -----------------------------------------------------------------------------

    #: Exceptions of the database driver meaning "this data cannot be stored" (a value
    #: beyond a column's range), as opposed to a database that is unavailable.
    _data_errors: Tuple[Type[BaseException], ...] = (OverflowError,)

    def ingest(self, envelopes: Sequence[Dict[str, Any]],
               now: float | None = None) -> IngestResult:
        try:
            items, in_batch = prepare(envelopes, now)
        except ValueError as err:
            raise Unstorable(str(err)) from err
        if not items:
            return IngestResult(accepted=0, duplicates=in_batch,
                                outcomes=(DUPLICATE,) * len(envelopes))
        try:
            encode_latest_candidates(items)
        except ValueError as err:  # text that is no UTF-8 (validation cleans it away)
            raise Unstorable("a report cannot be encoded: %s" % err) from err
        ingested_at = items[0].ingested_at
        self._series.sweep(ingested_at)
        try:
            done = self._write(lambda tx: self._ingest_tx(tx, items, ingested_at))
        except self._data_errors as err:
            raise Unstorable("the database cannot hold this batch (%s: %s); check the "
                             "values against diag_protocol's ranges"
                             % (type(err).__name__, err)) from err
        for vm_id, vm_key, ids in done.confirmed:  # committed: ingest may rely on them
            self._series.confirm(vm_id, vm_key, ids, ingested_at)
        outcomes = [DUPLICATE] * len(envelopes)
        for index in done.accepted:
            outcomes[index] = STORED
        return IngestResult(accepted=len(done.accepted),
                            duplicates=in_batch + len(items) - len(done.accepted),
                            stale_samples=done.stale, outcomes=tuple(outcomes),
                            capped_samples=sum(done.capped.values()),
                            capped_vms=tuple(sorted(done.capped)))

    def _ingest_tx(self, tx: Tx, items: List[Incoming], now: float) -> _Ingested:
        hosts = {item.vm_id: item.host_id for item in items}
        vm_keys = self._ensure_vms(tx, hosts)
        new_keys = self._insert_ledger(tx, sorted(
            (vm_keys[i.vm_id], i.run_id, i.seq, i.ingested_at) for i in items))
        new = [i for i in items if (vm_keys[i.vm_id], i.run_id, i.seq) in new_keys]
        cutoff = self._raw_cutoff(tx)
        done = _Ingested([i.index for i in new])
        rows = []
        # samples of series ingest does not know yet: (vm_id, name, t, value)
        unknown: List[Tuple[str, str, float, float]] = []
        capped: Dict[str, int] = {}
        for item in new:
            vm_key = vm_keys[item.vm_id]
            known = self._series.get(item.vm_id, vm_key, now)
            ids = known.ids if known is not None else {}
            for name, t, value in item.samples:
                if cutoff is not None and t < cutoff:
                    done.stale += 1
                    continue
                metric_id = ids.get(name)  # the one lookup a known series costs
                if metric_id is not None:
                    rows.append((vm_key, metric_id, t, value))
                else:
                    unknown.append((item.vm_id, name, t, value))
        if unknown:
            wanted: Dict[int, Set[str]] = {}
            for vm_id, name, _, _ in unknown:
                wanted.setdefault(vm_keys[vm_id], set()).add(name)
            registered = self._register_series(tx, wanted, now)
            for vm_id, name, t, value in unknown:
                metric_id = registered[vm_keys[vm_id]].get(name)
                if metric_id is None:
                    capped[vm_id] = capped.get(vm_id, 0) + 1
                else:
                    rows.append((vm_keys[vm_id], metric_id, t, value))
            done.confirmed = [(vm_id, vm_keys[vm_id], registered[vm_keys[vm_id]])
                              for vm_id in sorted({u[0] for u in unknown})]
        done.capped = capped
        rows.sort()
        self._insert_samples(tx, rows)
        self._update_latests(tx, [(vm_keys[i.vm_id], i) for i in newest_per_vm(new)])
        return done

    def _update_latests(self, tx: Tx, items: List[Tuple[int, Incoming]]) -> None:
        """``_update_latest`` for each (vm_key, report); a backend may do it in bulk."""
        for vm_key, item in items:
            self._update_latest(tx, vm_key, item)

    def _update_latest(self, tx: Tx, vm_key: int, item: Incoming) -> None:
        """Make ``item`` the VM's latest report if it is newer (incoming.is_newer, in SQL, so
        the check and the write are one atomic statement on the VM's row)."""
        changed = tx.execute(
            "UPDATE vms SET host_id = ?, hostname = COALESCE(?, hostname),"
            " agent_version = COALESCE(?, agent_version), received_at = ?, report_time = ?,"
            " run_id = ?, seq = ?, worst_status = COALESCE(?, worst_status),"
            " worst_checks = COALESCE(?, worst_checks), ingested_at = ?"
            " WHERE vm_key = ? AND (" + NEWER_SQL.format(v="") + ")",
            (item.host_id, item.hostname, item.agent_version, item.received_at,
             item.report_time, item.run_id, item.seq, item.worst_status, item.worst_checks,
             item.ingested_at, vm_key, item.run_id, item.seq, item.run_id, item.ingested_at,
             item.ingested_at, item.received_at))
        if changed:
            tx.execute("INSERT INTO latest_reports (vm_key, report) VALUES (?, ?)"
                       " ON CONFLICT (vm_key) DO UPDATE SET report = excluded.report",
                       (vm_key, item.report_json()))

    def _visible_rollups(self, tx: Tx) -> Tuple[str, List[Any]]:
        """SQL condition (and its parameters) on ``rollups`` rows that queries may show: a
        backend that rolls up ahead of retention hides what duplicates raw samples."""
        return "1 = 1", []

    @staticmethod
    def _raw_cutoff(tx: Tx) -> float | None:
        row = tx.fetchone("SELECT value FROM meta WHERE key = 'raw_cutoff'")
        return float(row[0]) if row else None

    @staticmethod
    def _set_meta(tx: Tx, key: str, value: str) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                   " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # -- reports and summaries --------------------------------------------------------------

    def latest(self, vm_id: str) -> LatestReport | None:
        row = self._read(lambda tx: tx.fetchone(
            "SELECT v.vm_id, v.host_id, v.received_at, l.report, v.ingested_at FROM vms v"
            " JOIN latest_reports l ON l.vm_key = v.vm_key WHERE v.vm_id = ?", (vm_id,)))
        if row is None:
            return None
        return LatestReport(vm_id=row[0], host_id=row[1], received_at=row[2],
                            report=loads_stored(row[3]), ingested_at=row[4])

    def latests(self, vm_ids: Iterable[str]) -> Dict[str, LatestReport]:
        def query(tx: Tx) -> List[Tuple[Any, ...]]:
            rows: List[Tuple[Any, ...]] = []
            for part in chunks(sorted(set(vm_ids))):
                cond, params = self._in("v.vm_id", part)
                rows.extend(tx.fetchall(
                    "SELECT v.vm_id, v.host_id, v.received_at, l.report, v.ingested_at"
                    " FROM vms v JOIN latest_reports l ON l.vm_key = v.vm_key WHERE " + cond,
                    params))
            return rows
        return {r[0]: LatestReport(vm_id=r[0], host_id=r[1], received_at=r[2],
                                   report=loads_stored(r[3]), ingested_at=r[4])
                for r in self._read(query)}

    def vm_ids(self, host_id: str | None = None) -> List[str]:
        sql = "SELECT vm_id FROM vms WHERE received_at IS NOT NULL"
        params: Tuple[Any, ...] = ()
        if host_id is not None:
            sql += " AND host_id = ?"
            params = (host_id,)
        return [r[0] for r in self._read(lambda tx: tx.fetchall(sql + " ORDER BY vm_id",
                                                                 params))]

    def summaries(self, vm_ids: Iterable[str] | None = None,
                  host_id: str | None = None) -> List[VmSummaryRow]:
        base = ("SELECT v.vm_id, v.host_id, v.hostname, v.received_at, v.report_time,"
                " v.agent_version, v.worst_status, v.worst_checks, d.verdict, v.ingested_at"
                " FROM vms v LEFT JOIN verdicts d ON d.vm_key = v.vm_key"
                " WHERE v.received_at IS NOT NULL")
        extra: List[Any] = []
        if host_id is not None:
            base += " AND v.host_id = ?"
            extra.append(host_id)

        def query(tx: Tx) -> List[Tuple[Any, ...]]:
            if vm_ids is None:
                return tx.fetchall(base, extra)
            rows: List[Tuple[Any, ...]] = []
            for part in chunks(sorted(set(vm_ids))):
                cond, params = self._in("v.vm_id", part)
                rows.extend(tx.fetchall(base + " AND " + cond, extra + params))
            return rows

        # Most VMs share a few verdict and findings texts ("ok", no findings): parse each
        # distinct text once. Rows of one call may therefore share equal dicts; like the
        # frozen rows themselves, treat them as read-only.
        parsed: Dict[str, Any] = {}

        def load(text: str | None) -> Any:
            if not text:
                return None
            value = parsed.get(text)
            if value is None:
                value = parsed[text] = loads_stored(text)
            return value

        out = [VmSummaryRow(
            vm_id=r[0], host_id=r[1], hostname=r[2], received_at=r[3], report_time=r[4],
            agent_version=r[5], worst_status=r[6],
            worst_checks=tuple(load(r[7]) or ()), verdict=load(r[8]), ingested_at=r[9])
            for r in self._read(query)]
        out.sort(key=lambda row: row.vm_id)
        return out

    # -- verdicts and event state -----------------------------------------------------------

    def set_verdict(self, vm_id: str, verdict: Dict[str, Any], now: float,
                    data_through: float | None = None) -> None:
        self.set_verdicts([(vm_id, verdict, data_through)], now)

    def set_verdicts(self, verdicts: Sequence[Tuple[str, Dict[str, Any], float | None]],
                     now: float, states: Dict[str, Dict[str, Any]] | None = None) -> None:
        rows = [(vm_id, dumps_stored(verdict),
                 data_through) for vm_id, verdict, data_through in verdicts]
        state_rows = [(key, dumps_stored(state),
                       float(now)) for key, state in sorted((states or {}).items())]

        def work(tx: Tx) -> None:
            keys = self._ensure_vms(tx, {vm_id: None for vm_id, _, _ in rows})
            tx.executemany(
                "INSERT INTO verdicts (vm_key, verdict, updated_at, data_through)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (vm_key) DO UPDATE SET"
                " verdict = excluded.verdict, updated_at = excluded.updated_at,"
                " data_through = excluded.data_through",
                sorted(((keys[vm_id], text, float(now), through)
                        for vm_id, text, through in rows), key=lambda row: row[0]))
            tx.executemany(
                "INSERT INTO event_states (key, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at", state_rows)
        if rows or state_rows:
            self._write(work)

    def vms_with_new_data(self, since: float | None = None) -> List[str]:
        sql = ("SELECT v.vm_id FROM vms v LEFT JOIN verdicts d ON d.vm_key = v.vm_key"
               " WHERE v.ingested_at IS NOT NULL AND (d.vm_key IS NULL"
               " OR d.data_through IS NULL OR d.data_through < v.ingested_at)")
        params: Tuple[Any, ...] = ()
        if since is not None:
            sql += " AND v.ingested_at >= ?"
            params = (float(since),)
        return sorted(r[0] for r in self._read(lambda tx: tx.fetchall(sql, params)))

    def verdicts(self, vm_ids: Iterable[str] | None = None) -> Dict[str, Dict[str, Any]]:
        base = "SELECT v.vm_id, d.verdict FROM verdicts d JOIN vms v ON v.vm_key = d.vm_key"

        def query(tx: Tx) -> List[Tuple[Any, ...]]:
            if vm_ids is None:
                return tx.fetchall(base)
            rows: List[Tuple[Any, ...]] = []
            for part in chunks(sorted(set(vm_ids))):
                cond, params = self._in("v.vm_id", part)
                rows.extend(tx.fetchall(base + " WHERE " + cond, params))
            return rows
        return {vm_id: loads_stored(text) for vm_id, text in self._read(query)}

    def event_state(self, key: str) -> Dict[str, Any] | None:
        row = self._read(lambda tx: tx.fetchone(
            "SELECT state FROM event_states WHERE key = ?", (key,)))
        return loads_stored(row[0]) if row else None

    def set_event_state(self, key: str, state: Dict[str, Any],
                        now: float | None = None) -> None:
        self.set_event_states({key: state}, now)

    def set_event_states(self, states: Dict[str, Dict[str, Any]],
                         now: float | None = None) -> None:
        when = time.time() if now is None else float(now)
        rows = [(key, dumps_stored(state), when)
                for key, state in sorted(states.items())]
        if rows:
            self._write(lambda tx: tx.executemany(
                "INSERT INTO event_states (key, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at", rows))

    # -- leases -----------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._now_sql

        def work(tx: Tx) -> bool:
            # One upsert: a free or expired lease, or our own, becomes ours until now + ttl;
            # two instances racing for it queue on the row and the second finds it taken.
            tx.execute(
                "INSERT INTO leases (name, holder, expires_at, acquired_at)"
                " VALUES (?, ?, %s + ?, %s) ON CONFLICT (name) DO UPDATE SET"
                " holder = excluded.holder, expires_at = excluded.expires_at,"
                " acquired_at = CASE WHEN leases.holder = excluded.holder"
                " THEN leases.acquired_at ELSE excluded.acquired_at END"
                " WHERE leases.holder = excluded.holder OR leases.expires_at < excluded.acquired_at"
                % (now, now), (name, holder, float(ttl_s)))
            row = tx.fetchone("SELECT holder FROM leases WHERE name = ?", (name,))
            return row is not None and row[0] == holder
        return self._write(work)

    def release_lease(self, name: str, holder: str) -> None:
        self._write(lambda tx: tx.execute("DELETE FROM leases WHERE name = ? AND holder = ?",
                                          (name, holder)))

    def event_states(self, keys: Iterable[str]) -> Dict[str, Dict[str, Any]]:
        def query(tx: Tx) -> List[Tuple[Any, ...]]:
            rows: List[Tuple[Any, ...]] = []
            for part in chunks(sorted(set(keys))):
                cond, params = self._in("key", part)
                rows.extend(tx.fetchall("SELECT key, state FROM event_states WHERE " + cond,
                                        params))
            return rows
        return {key: loads_stored(text) for key, text in self._read(query)}

    def leases(self) -> Dict[str, Dict[str, Any]]:
        rows = self._read(lambda tx: tx.fetchall(
            "SELECT name, holder, expires_at - {now}, {now} - acquired_at FROM leases".format(
                now=self._now_sql)))
        return {name: {"holder": holder, "expires_in": float(left), "held_for": float(held)}
                for name, holder, left, held in rows}

    # -- history ----------------------------------------------------------------------------

    def _series_keys(self, vm_id: str, metric: str) -> Tuple[int, int] | None:
        # No cache of names: retention may drop a name, and one reported again gets a new id.
        row = self._read(lambda tx: tx.fetchone(
            "SELECT v.vm_key, m.metric_id FROM vms v, metrics m WHERE v.vm_id = ?"
            " AND m.name = ?", (vm_id, metric)))
        return (row[0], row[1]) if row else None

    def history(self, vm_id: str, metric: str, since: float, until: float,
                max_points: int = 1000) -> Tuple[str, List[Point]]:
        if max_points < 2:
            raise ValueError("max_points must be at least 2 (first and last point)")
        wide = until - since > self.config.raw_retention_s
        keys = self._series_keys(vm_id, metric)
        if keys is None or until < since:
            return ("5m" if wide else "raw"), []
        vm_key, metric_id = keys
        series = (vm_key, metric_id)

        def query(tx: Tx) -> Tuple[str, List[Point]]:
            visible, vparams = self._visible_rollups(tx)
            rolled = tx.fetchall(
                "SELECT bucket, v_avg, n FROM rollups WHERE vm_key = ? AND metric_id = ?"
                " AND bucket > ? AND bucket <= ? AND " + visible + " ORDER BY bucket",
                series + (since - ROLLUP_STEP, until) + tuple(vparams))
            if not rolled and not wide:
                return "raw", [(t, v) for t, v in tx.fetchall(
                    "SELECT t, value FROM samples WHERE vm_key = ? AND metric_id = ?"
                    " AND t >= ? AND t <= ? ORDER BY t", series + (since, until))]
            bucket = self._bucket("t")
            raw = tx.fetchall(
                "SELECT %s AS b, avg(value), count(*) FROM samples WHERE vm_key = ?"
                " AND metric_id = ? AND t >= ? AND t <= ? GROUP BY b" % bucket,
                series + (since, until))
            return "5m", _merge_buckets(rolled, raw)

        resolution, points = self._read(query, snapshot=True)
        return resolution, lttb(points, max_points)

    def rollups(self, vm_id: str, metric: str, since: float, until: float
                ) -> List[Tuple[float, float, float, float, int]]:
        keys = self._series_keys(vm_id, metric)
        if keys is None:
            return []
        def query(tx: Tx) -> List[Tuple[Any, ...]]:
            visible, vparams = self._visible_rollups(tx)
            return tx.fetchall(
                "SELECT bucket, v_avg, v_min, v_max, n FROM rollups WHERE vm_key = ?"
                " AND metric_id = ? AND bucket >= ? AND bucket <= ? AND " + visible
                + " ORDER BY bucket", keys + (since, until) + tuple(vparams))
        rows = self._read(query, snapshot=True)
        return [(float(b), float(a), float(lo), float(hi), int(n)) for b, a, lo, hi, n in rows]

    def metric_names(self, vm_id: str) -> List[str]:
        def query(tx: Tx) -> List[str]:
            row = tx.fetchone("SELECT vm_key FROM vms WHERE vm_id = ?", (vm_id,))
            if row is None:
                return []
            names: List[str] = []
            for part in chunks(sorted(self._metric_ids_of(tx, row[0]))):
                cond, params = self._in("metric_id", part)
                names.extend(r[0] for r in tx.fetchall(
                    "SELECT name FROM metrics WHERE " + cond, params))
            return names
        return sorted(self._read(query, snapshot=True))

    def histories(self, vm_ids: Iterable[str], metric_prefixes: Iterable[str],
                  since: float, names: Iterable[str] | None = None,
                  raw_since: float | None = None) -> Dict[str, Dict[str, List[Point]]]:
        prefixes = [p for p in metric_prefixes if p]
        exact = None if names is None else set(names)
        wanted = sorted(set(vm_ids))
        if not prefixes or not wanted:
            return {}

        def query(tx: Tx) -> Dict[str, Dict[str, List[Point]]]:
            cond = " OR ".join("substr(name, 1, %d) = ?" % len(p) for p in prefixes)
            metrics = {mid: name for mid, name in tx.fetchall(
                "SELECT metric_id, name FROM metrics WHERE " + cond, prefixes)
                if prefix_match(name, prefixes) and (exact is None or name in exact)}
            keys = self._vm_keys(tx, wanted)
            by_key = {key: vm_id for vm_id, key in keys.items()}
            out: Dict[str, Dict[str, List[Point]]] = {vm_id: {} for vm_id in keys}
            if not metrics or not keys:
                return out
            mcond, mparams = self._in("metric_id", sorted(metrics))
            raw_from = since
            if raw_since is not None and bucket_of(raw_since) > since:
                raw_from = bucket_of(raw_since)
            reads = self._history_reads(tx, since, raw_from)
            for part in chunks(sorted(by_key)):
                vcond, vparams = self._in("vm_key", part)
                for sql, params in reads:
                    # rows in series order: each series' points are taken out in C
                    # (``groupby``, ``map``), not one row at a time in Python
                    rows = tx.fetchnumbers(sql % (vcond, mcond) + " ORDER BY 1, 2, 3, 4",
                                           vparams + mparams + params)
                    for (vm_key, metric_id), group in itertools.groupby(rows, _SERIES_KEY):
                        out[by_key[vm_key]].setdefault(metrics[metric_id], []).extend(
                            map(_POINT, group))
            for series in out.values():
                for points in series.values():
                    points.sort()  # (one sorted run per read: timsort merges them)
            return out
        return self._read(query, snapshot=True)

    def _rolled_span(self, tx: Tx) -> Tuple[float, float] | None:
        """``(start, end)``: raw samples still kept from ``start`` to ``end`` are in rollups
        already (``roll_up``, ahead of retention; those rollups are hidden from other queries
        while the raw samples are kept, ``_visible_rollups``), or None."""
        return None

    def _history_reads(self, tx: Tx, since: float, raw_from: float
                       ) -> List[Tuple[str, List[Any]]]:
        """The queries of ``histories`` (each with ``%s`` for the VM and the metric
        conditions, and its parameters): the rollups shown, 5-minute means of the raw samples
        from ``since`` to ``raw_from`` (a bucket start), raw samples after. The means of the
        raw samples ``roll_up`` already rolled come from those rollups (``_rolled_span``), so
        only the hours not rolled yet are averaged from raw samples: the same means (a rollup
        is its bucket's mean, late samples merged), without an aggregate over two days of
        raw samples at each refit."""
        visible, visible_params = self._visible_rollups(tx)
        span = self._rolled_span(tx) if raw_from > since else None
        first = rolled = since
        if span is not None:
            first, rolled = max(span[0], bucket_of(since)), min(span[1], raw_from)
        raw = ("SELECT vm_key, metric_id, t, value FROM samples WHERE %s AND %s AND t >= ?",
               [raw_from])
        if rolled <= first:
            reads = []
            if self._rollups_from(tx, bucket_of(since)):
                reads.append(("SELECT vm_key, metric_id, bucket, v_avg FROM rollups WHERE %s"
                              " AND %s AND bucket >= ? AND " + visible,
                              [bucket_of(since)] + visible_params))
            if raw_from > since:
                reads.append(self._means_read(since, raw_from))
            return reads + [raw]
        reads = [("SELECT vm_key, metric_id, bucket, v_avg FROM rollups WHERE %s AND %s"
                  " AND bucket >= ? AND bucket < ? AND " + visible,
                  [bucket_of(since), first] + visible_params)]
        if first > since:
            reads.append(self._means_read(since, first))
        reads.append(("SELECT vm_key, metric_id, bucket, v_avg FROM rollups WHERE %s AND %s"
                      " AND bucket >= ? AND bucket < ?", [first, rolled]))
        if rolled < raw_from:
            reads.append(self._means_read(rolled, raw_from))
        return reads + [raw]

    def _rollups_from(self, tx: Tx, bucket: float) -> bool:
        """Whether a rollup that queries show may lie at ``bucket`` or later. Retention's lie
        before the raw cutoff, the roll-up's are hidden while their raw samples are kept, so
        after the cutoff only an import can have put one (``import_history`` keeps its newest
        bucket in ``meta``, ``IMPORTED_KEY``): a pass's read of the samples since its last
        pass skips a query of every rollup partition from then on that finds nothing."""
        found = dict(tx.fetchall("SELECT key, value FROM meta WHERE key IN (?, ?)",
                                 ("raw_cutoff", IMPORTED_KEY)))
        if "raw_cutoff" in found and bucket < float(found["raw_cutoff"]):
            return True
        return IMPORTED_KEY in found and bucket <= float(found[IMPORTED_KEY])

    def _means_read(self, start: float, end: float) -> Tuple[str, List[Any]]:
        """5-minute means of the raw samples from ``start`` to ``end``, at bucket starts."""
        return ("SELECT vm_key, metric_id, (" + self._bucket("t") + ") * 1.0, avg(value)"
                " FROM samples WHERE %s AND %s AND t >= ? AND t < ? GROUP BY 1, 2, 3",
                [start, end])

    # -- retention --------------------------------------------------------------------------

    def apply_retention(self, now: float) -> Dict[str, int]:
        cfg = self.config
        stats = {"raw_rolled": 0, "rollups_written": 0, "rollups_deleted": 0,
                 "ledger_pruned": 0, "vms_removed": 0, "event_states_pruned": 0, "skipped": 0}
        raw_cutoff = bucket_of(now - cfg.raw_retention_s)
        with self._retention_guard() as allowed:
            if not allowed:
                stats["skipped"] = 1
                return stats
            while True:
                step = self._write(lambda tx: self._roll_step(tx, raw_cutoff))
                if step is None:
                    break
                stats["raw_rolled"] += step[0]
                stats["rollups_written"] += step[1]
            rollup_cutoff = now - cfg.rollup_retention_s
            while True:
                dropped = self._write(lambda tx: self._drop_step(tx, rollup_cutoff))
                if dropped is None:
                    break
                stats["rollups_deleted"] += dropped
            self._prune(now, raw_cutoff, stats)
        return stats

    def _prune(self, now: float, raw_cutoff: float, stats: Dict[str, int]) -> None:
        """The ledger, event states, silent VMs, then series and metric names no longer
        used (the end of every retention pass)."""
        cfg = self.config
        stats["ledger_pruned"] = self._write(lambda tx: tx.execute(
            "DELETE FROM ingested WHERE ingested_at < ?", (raw_cutoff,)))
        stats["event_states_pruned"] = self._write(lambda tx: tx.execute(
            "DELETE FROM event_states WHERE updated_at < ?", (now - cfg.vm_retention_s,)))
        stats["vms_removed"] = self._remove_silent_vms(now - cfg.vm_retention_s)
        stats["series_pruned"] = stats["metrics_pruned"] = 0
        try:
            stats["series_pruned"], stats["metrics_pruned"] = self._write(
                lambda tx: self._prune_series(tx, now - cfg.rollup_retention_s - SLACK_S))
        except self._lock_timeouts:
            stats["lock_timeouts"] = 1  # the next pass does it

    def _lock_names(self, tx: Tx) -> None:
        """Keep ingest from registering series until this transaction ends (a backend with
        concurrent writers locks ``metrics``; SQLite has one writer anyway)."""

    #: Exceptions of ``_lock_names`` giving up on a long transaction.
    _lock_timeouts: Tuple[Type[BaseException], ...] = ()

    def _prune_series(self, tx: Tx, cutoff: float) -> Tuple[int, int]:
        """Drop series not seen since ``cutoff`` with what is left of their data (normally
        nothing but samples a guest dated far ahead), then the metric names no series uses;
        (series, names) dropped. The newest name is kept, so SQLite never hands a dropped
        metric_id out again."""
        self._lock_names(tx)
        expired = [(r[0], r[1]) for r in tx.fetchall(
            "SELECT vm_key, metric_id FROM series WHERE seen_at < ? ORDER BY 1, 2", (cutoff,))]
        for table in ("samples", "rollups", "series"):
            tx.executemany("DELETE FROM %s WHERE vm_key = ? AND metric_id = ?" % table, expired)
        names = tx.execute(
            "DELETE FROM metrics WHERE metric_id < (SELECT max(metric_id) FROM metrics)"
            " AND NOT EXISTS (SELECT 1 FROM series s WHERE s.metric_id = metrics.metric_id)")
        return len(expired), names

    def _roll_step(self, tx: Tx, raw_cutoff: float) -> Tuple[int, int] | None:
        """Roll the oldest span of raw samples, or record the cutoff and return None."""
        row = tx.fetchone("SELECT min(t) FROM samples")
        oldest = row[0] if row else None
        current = self._raw_cutoff(tx)
        if oldest is None or oldest >= raw_cutoff:
            if current is None or raw_cutoff > current:
                self._set_meta(tx, "raw_cutoff", repr(raw_cutoff))
            return None
        end = min(bucket_of(oldest) + ROLL_SPAN, raw_cutoff)
        moved = self._roll(tx, end)
        if current is None or end > current:
            # Ingest drops samples older than this from now on: their buckets are rolled.
            self._set_meta(tx, "raw_cutoff", repr(end))
        return moved

    def _drop_step(self, tx: Tx, cutoff: float) -> int | None:
        row = tx.fetchone("SELECT min(bucket) FROM rollups")
        oldest = row[0] if row else None
        if oldest is None or oldest >= cutoff:
            return None
        return tx.execute("DELETE FROM rollups WHERE bucket < ?",
                          (min(oldest + DROP_SPAN, cutoff),))

    def _remove_silent_vms(self, cutoff: float) -> int:
        def work(tx: Tx) -> int:
            keys = [r[0] for r in tx.fetchall(
                "SELECT v.vm_key FROM vms v LEFT JOIN verdicts d ON d.vm_key = v.vm_key"
                " WHERE COALESCE(v.ingested_at, v.received_at, d.updated_at, 0) < ?",
                (cutoff,))]
            for part in chunks(keys):
                cond, params = self._in("vm_key", part)
                for table in ("latest_reports", "verdicts", "ingested", "samples", "rollups",
                              "series", "vms"):
                    tx.execute("DELETE FROM %s WHERE %s" % (table, cond), params)
            return len(keys)
        return self._write(work)

    # -- bulk import ------------------------------------------------------------------------

    def import_history(self, vm_id: str, samples: Iterable[Tuple[str, float, float]] = (),
                       rollups: Iterable[Tuple[str, float, float, float, float, int]] = (),
                       host_id: str | None = None) -> int:
        raw = list(samples)
        rolled = list(rollups)

        def work(tx: Tx) -> int:
            vm_key = self._ensure_vms(tx, {vm_id: host_id})[vm_id]
            ids = self._ensure_metrics(tx, {r[0] for r in raw} | {r[0] for r in rolled})
            # registered like ingest's series (an import is not capped)
            self._upsert_series(tx, [(vm_key, mid, time.time()) for mid in sorted(ids.values())])
            self._insert_samples(tx, sorted((vm_key, ids[m], float(t), float(v))
                                            for m, t, v in raw))
            self._insert_rollups(tx, sorted(
                (vm_key, ids[m], float(b), float(a), float(lo), float(hi), int(n))
                for m, b, a, lo, hi, n in rolled))
            if rolled:
                newest = max(float(r[1]) for r in rolled)
                row = tx.fetchone("SELECT value FROM meta WHERE key = ?", (IMPORTED_KEY,))
                if row is None or float(row[0]) < newest:
                    self._set_meta(tx, IMPORTED_KEY, repr(newest))
            return len(raw) + len(rolled)
        return self._write(work)


@dataclass
class _Ingested:
    """What one ingest transaction did: the batch positions of the reports it stored, the
    samples it dropped (stale: behind the raw cutoff; capped: new series beyond a VM's cap,
    by vm_id) and the series it confirmed ``(vm_id, vm_key, {name: metric_id})``,
    for the cache once committed."""

    accepted: List[int]
    stale: int = 0
    capped: Dict[str, int] = field(default_factory=dict)
    confirmed: List[Tuple[str, int, Dict[str, int]]] = field(default_factory=list)


#: a history row (vm_key, metric_id, t, value): its series, its point
_SERIES_KEY = operator.itemgetter(0, 1)
_POINT = operator.itemgetter(2, 3)


def _merge_buckets(rolled: List[Tuple[Any, ...]], raw: List[Tuple[Any, ...]]) -> List[Point]:
    """5-minute points from rollups and raw buckets; a bucket in both (late samples that came
    after their bucket was rolled) is their count-weighted average."""
    merged: Dict[float, Tuple[float, int]] = {}
    for rows in (rolled, raw):
        for bucket, avg, count in rows:
            bucket = float(bucket)
            if bucket in merged:
                prev, prev_n = merged[bucket]
                total = prev_n + count
                merged[bucket] = ((prev * prev_n + avg * count) / total, total)
            else:
                merged[bucket] = (float(avg), int(count))
    return [(b, merged[b][0]) for b in sorted(merged)]
