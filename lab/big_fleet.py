"""A large fleet for the paging tests and the fleet page benchmark: the stand-in engine's
clusters, hosts and VMs, and the store's reports and verdicts of the same VMs.

Everything is deterministic for a seed, so a test knows what to expect::

    fleet = BigFleet(10_000, hosts=200)
    fleet.add_to_standin(engine)           # clusters, hosts, VMs (names, placement)
    fleet.fill_store(store, now)           # each VM's verdict, then one report per VM
    fleet.status[vm_id], fleet.host_of[vm_id], fleet.expected_counts(vm_ids)

Verdicts are written with ``Store.set_verdict`` (what the health pass stores), not computed
by the health pass: the lists under test only read them, and 10,000 evaluations would cost
minutes. Reports go through ``Store.ingest`` as the relay's envelopes, so the rows the
summaries read are real ones.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Dict, Iterable, List, Sequence

from diag_protocol.vocabulary import STATUSES, finding

from .store_reports import envelope, vm_uuid

#: Status mix of the fleet (fractions of VMs; the rest are ok).
MIX = (("critical", 0.01), ("warning", 0.05), ("unknown", 0.02))
FINDINGS = {
    "critical": ("fs.fill:/", "/ is 97% full: free space or grow the disk."),
    "warning": ("memory.percent", "memory 93% used for 20 min."),
    "unknown": ("engine.silent", "the agent has not reported for 25 min."),
}
INGEST_BATCH = 500


def _uuid(kind: int, n: int) -> str:
    return str(uuid.UUID(int=(0x6B1F << 112) + (kind << 96) + n))


class BigFleet:
    """``n`` VMs spread round-robin over ``hosts`` hosts, ten hosts per cluster."""

    def __init__(self, n: int, hosts: int = 100, seed: int = 17,
                 hostile_every: int = 0) -> None:
        self.n = n
        rng = random.Random(seed)
        self.cluster_ids = [_uuid(1, c) for c in range(max(1, (hosts + 9) // 10))]
        self.host_ids = [_uuid(2, h) for h in range(hosts)]
        self.host_names = {h: "hv-%03d" % i for i, h in enumerate(self.host_ids)}
        self.cluster_of_host = {h: self.cluster_ids[i // 10] for i, h in enumerate(self.host_ids)}
        self.vm_ids: List[str] = []
        self.names: Dict[str, str] = {}
        self.host_of: Dict[str, str] = {}
        self.status: Dict[str, str] = {}
        self.number: Dict[str, int] = {}
        for i in range(n):
            vm_id = vm_uuid(i)
            self.vm_ids.append(vm_id)
            self.number[vm_id] = i
            name = "vm-%05d" % i
            if hostile_every and i % hostile_every == 0:
                name += ' <img src=x onerror="window.__xss(%d)">' % i
            self.names[vm_id] = name
            self.host_of[vm_id] = self.host_ids[i % hosts]
            roll, status = rng.random(), "ok"
            for candidate, share in MIX:
                if roll < share:
                    status = candidate
                    break
                roll -= share
            self.status[vm_id] = status

    def cluster_name(self, cluster_id: str) -> str:
        return "cluster-%02d" % self.cluster_ids.index(cluster_id)

    def add_to_standin(self, engine: Any) -> None:
        for cluster_id in self.cluster_ids:
            engine.add_cluster(cluster_id, self.cluster_name(cluster_id))
        for host_id in self.host_ids:
            engine.add_host(host_id, self.host_names[host_id], self.cluster_of_host[host_id],
                            address=self.host_names[host_id] + ".example.test")
        for vm_id in self.vm_ids:
            host_id = self.host_of[vm_id]
            engine.add_vm(vm_id, self.names[vm_id], host_id, self.cluster_of_host[host_id])

    def verdict(self, vm_id: str, now: float) -> Dict[str, Any]:
        status = self.status[vm_id]
        findings = []
        if status in FINDINGS:
            code, message = FINDINGS[status]
            findings.append(finding(code, status, message))
        return {"status": status, "since": now - 600, "findings": findings, "forecasts": []}

    def fill_store(self, store: Any, now: float, vm_ids: Iterable[str] | None = None) -> None:
        """Every VM's verdict, then one report per VM (ingested in batches).

        The verdicts come first and say they cover data up to ``now`` (``data_through``),
        later than the reports' ingest time: the health pass, which evaluates only VMs with
        newer data, never takes these VMs up, so it cannot overwrite a verdict with one it
        computed from a report read meanwhile."""
        wanted = list(self.vm_ids if vm_ids is None else vm_ids)
        for vm_id in wanted:
            store.set_verdict(vm_id, self.verdict(vm_id, now), now, data_through=now)
        for start in range(0, len(wanted), INGEST_BATCH):
            part = wanted[start:start + INGEST_BATCH]
            store.ingest([envelope(self.number[v], 0, now - 30, host_id=self.host_of[v],
                                   received_at=now - 29, extra=0) for v in part], now=now - 29)

    def expected_counts(self, vm_ids: Sequence[str]) -> Dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for vm_id in vm_ids:
            counts[self.status[vm_id]] += 1
        return counts
