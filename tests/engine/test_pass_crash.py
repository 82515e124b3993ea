"""A leader that dies in the middle of a health pass loses no event and plans none twice: at
every point between the pass's store writes, a new leader on the same store raises each VM's
event exactly once (real SQLite and PostgreSQL stores).

The dying leader is the real ``HealthPass`` and ``EventOutbox`` on the real store, which stops
before its k-th write, for each k: a process killed then (SIGKILL, power loss) has committed
the writes before and nothing after; one killed during a write has committed the same (the
store rolls an unfinished transaction back). ``Killed`` is a ``BaseException``, so no
``except Exception`` of the code under test carries on past the point of death. The new
leader then does what ``HealthPass`` does on gaining the lease: it evaluates every VM whose
latest report is newer than its verdict (``vms_with_new_data``).
"""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from typing import Any, Callable, Iterator, List

import pytest

from engine_plugin.health import Thresholds
from engine_plugin.ovirt.events import EventOutbox
from engine_plugin.service.evaluation import HealthPass
from engine_plugin.service.metrics import ServiceMetrics
from engine_plugin.storage import open_store

from .reports import critical_checks, envelope

VMS = ["55550000-0000-4000-8000-00000000000%d" % n for n in range(3)]
T0 = 1_800_000_000.0
#: the store's write methods a health pass calls
WRITES = ("set_verdict", "set_verdicts", "set_event_state", "set_event_states")


class Killed(BaseException):
    """The process died here: nothing after this point runs."""


class DiesBeforeWrite:
    """The real store, for a process that dies before its write number ``writes_left + 1``
    (None: lives on); counts the writes made."""

    def __init__(self, store: Any, writes_left: int | None) -> None:
        self.store = store
        self.writes_left = writes_left
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in WRITES:
            return attr

        def write(*args: Any, **kw: Any) -> Any:
            if self.writes == self.writes_left:
                raise Killed("before write %d (%s)" % (self.writes + 1, name))
            self.writes += 1
            return attr(*args, **kw)
        return write


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql",
                                     marks=pytest.mark.postgres)])
def new_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[[], Any]]:
    """``new_store()``: a migrated store on a fresh database, and a second connection to
    it (the next leader's)."""
    opened: List[Any] = []

    def make() -> Any:
        if request.param == "sqlite":
            url = "sqlite:///%s/vmdiag-%d.db" % (tmp_path, len(opened))
        else:
            url = request.getfixturevalue("pg_cluster").create_database()
        first, second = open_store(url), open_store(url)
        first.migrate()
        opened.extend((first, second))
        return first, second

    yield make
    for store in opened:
        store.close()


def health_pass(store: Any, executor: concurrent.futures.Executor) -> HealthPass:
    return HealthPass(store, lambda vm_id=None: Thresholds(), executor, ServiceMetrics(),
                      EventOutbox(store, clock=lambda: T0), clock=lambda: T0)


def dying_pass(store: Any, writes_left: int | None,
               executor: concurrent.futures.Executor) -> int:
    """The leader's pass over VMS that have just turned critical; returns its writes."""
    dying = DiesBeforeWrite(store, writes_left)
    leader = health_pass(dying, executor)
    if writes_left is None:
        leader.evaluate(VMS)
    else:
        with pytest.raises(Killed):
            leader.evaluate(VMS)
    return dying.writes


def prepare(store: Any, executor: concurrent.futures.Executor) -> None:
    """Every VM healthy (evaluated, no event), then a critical report of each."""
    for seq, checks in ((0, None), (1, critical_checks())):
        t = T0 - 120 + 60 * seq
        store.ingest([envelope(vm, "host1", seq, now=t, checks=checks) for vm in VMS], now=t)
        if seq == 0:
            health_pass(store, executor).evaluate(VMS)
    assert store.vms_with_new_data() == VMS


def test_a_leader_killed_mid_pass_loses_no_event_and_plans_none_twice(new_store) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1)
    store, _ = new_store()
    prepare(store, executor)
    writes = dying_pass(store, None, executor)
    assert writes >= 1
    assert Counter((e["vm_id"], e["status"]) for e in EventOutbox(store).pending()) == \
        Counter({(vm, "critical"): 1 for vm in VMS})

    for writes_left in range(writes):
        store, survivor_store = new_store()
        prepare(store, executor)
        dying_pass(store, writes_left, executor)
        # the new leader: every VM whose latest report is newer than its verdict
        survivor = health_pass(survivor_store, executor)
        due = survivor_store.vms_with_new_data()
        if due:
            survivor.evaluate(due)
        outbox = EventOutbox(survivor_store).pending()
        assert Counter((e["vm_id"], e["status"]) for e in outbox) == \
            Counter({(vm, "critical"): 1 for vm in VMS}), (
                "killed before write %d of %d: outbox %s, re-evaluated %s"
                % (writes_left + 1, writes, outbox, due))
        assert len({e["custom_id"] for e in outbox}) == len(VMS)
    executor.shutdown()
