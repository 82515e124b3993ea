"""The health pass recomputes forecasts only for VMs with new data (real SQLite store)."""

import concurrent.futures

from engine_plugin.health import Thresholds
from engine_plugin.service.evaluation import STATE_PREFIX, HealthPass
from engine_plugin.service.metrics import ServiceMetrics
from engine_plugin.storage import open_store

from .reports import GiB, envelope

VM_A = "11111111-2222-4333-8444-000000000001"
VM_B = "11111111-2222-4333-8444-000000000002"


class CountingStore:
    """The real store, counting which VMs' histories the pass reads."""

    def __init__(self, store):
        self.store = store
        self.history_reads = []

    def histories(self, vm_ids, prefixes, since):
        self.history_reads.append(sorted(vm_ids))
        return self.store.histories(vm_ids, prefixes, since)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_forecasts_are_recomputed_only_for_vms_with_new_data(tmp_path):
    real = open_store("sqlite:///%s" % (tmp_path / "vmdiag.db"))
    real.migrate()
    store = CountingStore(real)
    clock = [1_800_000_000.0]
    executor = concurrent.futures.ThreadPoolExecutor(1)
    health = HealthPass(store, lambda vm_id=None: Thresholds(), executor, ServiceMetrics(),
                        clock=lambda: clock[0])
    for seq in range(30):   # a disk filling 1 GiB a minute for half an hour
        t = clock[0] - (30 - seq) * 60
        store.store.ingest([envelope(VM_A, "host1", seq, now=t, root_used=(5 + seq) * GiB)],
                           now=t)
        store.store.ingest([envelope(VM_B, "host1", seq, now=t)], now=t)
    health.evaluate([VM_A, VM_B])
    assert store.history_reads == [[VM_A, VM_B]]
    state = store.event_state(STATE_PREFIX + VM_A)
    [root] = [f for f in state["forecasts"] if f["metric"] == "fs.used:/"]
    assert root["status"] == "critical" and state["forecasts_at"] == clock[0]

    # ten minutes later vm-a reported again, vm-b went silent: only vm-a's history is read,
    # vm-b keeps its forecasts (and is judged silent)
    clock[0] += 600
    store.store.ingest([envelope(VM_A, "host1", 30, now=clock[0] - 5, root_used=36 * GiB)],
                       now=clock[0] - 5)
    health.evaluate([VM_A, VM_B])
    assert store.history_reads[-1] == [VM_A]
    assert store.event_state(STATE_PREFIX + VM_A)["forecasts_at"] == clock[0]
    silent = store.event_state(STATE_PREFIX + VM_B)
    assert silent["forecasts_at"] == clock[0] - 600 and silent["status"] == "unknown"
    executor.shutdown()
    real.close()
