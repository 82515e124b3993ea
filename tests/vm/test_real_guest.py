"""End to end through a real guest: agent in a QEMU VM -> virtio-serial -> host.

The guest is booted by libvirtd from the test image, with vmdiag's channel added by running the
VDSM hook on its XML. Every figure the agent reports is compared with an independent source:
the image we built (hostname, file system superblock, static address) and QEMU's own guest
agent asking the same kernel. The last test reboots the guest and checks that reports resume
with a new boot id and no operator action.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, List

import pytest

from diag_protocol import CHANNEL_NAME
from lab.prometheus import PrometheusServer, shortened_rules
from lab.vm import qga
from lab.vm.agent_layer import BROKEN_UNIT, MISSING_PROCESS, REPORT_INTERVAL_S, SLEEPER_UNIT
from lab.vm.image import SOURCE_ROOT
from lab.vm.libvirt_env import Guest
from lab.vm.progress import log

pytestmark = pytest.mark.vm

FIRST_REPORT_TIMEOUT_S = 180.0
RULES = os.path.join(SOURCE_ROOT, "packaging", "prometheus", "vmdiag-rules.yml")
#: Watched names that are healthy in the guest: checks about them must not be critical.
HEALTHY_UNIT = "systemd-journald.service"
HEALTHY_PROCESS = "systemd-journald"


def section(report: Dict[str, Any], name: str) -> Dict[str, Any]:
    assert name in report["sections"], "report has no %s section: %s" % (
        name, sorted(report["sections"]))
    return report["sections"][name]["data"]


def superblock(image: str) -> Dict[str, int]:
    """Numeric fields of an ext4 superblock, from ``dumpe2fs -h``."""
    out = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True,
                         check=True).stdout
    return {key.strip(): int(value) for key, value in
            re.findall(r"^([A-Za-z ]+):\s+(\d+)$", out, re.MULTILINE)}


def guest_boot_id(guest: Guest) -> str:
    """The guest kernel's boot id, read by qemu-guest-agent."""
    path = "/proc/sys/kernel/random/boot_id"
    return guest.call(lambda d: qga.read_file(d, path)).decode().strip()


def checks_about(report: Dict[str, Any], name: str) -> List[Dict[str, Any]]:
    return [r for r in section(report, "checks")["results"] if r["id"].endswith(":" + name)
            or name in r["id"].split(":")]


@pytest.fixture(scope="module")
def first_report(report_feed) -> Dict[str, Any]:
    return report_feed.wait_report(timeout=FIRST_REPORT_TIMEOUT_S)


def test_hook_added_the_channel_to_the_running_domain(guest: Guest) -> None:
    assert guest.hook_used, "vdsm_hooks/hooks/before_vm_start/50_vmdiag is not in the tree"
    live = ET.fromstring(guest.call(lambda d: d.XMLDesc(0)))
    channels = {c.find("target").get("name"): c for c in live.iter("channel")}
    assert CHANNEL_NAME in channels, "libvirt's live XML has no %s channel" % CHANNEL_NAME
    assert channels[CHANNEL_NAME].find("source").get("path") == guest.channel_path


def test_report_is_from_this_boot_of_the_guest(guest: Guest, first_report) -> None:
    boot_id = guest_boot_id(guest)
    assert first_report["boot_id"] == boot_id
    assert set(first_report["sections"]) == {"network", "resources", "applications",
                                             "settings", "checks"}


def test_hostname_matches_the_guest(guest: Guest, first_report) -> None:
    reported = section(first_report, "settings")["hostname"]
    assert reported == guest.image.hostname
    assert reported == guest.call(lambda d: qga.command(d, "guest-get-host-name"))["host-name"]


def test_root_filesystem_size_matches_the_image(guest: Guest, first_report) -> None:
    roots = [fs for fs in section(first_report, "resources")["filesystems"]
             if fs["mountpoint"] == "/"]
    assert len(roots) == 1, section(first_report, "resources")["filesystems"]
    sb = superblock(guest.image.root_image)
    # statfs(2) on ext4: f_blocks = block count minus the file system's own overhead.
    expected = (sb["Block count"] - sb["Overhead clusters"]) * sb["Block size"]
    assert roots[0]["total"] == expected
    assert 0.9 * guest.image.size_bytes < roots[0]["total"] <= guest.image.size_bytes
    assert roots[0]["fstype"] == "ext4"
    assert roots[0]["readonly"] is False


def test_interface_address_matches_the_guest(guest: Guest, first_report) -> None:
    address, prefix = guest.image.address.split("/")
    found = {iface["name"]: iface for iface in section(first_report, "network")["interfaces"]
             for a in iface.get("addresses", [])
             if a["family"] == "inet" and a["address"] == address}
    assert len(found) == 1, section(first_report, "network")["interfaces"]
    name, iface = found.popitem()
    assert iface["up"] is True
    assert any(str(a["prefixlen"]) == prefix for a in iface["addresses"]
               if a["address"] == address)
    assert guest.image.address in guest.call(qga.ipv4_addresses).get(name, [])
    assert section(first_report, "network")["default_gateway"]["address"] == guest.image.gateway


