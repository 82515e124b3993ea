"""The health pass recomputes forecasts only for VMs with new data (real SQLite store)."""

import concurrent.futures

from engine_plugin.health import Thresholds
from engine_plugin.service.evaluation import STATE_PREFIX, HealthPass
from engine_plugin.service.metrics import ServiceMetrics
from engine_plugin.storage import open_store

from .reports import GiB, critical_checks, envelope

VM_A = "11111111-2222-4333-8444-000000000001"
VM_B = "11111111-2222-4333-8444-000000000002"


class CountingStore:
    """The real store, counting which VMs' histories the pass reads."""

    def __init__(self, store):
        self.store = store
        self.history_reads = []

    def histories(self, vm_ids, prefixes, since, names=None, raw_since=None):
        self.history_reads.append(sorted(vm_ids))
        return self.store.histories(vm_ids, prefixes, since, names=names, raw_since=raw_since)

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
    # never forecast: each one's history is read on its own (the cold budget counts them);
    # with half an hour of history, a second time raw (workers.MEANS_MIN_HISTORY_S)
    assert store.history_reads == [[VM_A], [VM_A], [VM_B], [VM_B]]
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


def test_first_forecasts_are_bounded_by_the_cold_budget_oldest_first(tmp_path):
    # four VMs never forecast, a budget that fits none: the least, two, are forecast a pass,
    # the others are judged on their reports at once (a critical check is raised now) and
    # come back, the longest-waiting first, ahead of a VM that arrives later
    real = open_store("sqlite:///%s" % (tmp_path / "vmdiag.db"))
    real.migrate()
    clock = [1_800_000_000.0]
    tight = Thresholds(forecast_cold_budget_ms=1e-4)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    health = HealthPass(real, lambda vm_id=None: tight, executor, ServiceMetrics(),
                        clock=lambda: clock[0])
    vms = ["11111111-2222-4333-8444-00000000001%d" % i for i in range(5)]

    def report(vm, seq, **kw):
        t = clock[0] - 60
        real.ingest([envelope(vm, "host1", seq, now=t, root_used=(5 + seq) * GiB, **kw)],
                    now=t)
    for seq in range(10):
        for i, vm in enumerate(vms[:4]):
            report(vm, seq, **({"checks": critical_checks()} if i == 3 else {}))
        clock[0] += 60

    def forecast_at(vm):
        return (real.event_state(STATE_PREFIX + vm) or {}).get("forecasts_at")
    health.evaluate(vms[:4])
    assert [forecast_at(vm) is not None for vm in vms[:4]] == [True, True, False, False]
    assert health._deferred == set(vms[2:4])
    assert real.verdicts([vms[3]])[vms[3]]["status"] == "critical"   # never delayed
    first_wait = real.event_state(STATE_PREFIX + vms[2])["cold_since"]
    assert first_wait == clock[0]

    clock[0] += 60
    for seq in range(10):
        report(vms[4], seq)
    health.evaluate(vms)   # the newcomer waits behind the VMs that waited longer
    assert [forecast_at(vm) is not None for vm in vms] == [True, True, True, True, False]
    health.evaluate(vms)
    assert all(forecast_at(vm) is not None for vm in vms)
    executor.shutdown()
    real.close()
