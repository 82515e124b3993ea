"""Built-in checks: exact statuses and the sentences an administrator reads, from section data."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from diag_protocol import encode, make_report
from guest_agent.checks import CHECKS, checks_section, exit_code, run_checks
from guest_agent.config import OPTIONS

GIB = 1 << 30
T: Dict[str, float] = {o.key: float(o.default) for o in OPTIONS if o.section == "thresholds"}


def sec(data: Dict[str, Any], errors: Any = ()) -> Dict[str, Any]:
    return {"collected_at": 1700000000.0, "duration_ms": 1.0, "errors": list(errors),
            "data": data}


def by_id(sections: Dict[str, Any], thresholds: Dict[str, float] = T) -> Dict[str, Any]:
    results, errors = run_checks(sections, thresholds)
    assert errors == []
    return {r["id"]: r for r in results}


def fs(mount: str, total: int, free: int, fstype: str = "ext4", readonly: bool = False,
       inodes_total: int = 1000000, inodes_used: int = 1000) -> Dict[str, Any]:
    used = total - free
    return {"mountpoint": mount, "device": "/dev/vda2", "fstype": fstype, "total": total,
            "used": used, "free": free, "percent": round(100.0 * used / total, 1),
            "inodes_total": inodes_total, "inodes_used": inodes_used,
            "inodes_percent": round(100.0 * inodes_used / inodes_total, 1)
            if inodes_total else None, "readonly": readonly}


def test_filesystem_fill_levels_and_messages() -> None:
    got = by_id({"resources": sec({"filesystems": [
        fs("/", 30 * GIB, int(18 * GIB)),
        fs("/var", 30 * GIB, int(1.2 * GIB)),
        fs("/home", 100 * GIB, 10 * GIB),
    ]})})
    assert got["fs.fill:/"]["status"] == "ok"
    assert got["fs.fill:/"]["message"] == "/ is 40% full (18 GiB free of 30 GiB)"
    var = got["fs.fill:/var"]
    assert var["status"] == "critical"
    assert var["message"] == ("/var is 96% full (1.2 GiB free of 30 GiB); free space or grow "
                              "the disk")
    assert (var["value"], var["threshold"]) == (96.0, 95.0)
    home = got["fs.fill:/home"]
    assert (home["status"], home["threshold"]) == ("warning", 85.0)
    assert home["message"] == ("/home is 90% full (10 GiB free of 100 GiB); free space or grow "
                               "the disk")


def test_thresholds_come_from_config() -> None:
    strict = dict(T, fs_warning_percent=30.0)
    got = by_id({"resources": sec({"filesystems": [fs("/", 30 * GIB, 18 * GIB)]})}, strict)
    assert got["fs.fill:/"]["status"] == "warning"
    assert got["fs.fill:/"]["threshold"] == 30.0


def test_inode_fill_and_filesystems_without_inode_table() -> None:
    got = by_id({"resources": sec({"filesystems": [
        fs("/srv", 10 * GIB, 5 * GIB, inodes_total=300000, inodes_used=288000),
        fs("/data", 10 * GIB, 5 * GIB, fstype="btrfs", inodes_total=0, inodes_used=0),
    ]})})
    srv = got["fs.inodes:/srv"]
    assert srv["status"] == "critical"
    assert srv["message"] == (
        "/srv has used 96% of its inodes (12,000 of 300,000 free); delete unneeded small files "
        "(caches, sessions, mail queues) or recreate the file system with more inodes")
    assert "fs.inodes:/data" not in got


def test_read_only_filesystem_is_critical_only_for_writable_types() -> None:
    got = by_id({"resources": sec({"filesystems": [
        fs("/", 30 * GIB, 18 * GIB, readonly=True),
        fs("/boot", 1 * GIB, GIB // 2, fstype="xfs"),
        fs("/media/cdrom", 1 * GIB, 1, fstype="iso9660", readonly=True),
    ]})})
    assert got["fs.readonly:/"]["status"] == "critical"
    assert got["fs.readonly:/"]["message"] == (
        "/ (ext4 on /dev/vda2) is mounted read-only, which usually means the kernel saw disk "
        "errors; check `dmesg`, repair it with fsck and remount it read-write")
    assert got["fs.readonly:/boot"]["status"] == "ok"
    assert "fs.readonly:/media/cdrom" not in got


def test_collector_error_makes_unknown_with_the_reason() -> None:
    got = by_id({"resources": sec({}, [{"field": "filesystems",
                                        "error": "/proc/mounts: Permission denied"}])})
    assert got["fs.fill"]["status"] == "unknown"
    assert got["fs.fill"]["message"] == ("Could not list file systems (/proc/mounts: Permission "
                                         "denied)")


def test_missing_data_without_error_yields_no_result() -> None:
    assert run_checks({}, T) == ([], [])


def test_failed_watched_units_and_processes() -> None:
    got = by_id({"applications": sec({
        "failed_units": [{"name": "backup.service", "description": "Backup",
                          "active_state": "failed", "sub_state": "failed"},
                         {"name": "kdump.service", "active_state": "failed",
                          "sub_state": "failed"}],
        "units": [{"name": "nginx.service", "active_state": "inactive", "sub_state": "dead",
                   "expected": "active"},
                  {"name": "sshd.service", "active_state": "active", "sub_state": "running",
                   "expected": "active"}],
        "processes": [{"name": "postgres", "present": False, "count": 0},
                      {"name": "sshd", "present": True, "count": 3}],
    })})
    assert got["units.failed"]["status"] == "warning"
    assert got["units.failed"]["message"] == (
        "2 systemd units have failed (backup.service, kdump.service); see why with `systemctl "
        "status backup.service` and clear them with `systemctl reset-failed` once fixed")
    assert got["unit.active:nginx.service"]["status"] == "critical"
    assert got["unit.active:nginx.service"]["message"] == (
        "Watched unit nginx.service is inactive (dead) instead of active; start it with "
        "`systemctl start nginx.service` and read `journalctl -u nginx.service` for why it "
        "stopped")
    assert got["unit.active:sshd.service"]["status"] == "ok"
    assert got["process.present:postgres"]["status"] == "critical"
    assert got["process.present:postgres"]["message"] == (
        "No process named postgres is running; start the service that runs it, or remove it "
        "from [watch] processes in agent.conf if it is no longer needed")
    assert got["process.present:sshd"]["message"] == "3 processes named sshd are running"


def test_no_failed_units_is_ok() -> None:
    got = by_id({"applications": sec({"failed_units": []})})
    assert got["units.failed"] == {"id": "units.failed", "name": "Failed units", "status": "ok",
                                   "message": "No systemd unit has failed", "value": 0.0,
                                   "threshold": 1.0}


def network(probes: List[Dict[str, Any]], gateway: Any = None,
            nameservers: Any = ("10.0.0.2",)) -> Dict[str, Any]:
    return {"network": sec({"default_gateway": gateway, "probes": probes,
                            "dns": {"nameservers": list(nameservers), "search": []}})}


def test_gateway_dns_tcp_http_probes() -> None:
    got = by_id(network([
        {"kind": "gateway", "target": "10.0.0.1", "ok": False, "latency_ms": None,
         "error": "timed out after 2.0s"},
        {"kind": "dns", "target": "example.org", "ok": False, "latency_ms": None,
         "error": "Name or service not known"},
        {"kind": "dns", "target": "intranet.lan", "ok": True, "latency_ms": 3.25, "error": None},
        {"kind": "tcp", "target": "db:5432", "ok": False, "latency_ms": None,
         "error": "Connection refused"},
        {"kind": "http", "target": "http://127.0.0.1:8080/health", "ok": True,
         "latency_ms": 12.0, "error": None},
    ], gateway={"address": "10.0.0.1", "interface": "eth0"}))
    assert got["net.gateway"]["status"] == "critical"
    assert got["net.gateway"]["message"] == (
        "The default gateway 10.0.0.1 (eth0) does not answer (timed out after 2.0s); check the "
        "interface's link, its VLAN and the host's bridge")
    assert got["net.dns:example.org"]["status"] == "critical"
    assert got["net.dns:example.org"]["message"] == (
        "example.org could not be resolved via 10.0.0.2 (Name or service not known); check "
        "that the name servers in /etc/resolv.conf answer and know this name")
    assert got["net.dns:intranet.lan"]["message"] == "intranet.lan resolves via 10.0.0.2 in 3.2 ms"
    assert got["net.tcp:db:5432"]["status"] == "critical"
    assert got["net.tcp:db:5432"]["message"] == (
        "db:5432 does not accept connections (Connection refused); start the service there or "
        "open the firewall between this VM and it")
    assert got["net.http:http://127.0.0.1:8080/health"]["status"] == "ok"


def test_no_default_route_and_no_nameserver_warn() -> None:
    got = by_id(network([], gateway=None, nameservers=()))
    assert got["net.gateway"]["status"] == "warning"
    assert got["net.gateway"]["message"].startswith("There is no default route")
    assert got["net.dns"]["status"] == "warning"


def resources(**data: Any) -> Dict[str, Any]:
    return {"resources": sec(data)}


@pytest.mark.parametrize("steal,status", [(2.0, "ok"), (10.0, "warning"), (31.5, "critical")])
def test_steal(steal: float, status: str) -> None:
    got = by_id(resources(cpu={"steal": steal}))["cpu.steal"]
    assert got["status"] == status
    if status == "critical":
        assert got["message"] == (
            "The hypervisor withheld 32% of CPU time from this VM (steal), so the host is "
            "overcommitted; move the VM to a less loaded host or give it dedicated CPUs")


def test_oom_swap_storm_and_memory_pressure() -> None:
    got = by_id(resources(
        oom_kills=3,
        memory={"swap_in_per_s": 1200.0, "swap_out_per_s": 300.0},
        pressure={"memory": {"some_avg10": 50.0, "some_avg60": 35.0, "full_avg10": 3.0,
                             "full_avg60": 2.0}}))
    assert got["mem.oom"]["status"] == "warning"
    assert got["mem.oom"]["message"] == (
        "The kernel killed 3 processes for lack of memory since boot; add memory to the VM or "
        "find what grows with `journalctl -k | grep -i 'out of memory'`")
    assert got["mem.swap"]["status"] == "warning"
    assert got["mem.swap"]["message"] == (
        "The guest swaps 1,500 pages/s (in 1,200, out 300), which slows everything down; add "
        "memory to the VM or reduce what runs in it")
    assert got["mem.pressure"]["status"] == "warning"
    assert got["mem.pressure"]["message"] == (
        "Tasks waited for memory 35% of the last minute (PSI avg60: some 35%, full 2%); add "
        "memory to the VM or reduce the working set")


def test_full_memory_stall_is_critical() -> None:
    got = by_id(resources(pressure={"memory": {"some_avg60": 40.0, "full_avg60": 12.0}}))
    assert got["mem.pressure"]["status"] == "critical"
    assert (got["mem.pressure"]["value"], got["mem.pressure"]["threshold"]) == (12.0, 5.0)


def test_quiet_memory_is_ok_and_first_sample_has_no_swap_rate() -> None:
    got = by_id(resources(oom_kills=0, memory={"swap_in_per_s": None, "swap_out_per_s": None},
                          pressure={"memory": {"some_avg60": 0.0, "full_avg60": 0.0}}))
    assert got["mem.oom"]["status"] == "ok"
    assert got["mem.pressure"]["status"] == "ok"
    assert "mem.swap" not in got


@pytest.mark.parametrize("time_sync,expect", [
    ({"service": None, "synchronized": None, "offset_ms": None, "source": None},
     {"time.sync": "warning"}),
    ({"service": "chronyd", "synchronized": True, "offset_ms": 0.3, "source": "ntp1"},
     {"time.sync": "ok", "time.offset": "ok"}),
    ({"service": "chronyd", "synchronized": False, "offset_ms": 7200.0, "source": None},
     {"time.sync": "warning", "time.offset": "critical"}),
    ({"service": "systemd-timesyncd", "synchronized": None, "offset_ms": None, "source": None},
     {"time.sync": "unknown"}),
])
def test_time_sync(time_sync: Dict[str, Any], expect: Dict[str, str]) -> None:
    got = by_id({"settings": sec({"time_sync": time_sync})})
    assert {k: v["status"] for k, v in got.items()} == expect


def test_time_messages() -> None:
    got = by_id({"settings": sec({"time_sync": {"service": "chronyd", "synchronized": False,
                                                "offset_ms": -7200.0, "source": "ntp1"}})})
    assert got["time.sync"]["message"] == (
        "The clock is not synchronised by chronyd, source ntp1; check that its time servers are "
        "reachable (`chronyc sources` or `timedatectl timesync-status`)")
    assert got["time.offset"]["message"] == (
        "The clock is -7.2 s off its time source; step it (`chronyc makestep`) and find why "
        "synchronisation drifts")


def test_a_broken_check_costs_only_its_own_results() -> None:
    def broken(sections: Any, t: Any) -> List[Dict[str, Any]]:
        raise ZeroDivisionError("boom")

    checks = (("broken", broken),) + CHECKS
    results, errors = run_checks(resources(cpu={"steal": 1.0}), T, checks)
    assert [r["id"] for r in results] == ["cpu.steal"]
    assert errors == [{"field": "checks.broken",
                       "error": "check failed: ZeroDivisionError: boom; please report this bug"}]


def test_exit_code_is_the_worst_status() -> None:
    assert exit_code([]) == 0
    assert exit_code([{"status": "ok"}, {"status": "unknown"}]) == 3
    assert exit_code([{"status": "unknown"}, {"status": "warning"}]) == 1
    assert exit_code([{"status": "warning"}, {"status": "critical"}, {"status": "ok"}]) == 2


def test_checks_section_is_valid_on_the_wire() -> None:
    sections = {"resources": sec({"filesystems": [fs("/", 30 * GIB, GIB)], "oom_kills": 1,
                                  "cpu": {"steal": 50.0}})}
    sections["checks"] = checks_section(sections, T)
    line = encode(make_report("b" * 36, "run-1", 0, sections))
    assert b'"fs.fill:/"' in line
    assert {r["status"] for r in sections["checks"]["data"]["results"]} == {"critical",
                                                                            "warning", "ok"}