def test_failed_unit_and_missing_process_are_critical(first_report) -> None:
    failed = [u["name"] for u in section(first_report, "applications")["failed_units"]]
    assert BROKEN_UNIT in failed
    for name in (BROKEN_UNIT, MISSING_PROCESS):
        about = checks_about(first_report, name)
        assert about, "no check mentions %s: %s" % (name, section(first_report, "checks"))
        assert {r["status"] for r in about} == {"critical"}, about
        assert all(r["message"] for r in about)
    for name in (HEALTHY_UNIT, HEALTHY_PROCESS):
        about = checks_about(first_report, name)
        assert about and {r["status"] for r in about} == {"ok"}, about
    processes = {p["name"]: p for p in section(first_report, "applications")["processes"]}
    assert processes[MISSING_PROCESS]["present"] is False
    assert processes[HEALTHY_PROCESS]["present"] is True


def unit_status(report: Dict[str, Any], unit: str) -> str | None:
    for r in section(report, "checks")["results"]:
        if r["id"] == "unit.active:" + unit:
            return str(r["status"])
    return None


def test_stopping_a_watched_unit_is_reported_at_once(guest: Guest, report_feed,
                                                     first_report) -> None:
    # Unit states come from systemd's D-Bus API: the image has python3-dbus. The time sync
    # state is in the full reports (the lean first one of an agent start leaves it out).
    assert section(first_report, "applications")["units_via"] == "dbus"
    full = report_feed.wait_report(lambda m: "time_sync" in section(m, "settings"))
    assert section(full, "settings")["time_sync"]["read_via"] == "dbus"
    seen = report_feed.wait_report(lambda m: unit_status(m, SLEEPER_UNIT) == "ok")
    # Stop it right after a scheduled report, so the next scheduled one is an interval away.
    report_feed.wait_report(lambda m: m["seq"] > seen["seq"])
    rc, out = guest.call(lambda d: qga.run(d, ["/bin/systemctl", "stop", SLEEPER_UNIT]))
    assert rc == 0, out
    began = time.monotonic()
    report_feed.wait_report(lambda m: unit_status(m, SLEEPER_UNIT) == "critical",
                            timeout=3 * REPORT_INTERVAL_S)
    log("critical verdict for the stopped unit at the relay after %.1f s"
        % (time.monotonic() - began))
    # The agent heard systemd's signal and reported for it (how fast, on a loaded TCG host,
    # is for benchmarks/time_to_visible.py: a scheduled report also comes within an interval).
    rc, journal = guest.call(lambda d: qga.run(d, [
        "/bin/journalctl", "-u", "vmdiag-agent.service", "--no-pager", "-o", "cat"]))
    assert "event: watched unit %s is" % SLEEPER_UNIT in journal, journal[-2000:]
    guest.call(lambda d: qga.run(d, ["/bin/systemctl", "start", SLEEPER_UNIT]))


def test_a_stopped_watched_unit_fires_the_shipped_alert_in_prometheus(
        guest: Guest, report_feed, first_report, tmp_path) -> None:
    """Guest -> relay /metrics -> a real Prometheus with packaging/prometheus/vmdiag-rules.yml
    (its ``for:`` hold times cut to 5 s, expressions and labels as shipped) -> a firing alert."""
    address = getattr(report_feed, "metrics_address", None)
    assert address, "the report feed is not the relay: no /metrics to scrape"
    rules = str(tmp_path / "vmdiag-rules.yml")
    assert shortened_rules(RULES, rules, "5s") == 3
    report_feed.wait_report(lambda m: unit_status(m, SLEEPER_UNIT) == "ok")
    with PrometheusServer(str(tmp_path), [address], [rules]) as prom:
        def alert(unit: str, state: str | None = "firing") -> List[Dict[str, Any]]:
            return prom.alerts("VmdiagWatchedUnitFailed", state, vm_id=guest.vm_id, unit=unit)

        # the guest's deliberately failed unit fires at once, with the libvirt name joined in
        broken = prom.wait(lambda: alert(BROKEN_UNIT), 90, "the alert for %s" % BROKEN_UNIT)
        assert broken[0]["labels"]["name"] == guest.name
        assert broken[0]["labels"]["severity"] == "critical"
        assert not alert(SLEEPER_UNIT, None) and not prom.alerts("VmdiagAgentSilent")
        rc, out = guest.call(lambda d: qga.run(d, ["/bin/systemctl", "stop", SLEEPER_UNIT]))
        assert rc == 0, out
        began = time.monotonic()
        try:
            prom.wait(lambda: alert(SLEEPER_UNIT), 3 * REPORT_INTERVAL_S + 60,
                      "VmdiagWatchedUnitFailed firing for %s" % SLEEPER_UNIT)
            log("VmdiagWatchedUnitFailed firing for the stopped unit %.1f s after systemctl "
                "stop (rule held 5 s)" % (time.monotonic() - began))
        finally:
            guest.call(lambda d: qga.run(d, ["/bin/systemctl", "start", SLEEPER_UNIT]))
        prom.wait(lambda: not alert(SLEEPER_UNIT, None), 3 * REPORT_INTERVAL_S + 60,
                  "the alert for %s resolved after systemctl start" % SLEEPER_UNIT)


