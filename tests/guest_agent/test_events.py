"""The event watcher: unit signals over a real D-Bus, real processes, real mounts.

Units: the stand-in systemd on a real dbus-daemon sends PropertiesChanged as systemd does.
Processes: a real child process, killed. File systems: a real bind mount remounted read-only,
and the fill threshold crossed on this machine's own file system.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest

from guest_agent import platform
from guest_agent.collectors import CollectorOptions, CollectorState, collect_section
from guest_agent.events import EventWatcher, RateLimit
from guest_agent.platform import Bus, Machine, NoBus, Paths
from guest_agent.platform.linux.unit_events import unit_name

from .fake_systemd import FakeSystemd, unit_path
from .test_dbus import UNITS

THRESHOLDS = {"fs_critical_percent": 95.0}


class Triggers:
    def __init__(self) -> None:
        self.reasons: List[str] = []
        self.cond = threading.Condition()

    def __call__(self, reason: str) -> None:
        with self.cond:
            self.reasons.append(reason)
            self.cond.notify_all()

    def wait(self, pred: Callable[[List[str]], bool], timeout: float = 10.0) -> List[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.reasons), timeout), self.reasons
            return list(self.reasons)


@pytest.fixture
def fake(tmp_path: Any) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path), {"units": UNITS})
    try:
        yield fake
    finally:
        fake.close()


def test_a_watched_unit_stopping_is_heard_at_once(tmp_path: Any, fake: FakeSystemd) -> None:
    root = tmp_path / "root"
    (root / "run/systemd/system").mkdir(parents=True)
    bus = Bus(fake.address)
    m = Machine(paths=Paths(str(root)), bus=bus)
    triggers = Triggers()
    options = CollectorOptions(watched_units=["sshd.service", "cron.service=inactive"],
                               machine=m)
    watcher = EventWatcher(options, THRESHOLDS, triggers, poll_s=0.2, min_interval_s=0.5)
    watcher.start()
    try:
        assert watcher.units_via == "signals"
        state = CollectorState()
        watcher.note_report({"applications": collect_section("applications", options, state)},
                            state)
        assert "Subscribe" in fake.calls()
        fake.set_state("sshd.service", "deactivating", "stop-sigterm")
        fake.set_state("sshd.service", "inactive", "dead")  # still not ok: no second event
        reasons = triggers.wait(lambda r: len(r) >= 1)  # no polling here: only the signal
        assert reasons == ["watched unit sshd.service is deactivating"]
        fake.set_state("cron.service", "inactive", "dead")  # as expected: nothing to report
        fake.set_state("other.service", "failed", "failed")  # any unit failing is reported
        reasons = triggers.wait(lambda r: len(r) >= 2)
        assert reasons[1] == "unit other.service failed"
        fake.set_state("sshd.service", "active", "running")  # back: reported too
        reasons = triggers.wait(lambda r: len(r) >= 3)
        assert reasons[2] == "watched unit sshd.service is active"
    finally:
        watcher.stop()
        bus.close()


def test_without_dbus_units_wait_for_the_report(tmp_path: Any) -> None:
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    m = Machine(paths=Paths(str(tmp_path)), bus=NoBus("test"))
    watcher = EventWatcher(CollectorOptions(watched_units=["sshd.service"], machine=m),
                           THRESHOLDS, Triggers(), poll_s=0.2)
    watcher.start()
    watcher.stop()
    assert watcher.units_via is None


def test_a_watched_process_that_dies_is_reported(tmp_path: Any) -> None:
    exe = tmp_path / "vmdiagevtd"
    shutil.copy("/bin/sleep", exe)
    child = subprocess.Popen([str(exe), "60"])
    try:
        m = Machine(bus=NoBus("test"))
        options = CollectorOptions(watched_processes=["vmdiagevtd"], machine=m)
        triggers = Triggers()
        watcher = EventWatcher(options, THRESHOLDS, triggers, poll_s=0.1, min_interval_s=0.1)
        state = CollectorState()
        section = collect_section("applications", options, state)
        assert section["data"]["processes"] == [{"name": "vmdiagevtd", "present": True,
                                                 "count": 1}]
        watcher.note_report({"applications": section}, state)
        watcher.poll()
        assert triggers.reasons == []
        child.kill()
        child.wait()
        watcher.poll()
        assert triggers.reasons == ["watched process vmdiagevtd is gone"]
        watcher.poll()
        assert len(triggers.reasons) == 1  # gone stays gone: reported once
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_file_system_turning_read_only_is_reported(tmp_path: Any) -> None:
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(mnt)], check=True)
    try:
        m = Machine(bus=NoBus("test"))
        triggers = Triggers()
        watcher = EventWatcher(CollectorOptions(machine=m), THRESHOLDS, triggers, poll_s=0.1,
                               min_interval_s=0.1)
        fs = {"mountpoint": str(mnt), "device": "/dev/vdz", "fstype": "ext4",
              "readonly": False, "percent": 1.0}
        watcher.note_report({"resources": {"data": {"filesystems": [fs]}}}, None)
        watcher.poll()
        assert triggers.reasons == []
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
        watcher.poll()
        assert triggers.reasons == ["%s turned read-only" % mnt]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_crossing_the_critical_fill_is_reported_once(tmp_path: Any) -> None:
    st = os.statvfs(tmp_path)
    used = (st.f_blocks - st.f_bfree) * 100.0 / ((st.f_blocks - st.f_bfree) + st.f_bavail)
    m = Machine(bus=NoBus("test"))
    triggers = Triggers()
    # the threshold just below this file system's real fill, the last report below it
    watcher = EventWatcher(CollectorOptions(machine=m), {"fs_critical_percent": used - 0.01},
                           triggers, poll_s=0.1, min_interval_s=0.1)
    fs = {"mountpoint": str(tmp_path), "device": "/dev/vdz", "fstype": "ext4",
          "readonly": False, "percent": max(used - 5.0, 0.0)}
    watcher.note_report({"resources": {"data": {"filesystems": [fs]}}}, None)
    watcher.poll()
    assert len(triggers.reasons) == 1 and triggers.reasons[0].startswith(
        "%s is " % tmp_path) and triggers.reasons[0].endswith("% full")
    watcher.poll()
    assert len(triggers.reasons) == 1  # still above: no new event


def test_rate_limit_sends_the_first_at_once_and_joins_the_rest() -> None:
    now = [100.0]
    fired: List[str] = []
    limit = RateLimit(fired.append, 10.0, clock=lambda: now[0])
    limit("a")
    assert fired == ["a"]
    limit("b")
    limit("c")
    limit("b")
    assert fired == ["a"]
    now[0] += 9.9
    limit.flush()
    assert fired == ["a"]
    now[0] += 0.2
    limit.flush()
    assert fired == ["a", "b; c"] and limit.coalesced == 2


def test_unit_names_from_paths() -> None:
    for name in ("sshd.service", "getty@tty1.service", "a-b_c.mount", "ünï.service"):
        assert unit_name(unit_path(name)) == name
    assert unit_name("/org/freedesktop/systemd1") is None
    assert platform.watch_units is not None


def test_unit_signals_come_back_after_the_bus_restarts(tmp_path: Any, monkeypatch: Any) -> None:
    import guest_agent.events as events

    monkeypatch.setattr(events, "RESUBSCRIBE_S", 0.0)
    socket = str(tmp_path / "bus.sock")
    root = tmp_path / "root"
    (root / "run/systemd/system").mkdir(parents=True)
    bus = Bus("unix:path=" + socket)
    first = FakeSystemd(str(tmp_path), {"units": UNITS}, socket=socket)
    triggers = Triggers()
    watcher = EventWatcher(CollectorOptions(watched_units=["sshd.service"],
                                            machine=Machine(paths=Paths(str(root)), bus=bus)),
                           THRESHOLDS, triggers, poll_s=3600, min_interval_s=0.1)
    watcher.start()
    try:
        assert watcher.units_via == "signals"
        first.close()
        deadline = time.monotonic() + 5
        while watcher.units_via != "lost" and time.monotonic() < deadline:
            watcher.poll()
            time.sleep(0.05)
        assert watcher.units_via == "lost"
        second = FakeSystemd(str(tmp_path), {"units": UNITS}, socket=socket)
        try:
            watcher.poll()
            assert watcher.units_via == "signals"
            second.set_state("sshd.service", "failed", "failed")
            assert triggers.wait(lambda r: len(r) >= 1) == ["watched unit sshd.service is failed"]
        finally:
            second.close()
    finally:
        watcher.stop()
        bus.close()
        first.close()
