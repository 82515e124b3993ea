"""Unit states and time sync over a real D-Bus (dbus-daemon + the stand-in systemd).

The agent's code, dbus-python and the bus daemon are real; the service on the other end is
tests/guest_agent/fake_systemd.py. No helper command may run while the bus answers: the
machines here get a runner that fails the test on any command.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import pytest

from guest_agent import platform
from guest_agent.collectors import CollectorOptions, CollectorState, collect_section
from guest_agent.platform import Bus, CommandResult, Machine, Paths
from guest_agent.platform.linux.timesync import ntp_message_offset_ms

from .fake_systemd import FakeSystemd, unit_path

UNITS = {
    "sshd.service": {"load": "loaded", "active": "active", "sub": "running",
                     "description": "OpenSSH server daemon"},
    "backup.service": {"load": "loaded", "active": "failed", "sub": "failed",
                       "description": "Nightly backup"},
    "cron.service": {"load": "loaded", "active": "inactive", "sub": "dead",
                     "description": "Regular background program processing daemon"},
    "systemd-timesyncd.service": {"load": "loaded", "active": "active", "sub": "running",
                                  "description": "Network Time Synchronization"},
}
#: An exchange where the server's clock is 2.5 ms ahead of ours (times in us).
NTP_MESSAGE = [0, 4, 4, 2, -20, 1000, 2000, 0,
               1_000_000_000, 1_000_002_600, 1_000_002_700, 1_000_000_300]


def no_commands(argv: Sequence[str], timeout: float) -> CommandResult:
    raise AssertionError("a helper command ran although D-Bus answers: %r" % (argv,))


@pytest.fixture
def fake(tmp_path: Any) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path), {
        "units": UNITS, "timedate": {"NTPSynchronized": True, "NTP": True},
        "timesync": {"server": "ntp.example.org", "ntp_message": NTP_MESSAGE}})
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def machine(tmp_path: Any, fake: FakeSystemd) -> Iterator[Machine]:
    root = tmp_path / "root"
    (root / "run/systemd/system").mkdir(parents=True)
    bus = Bus(fake.address)
    try:
        yield Machine(paths=Paths(str(root)), runner=no_commands, bus=bus)
    finally:
        bus.close()


def test_unit_states_over_dbus(machine: Machine, fake: FakeSystemd) -> None:
    assert platform.units_via(machine) == "dbus"
    assert platform.failed_units(machine) == [
        {"name": "backup.service", "active_state": "failed", "sub_state": "failed",
         "description": "Nightly backup"}]
    states = platform.unit_states(machine, ["sshd.service", "cron.service", "nosuch.service"])
    assert states == {
        "sshd.service": {"load_state": "loaded", "active_state": "active", "sub_state": "running"},
        "cron.service": {"load_state": "loaded", "active_state": "inactive", "sub_state": "dead"},
        "nosuch.service": {"load_state": "not-found", "active_state": "inactive",
                           "sub_state": "dead"}}
    fake.set_state("sshd.service", "failed", "failed")
    assert platform.unit_states(machine, ["sshd.service"])["sshd.service"]["active_state"] \
        == "failed"
    assert [u["name"] for u in platform.failed_units(machine)] == ["backup.service",
                                                                  "sshd.service"]


def test_applications_section_says_dbus_and_starts_no_process(machine: Machine) -> None:
    options = CollectorOptions(watched_units=["sshd.service", "cron.service=inactive"],
                               machine=machine, packages_interval_s=1e9)
    data = collect_section("applications", options, CollectorState())
    assert data["data"]["units_via"] == "dbus"
    assert [(u["name"], u["active_state"], u["expected"]) for u in data["data"]["units"]] == [
        ("sshd.service", "active", "active"), ("cron.service", "inactive", "inactive")]
    assert [u["name"] for u in data["data"]["failed_units"]] == ["backup.service"]
    assert {e["field"] for e in data["errors"]} <= {"packages"}  # no package manager here


def test_time_sync_from_timesyncd_and_timedated(machine: Machine, fake: FakeSystemd) -> None:
    assert platform.time_sync(machine) == {
        "service": "systemd-timesyncd", "synchronized": True, "offset_ms": -2.5,
        "source": "ntp.example.org", "read_via": "dbus"}
    calls = fake.calls()
    assert "Get:org.freedesktop.timedate1.NTPSynchronized" in calls
    assert "GetAll:org.freedesktop.timesync1.Manager" in calls


def test_time_sync_without_any_time_daemon(machine: Machine, fake: FakeSystemd) -> None:
    fake.set_state("systemd-timesyncd.service", "inactive", "dead")
    got = platform.time_sync(machine)
    assert got["service"] is None and got["read_via"] == "dbus"


def test_ntp_message_offset_sign_and_missing_exchange() -> None:
    assert ntp_message_offset_ms(NTP_MESSAGE) == -2.5  # server ahead: our clock is slow
    behind = NTP_MESSAGE[:8] + [1_000_000_000, 999_998_000, 999_998_100, 1_000_000_300]
    assert ntp_message_offset_ms(behind) == pytest.approx(2.1)
    assert ntp_message_offset_ms(NTP_MESSAGE[:8] + [0, 0, 0, 0]) is None
    assert ntp_message_offset_ms(None) is None


def test_without_a_bus_the_commands_are_used(tmp_path: Any) -> None:
    root = tmp_path / "root"
    (root / "run/systemd/system").mkdir(parents=True)
    ran = []

    def runner(argv: Sequence[str], timeout: float) -> CommandResult:
        ran.append(argv[0])
        if argv[:2] == ["systemctl", "list-units"]:
            return CommandResult(argv, 0, "backup.service loaded failed failed Nightly backup\n")
        return CommandResult(argv, 0, "Id=sshd.service\nLoadState=loaded\nActiveState=active\n"
                                      "SubState=running\n")

    gone = Bus("unix:path=%s" % (tmp_path / "no-such-socket"))
    m = Machine(paths=Paths(str(root)), runner=runner, bus=gone)
    assert platform.units_via(m) == "systemctl"
    assert platform.failed_units(m)[0]["name"] == "backup.service"
    assert platform.unit_states(m, ["sshd.service"])["sshd.service"]["active_state"] == "active"
    assert ran == ["systemctl", "systemctl"]


def test_missing_dbus_python_is_named(tmp_path: Any, monkeypatch: Any) -> None:
    import builtins

    real_import = builtins.__import__

    def no_dbus(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "dbus" or name.startswith("dbus."):
            raise ImportError("No module named %r" % name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dbus)
    with pytest.raises(platform.BusUnavailable) as err:
        Bus().connection()
    assert "python3-dbus is not installed" in str(err.value)


def test_systemctl_while_the_bus_is_gone_and_dbus_again_when_it_is_back(tmp_path: Any) -> None:
    socket = str(tmp_path / "bus.sock")
    root = tmp_path / "root"
    (root / "run/systemd/system").mkdir(parents=True)
    ran = []

    def runner(argv: Sequence[str], timeout: float) -> CommandResult:
        ran.append(argv[0])
        return CommandResult(argv, 0, "Id=sshd.service\nLoadState=loaded\nActiveState=active\n"
                                      "SubState=running\n")

    bus = Bus("unix:path=" + socket)
    m = Machine(paths=Paths(str(root)), runner=runner, bus=bus)
    first = FakeSystemd(str(tmp_path), {"units": UNITS}, socket=socket)
    try:
        assert platform.unit_states(m, ["sshd.service"])["sshd.service"]["sub_state"] == "running"
        assert ran == []
        first.close()
        assert platform.unit_states(m, ["sshd.service"])["sshd.service"]["sub_state"] == "running"
        assert ran == ["systemctl"] and platform.units_via(m) == "systemctl"
        second = FakeSystemd(str(tmp_path), {"units": UNITS}, socket=socket)
        try:
            assert platform.units_via(m) == "dbus"
            platform.unit_states(m, ["sshd.service"])
            assert ran == ["systemctl"]
        finally:
            second.close()
    finally:
        bus.close()
        first.close()


def test_unit_paths_are_systemds() -> None:
    assert unit_path("sshd.service") == "/org/freedesktop/systemd1/unit/sshd_2eservice"
    assert unit_path("a-b@1.service") == "/org/freedesktop/systemd1/unit/a_2db_401_2eservice"
    assert os.sep == "/"