#: Hot-plug rounds: the agent keeps running (it must find the new port itself); the agent
#: stopped first (the udev rule must start it).
AGENT_STOPPED_ROUNDS = (False, True)


def guest_has_port(guest: Guest) -> bool:
    rc, _ = guest.call(lambda d: qga.run(d, ["/bin/test", "-e", "/dev/virtio-ports/"
                                                                + CHANNEL_NAME]))
    return rc == 0


def agent_active(guest: Guest) -> str:
    _, out = guest.call(lambda d: qga.run(d, ["/bin/systemctl", "is-active",
                                              "vmdiag-agent.service"]))
    return out.strip()


def agent_journal(guest: Guest, lines: int = 60) -> str:
    _, out = guest.call(lambda d: qga.run(d, [
        "/bin/journalctl", "-u", "vmdiag-agent.service", "--no-pager", "-n", str(lines),
        "-o", "short-monotonic"]))
    return out


def test_a_channel_hot_plugged_into_the_running_guest_is_picked_up(
        guest: Guest, report_feed, first_report) -> None:
    """``vmdiag-relay detach --live`` unplugs the channel from the running guest (a transient
    domain, as VDSM's), ``attach --live`` plugs it back: the agent that kept running opens the
    new port by itself (and, in the round not run yet, an agent that was stopped is started by
    the packaged udev rule); the relay follows the domain through libvirt's device events
    both ways."""
    def live_has_channel() -> bool:
        return CHANNEL_NAME in guest.call(lambda d: d.XMLDesc(0))

    def relay_cli(*args: str) -> str:
        out = report_feed.cli(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def wait(what: str, probe: Any, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while not probe():
            assert time.monotonic() < deadline, "%s: not within %.0f s" % (what, timeout)
            time.sleep(1.0)

    for agent_stopped in AGENT_STOPPED_ROUNDS:
        before = report_feed.wait_report()
        assert "channel removed from the running domain" in relay_cli("detach", guest.name,
                                                                      "--live")
        assert not live_has_channel()
        wait("the port gone in the guest", lambda: not guest_has_port(guest), 60)
        wait("the relay no longer following the VM", lambda: report_feed.show() is None, 60)
        if agent_stopped:
            stopping = time.monotonic()
            try:
                rc, out = guest.call(lambda d: qga.run(d, ["/bin/systemctl", "stop",
                                                           "vmdiag-agent.service"], 240))
            except TimeoutError:
                pytest.fail("systemctl stop vmdiag-agent did not return within 240 s; the "
                            "agent's journal:\n" + agent_journal(guest))
            log("systemctl stop vmdiag-agent took %.1f s" % (time.monotonic() - stopping))
            assert rc == 0 and agent_active(guest) == "inactive", out
        began = time.monotonic()
        assert "channel added to the running domain" in relay_cli("attach", guest.name,
                                                                   "--live")
        assert live_has_channel()
        if agent_stopped:  # nobody but udev starts it
            report = report_feed.wait_report(lambda m, b=before: m["run_id"] != b["run_id"],
                                             180)
        else:  # the same agent run found the new port
            report = report_feed.wait_report(lambda m, b=before: m["run_id"] == b["run_id"]
                                             and m["seq"] > b["seq"], 180)
        log("hot-plugged channel (agent %s): a report at the relay %.1f s after attach"
            % ("started by udev" if agent_stopped else "running", time.monotonic() - began))
        assert report["boot_id"] == first_report["boot_id"]
        assert agent_active(guest) == "active"


def test_reports_resume_after_guest_reboot_and_feed_restart(guest: Guest, report_feed,
                                                           first_report) -> None:
    old_boot = first_report["boot_id"]
    offset = guest.reboot()
    guest.wait_for_boot(after=offset)
    report_feed.restart()
    report = report_feed.wait_report(lambda m: m["boot_id"] != old_boot,
                                     timeout=FIRST_REPORT_TIMEOUT_S)
    guest.call(qga.wait_ready)
    boot_id = guest_boot_id(guest)
    assert report["boot_id"] == boot_id != old_boot
    assert report["run_id"] != first_report["run_id"]
    assert section(report, "settings")["hostname"] == guest.image.hostname
