"""One oVirt event per fleet pattern, instead of one per VM.

After the health pass has evaluated what ingest marked, ``PatternWatch.check`` looks at every
VM's verdict (the service account's view: all VMs, placed by the ``VmDirectory``), finds the
fleet patterns (``patterns.find``, the rule in docs/ui.md) and hands them to the event outbox,
which plans one event for each new pattern, attached to its host (or cluster), one NORMAL event
when a pattern is over, and drops the undelivered per-VM events of the VMs a new pattern covers.

Limit: per-VM events delivered before the pattern formed (the first VMs' verdicts, before 80 %
of the host had theirs) stay in oVirt's event log; the rest are replaced by the one event.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any, Dict, List

from diag_protocol.vocabulary import findings_of

from . import patterns

log = logging.getLogger("vmdiag.engine.patterns")

#: Patterns are looked for at most this often (a scan of every verdict).
MIN_INTERVAL_S = 30.0


def clock_text(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%H:%M UTC")


class PatternWatch:
    """Finds fleet patterns over all VMs and plans their events (blocking; run in an executor)."""

    def __init__(self, store: Any, directory: Any, outbox: Any) -> None:
        self.store = store
        self.directory = directory
        self.outbox = outbox
        self._last = float("-inf")
        self.min_interval = MIN_INTERVAL_S

    def check(self) -> int:
        if time.monotonic() - self._last < self.min_interval:
            return 0
        self._last = time.monotonic()
        rows: List[Dict[str, Any]] = []
        every: Dict[str, List[Dict[str, Any]]] = {}
        onsets: Dict[str, Any] = {}
        stored = {row.vm_id: row for row in self.store.summaries()}
        labels: Dict[str, str] = {}
        # Every VM oVirt places on a host counts in its host and cluster, reporting or not
        # (yet): "28 of 30" means 30 VMs on that host, never 30 that happened to report.
        for vm_id in self.directory.vm_ids():
            host_id, cluster_id = self.directory.where(vm_id)
            if not host_id and not cluster_id:
                continue  # not placed (down): on no host
            name, cluster = self.directory.lookup(vm_id)
            row = stored.get(vm_id)
            verdict = (row.verdict if row is not None else None) or {}
            if row is not None and row.host_id and host_id:
                labels.setdefault(host_id, row.host_id)  # the relay's name of the host
            rows.append({"id": vm_id, "name": name, "host_id": host_id,
                         "cluster_id": cluster_id, "cluster": cluster or cluster_id})
            every[vm_id] = findings_of(verdict)
            onsets[vm_id] = verdict.get("since")
        for entry in rows:
            entry["host_name"] = labels.get(entry["host_id"], entry["host_id"])
        found = patterns.find(rows, every, onsets)["patterns"]
        for p in found:
            p["description"] = "vmdiag: " + patterns.sentence(p, clock_text(p["since"]))
            p["host_id"] = p["id"] if p["scope"] == "host" else None
            p["cluster_id"] = p["id"] if p["scope"] == "cluster" else None
        planned = self.outbox.record_patterns(found)
        if planned:
            log.info("fleet patterns: %d event(s) planned (%d pattern(s) active)", planned,
                     len(found))
        return planned
