"""The store's interface: what the service and the health pass may call.

Every method is synchronous and thread-safe: the aiohttp service calls the store from a thread
executor, and several service instances may share one PostgreSQL database. Both backends
(``sqlite_store``, ``postgres_store``) implement exactly this and pass the same test suite.
Times are Unix seconds (float) throughout.
"""

from __future__ import annotations

import abc
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from .config import StorageConfig
from .records import IngestResult, LatestReport, VmSummaryRow

Point = Tuple[float, float]


class Store(abc.ABC):
    """Reports, time series, verdicts and event state of the fleet."""

    #: ``"sqlite"`` or ``"postgresql"``.
    backend: str = ""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def migrate(self) -> int:
        """Bring the schema up to date (idempotent, safe to race) and return its version."""

    @abc.abstractmethod
    def ingest(self, envelopes: Sequence[Dict[str, Any]]) -> IngestResult:
        """Store a batch of validated relay envelopes ``{host_id, vm_id, received_at, report}``.

        Idempotent on (vm_id, run_id, seq): a retried batch changes nothing, also when two
        instances receive it at once. The newest report of each VM replaces its latest
        report; every report's metric samples join the time series.
        """

    @abc.abstractmethod
    def latest(self, vm_id: str) -> LatestReport | None:
        """The newest full report of ``vm_id``, or None when none was ever stored."""

    def latests(self, vm_ids: Iterable[str]) -> Dict[str, LatestReport]:
        """``latest`` of several VMs by vm_id (VMs with none are left out); backends read
        them in one query."""
        found = {vm_id: self.latest(vm_id) for vm_id in vm_ids}
        return {vm_id: row for vm_id, row in found.items() if row is not None}

    @abc.abstractmethod
    def vm_ids(self, host_id: str | None = None) -> List[str]:
        """IDs of VMs that have a latest report (on ``host_id`` if given), sorted."""

    @abc.abstractmethod
    def summaries(self, vm_ids: Iterable[str] | None = None,
                  host_id: str | None = None) -> List[VmSummaryRow]:
        """Fleet-table rows (of ``vm_ids`` / on ``host_id`` if given), sorted by vm_id."""

    @abc.abstractmethod
    def history(self, vm_id: str, metric: str, since: float, until: float,
                max_points: int = 1000) -> Tuple[str, List[Point]]:
        """(resolution, points) of one series with ``since <= t <= until``, for a chart.

        Resolution is ``"raw"`` while the range fits in raw retention and no rollups touch
        it, else ``"5m"`` (5-minute averages, rollups plus raw samples averaged on the fly).
        At most ``max_points`` points come back (LTTB keeps spikes).
        """

    @abc.abstractmethod
    def rollups(self, vm_id: str, metric: str, since: float, until: float
                ) -> List[Tuple[float, float, float, float, int]]:
        """Rolled-up buckets ``(start, avg, min, max, count)`` of one series that start in
        ``[since, until]``, for min/max bands on charts."""

    @abc.abstractmethod
    def metric_names(self, vm_id: str) -> List[str]:
        """Every metric ``vm_id`` has history for, sorted."""

    @abc.abstractmethod
    def histories(self, vm_ids: Iterable[str], metric_prefixes: Iterable[str],
                  since: float, names: Iterable[str] | None = None,
                  raw_since: float | None = None) -> Dict[str, Dict[str, List[Point]]]:
        """Bulk history for the health pass: ``{vm_id: {metric: [(t, v), ...]}}``.

        Metrics whose name starts with any prefix (and, given ``names``, is one of them);
        rollup averages (at bucket start) for times already rolled up, raw samples after;
        sorted by time. Given ``raw_since``, raw samples before the start of its rollup bucket
        are averaged by rollup bucket too (computed by the database, stamped at the bucket's
        start, as the rollups will be): a refit reads its week's older part as 5-minute means.
        Unknown VMs are absent.
        """

    @abc.abstractmethod
    def set_verdict(self, vm_id: str, verdict: Dict[str, Any], now: float,
                    data_through: float | None = None) -> None:
        """Store the health verdict of ``vm_id`` (replacing the previous one);
        ``data_through``: the engine receive time of the latest report it was computed from
        (``vms_with_new_data`` compares it with the VM's latest report)."""

    @abc.abstractmethod
    def set_verdicts(self, verdicts: Sequence[Tuple[str, Dict[str, Any], float | None]],
                     now: float, states: Dict[str, Dict[str, Any]] | None = None) -> None:
        """``set_verdict`` for ``(vm_id, verdict, data_through)`` of many VMs, and
        ``set_event_state`` for ``states``, in one transaction (a health pass's batch: its
        verdicts, evaluation states and the oVirt events they call for)."""

    @abc.abstractmethod
    def vms_with_new_data(self, since: float | None = None) -> List[str]:
        """VMs whose latest report is newer than what their verdict was computed from (or
        that have no verdict yet), sorted; with ``since``, only VMs whose latest report the
        engine received at or after it (an index range instead of every VM)."""

    @abc.abstractmethod
    def verdicts(self, vm_ids: Iterable[str] | None = None) -> Dict[str, Dict[str, Any]]:
        """Stored verdicts by vm_id (of ``vm_ids`` if given)."""

    @abc.abstractmethod
    def event_state(self, key: str) -> Dict[str, Any] | None:
        """What was last recorded for an oVirt event key, or None."""

    def event_states(self, keys: Iterable[str]) -> Dict[str, Dict[str, Any]]:
        """``event_state`` of several keys (keys with none are left out); backends read them
        in one query."""
        found = {key: self.event_state(key) for key in keys}
        return {key: state for key, state in found.items() if state is not None}

    @abc.abstractmethod
    def set_event_state(self, key: str, state: Dict[str, Any],
                        now: float | None = None) -> None:
        """Record the state of an oVirt event key (replacing the previous one); ``now``
        (default: the clock) dates it for retention."""

    @abc.abstractmethod
    def set_event_states(self, states: Dict[str, Dict[str, Any]],
                         now: float | None = None) -> None:
        """``set_event_state`` for several keys in one transaction: all or none are stored
        (the event outbox, its id counter and a VM's notified state change together)."""

    @abc.abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` for ``ttl_s`` seconds of the
        database's clock; True if ``holder`` holds it now. A lease held by another holder is
        taken only once it expired."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (another instance may take it at once)."""

    @abc.abstractmethod
    def leases(self) -> Dict[str, Dict[str, Any]]:
        """Every lease: ``{name: {"holder", "expires_in", "held_for"}}`` (seconds, by the
        database's clock; ``expires_in`` below 0: expired)."""

    @abc.abstractmethod
    def apply_retention(self, now: float) -> Dict[str, int]:
        """Roll expired raw samples into 5-minute rollups, drop expired rollups, ledger rows,
        event states and VMs silent past vm retention; returns counts of what it did."""

    def roll_up(self, now: float, budget_s: float = 30.0) -> Dict[str, int]:
        """Roll raw samples of closed periods into rollups ahead of retention, so that the
        retention pass only drops or deletes them and refits read their 5-minute means from
        rollups (``histories(..., raw_since=)``); at most ``budget_s`` of work per call,
        idempotent, safe beside ingest and retention. A backend without it does nothing."""
        return {}

    @abc.abstractmethod
    def import_history(self, vm_id: str, samples: Iterable[Tuple[str, float, float]] = (),
                       rollups: Iterable[Tuple[str, float, float, float, float, int]] = (),
                       host_id: str | None = None) -> int:
        """Bulk-load history (raw ``(metric, t, value)`` and rollup ``(metric, bucket, avg,
        min, max, count)`` rows) for imports and benchmarks; existing points are kept.
        Returns the number of rows written."""

    def claim_instance(self) -> None:
        """Called by ``vmdiag-engine serve`` before it serves: a backend that can serve only
        one service instance refuses a second one here (raises ``StorageError``); the
        default (PostgreSQL) admits any number."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
