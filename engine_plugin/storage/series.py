"""Each VM's series: the cap on how many it may have, and what ingest already knows of them.

Metric names carry guest data (``fs.used:<mountpoint>``, ``net.rx_bps:<ifname>``,
``proc.rss:<process name>``), so a guest that reports a new name in every report would grow
the store's name dictionary (``metrics``) without bound. The ``series`` table (schema 5)
registers each VM's series: a VM may have at most ``StorageConfig.max_series_per_vm`` of
them; the samples of new series beyond it are dropped and counted (``IngestResult.capped_samples``),
the report itself is stored as usual. Retention drops the series nobody reported for longer
than rollup retention (plus ``SLACK_S``) with whatever is left of their data, then the names
no series uses (``SqlStore._prune_series``), so the dictionary shrinks back.

What ingest knows (``SeriesCache``): per VM, the names it registered or confirmed (and so
whose ``seen_at`` it refreshed) less than ``RECHECK_S`` ago, with their metric ids. A report
whose names are all known costs one dict lookup per sample and no SQL; the others go through
the registry in the ingest's transaction (``SqlStore._register_series``). The cache holds
what the VMs reported within the last day, no more: entries expire and are swept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Tuple

#: How long a VM's confirmed series are trusted without asking the database, and so how often
#: at most each series' ``seen_at`` is written: between half this and this (spread, so VMs
#: that all started at once do not recheck at once).
RECHECK_S = 86400.0
#: A confirmation rewrites a series' ``seen_at`` only when it is older than this: with
#: several processes (or a restart) confirming the same series, it is written at most twice
#: a day, and a restarted service's confirmations mostly write nothing.
REFRESH_S = RECHECK_S / 2
#: A series is dropped once nothing was seen of it for rollup retention plus this: its
#: ``seen_at`` lags the last report by up to ``RECHECK_S + REFRESH_S`` (a day and a half).
SLACK_S = 2 * 86400.0


@dataclass(frozen=True)
class KnownSeries:
    """Series of one VM that ingest may use without asking the database, until ``expires``
    (the engine's receive time)."""

    vm_key: int
    expires: float
    ids: Dict[str, int]


class SeriesCache:
    """``KnownSeries`` by vm_id. Entries are replaced whole after the transaction that
    confirmed them committed, never changed in place, so readers on other threads need no
    lock."""

    def __init__(self) -> None:
        self._vms: Dict[str, KnownSeries] = {}
        self._next_sweep = 0.0
        # One str and int object per name for all VMs (a VM's dict then costs its table
        # only: about 2.3 KB for 60 series instead of 5); rebuilt by ``sweep``.
        self._shared: Dict[str, Tuple[str, int]] = {}

    def get(self, vm_id: str, vm_key: int, now: float) -> KnownSeries | None:
        """The VM's known series, if still valid (and for this ``vm_key``: a VM removed by
        retention and back gets a new key)."""
        known = self._vms.get(vm_id)
        if known is None or known.expires <= now or known.vm_key != vm_key:
            return None
        return known

    def confirm(self, vm_id: str, vm_key: int, ids: Dict[str, int], now: float) -> None:
        """Add names the registry just confirmed (committed) to the VM's entry."""
        known = self.get(vm_id, vm_key, now)
        if known is None:
            expires = now + RECHECK_S * random.uniform(0.5, 1.0)
            merged: Dict[str, int] = {}
        else:
            expires = known.expires
            merged = dict(known.ids)
        shared = self._shared
        for name, metric_id in ids.items():
            pair = shared.get(name)
            if pair is None or pair[1] != metric_id:
                pair = shared[name] = (name, metric_id)
            merged[pair[0]] = pair[1]
        self._vms[vm_id] = KnownSeries(vm_key, expires, merged)

    def sweep(self, now: float) -> None:
        """Forget expired entries (VMs that stopped reporting); at most once per
        ``RECHECK_S``, so it costs nothing per report."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + RECHECK_S / 2
        self._vms = {vm_id: known for vm_id, known in self._vms.items() if known.expires > now}
        self._shared = {name: (name, metric_id) for known in self._vms.values()
                        for name, metric_id in known.ids.items()}

    def __len__(self) -> int:
        return len(self._vms)
