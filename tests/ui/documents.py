"""Realistic engine documents for the Diagnostics page tests.

The reports are built with ``diag_protocol.make_report`` and passed through
``diag_protocol.validate``, so every report here is one the relay would accept from a guest. The
VM documents around them follow the engine service's JSON contract (VM document, fleet summary,
history). Times are relative to ``now`` so the pages' "3 min ago" texts are deterministic.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

from diag_protocol import make_report, validate

GIB = 1024 ** 3

HOST_A = "6f1d2c9e-2b7a-4f0e-9d3c-0a1b2c3d4e01"
HOST_B = "6f1d2c9e-2b7a-4f0e-9d3c-0a1b2c3d4e02"
HOSTS = {HOST_A: "hv-01.lab.example", HOST_B: "hv-02.lab.example"}

VM_HEALTHY = "0b6f2d1e-0000-4000-8000-000000000001"
VM_FILLING = "0b6f2d1e-0000-4000-8000-000000000002"
VM_SILENT = "0b6f2d1e-0000-4000-8000-000000000003"
VM_DOWN = "0b6f2d1e-0000-4000-8000-000000000004"
VM_NO_AGENT = "0b6f2d1e-0000-4000-8000-000000000005"
VM_HOSTILE = "0b6f2d1e-0000-4000-8000-000000000006"
VM_UNKNOWN = "0b6f2d1e-0000-4000-8000-0000000000ff"

# Guest strings that would run script if a page inserted them as markup. The hook installed by
# the browser tests turns any execution into a recorded call of window.__xss(<n>).
PAYLOADS = [
    '<img src=x onerror="window.__xss(1)">',
    '</script><script>window.__xss(2)</script>',
    '"><svg onload="window.__xss(3)">',
    "<iframe srcdoc=\"<script>parent.__xss(4)</script>\"></iframe>",
    "javascript:window.__xss(5)",
    "{{ 7*7 }}<b data-injected=1>bold</b>",
]


def _section(now: float, data: Dict[str, Any], errors: List[dict] | None = None) -> dict:
    return {"collected_at": now - 2, "duration_ms": 41.5, "errors": errors or [], "data": data}


def network_data(*, gateway_ok: bool = True, dns_latency: float = 3.2) -> dict:
    return {
        "interfaces": [
            {"name": "eth0", "up": True, "mtu": 1500, "mac": "56:6f:a1:02:00:11",
             "speed_mbps": 10000,
             "addresses": [{"family": "inet", "address": "10.20.30.41", "prefixlen": 24},
                           {"family": "inet6", "address": "fe80::546f:a1ff:fe02:11",
                            "prefixlen": 64}],
             "rx_bytes": 81234567890, "tx_bytes": 12345678901, "rx_packets": 91234567,
             "tx_packets": 45678901, "rx_errors": 0, "tx_errors": 0, "rx_dropped": 12,
             "tx_dropped": 0, "rx_bps": 1250000.0, "tx_bps": 310000.0, "error_rate": 0.0,
             "drop_rate": 0.0},
            {"name": "lo", "up": True, "mtu": 65536, "mac": "00:00:00:00:00:00",
             "addresses": [{"family": "inet", "address": "127.0.0.1", "prefixlen": 8}],
             "rx_bytes": 1000, "tx_bytes": 1000, "rx_packets": 10, "tx_packets": 10,
             "rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0,
             "rx_bps": 0.0, "tx_bps": 0.0, "error_rate": 0.0, "drop_rate": 0.0},
        ],
        "routes": [{"destination": "0.0.0.0/0", "gateway": "10.20.30.1", "interface": "eth0",
                    "metric": 100},
                   {"destination": "10.20.30.0/24", "gateway": None, "interface": "eth0",
                    "metric": 100}],
        "default_gateway": {"address": "10.20.30.1", "interface": "eth0"},
        "dns": {"nameservers": ["10.20.30.2", "10.20.30.3"], "search": ["lab.example"]},
        "probes": [
            {"kind": "gateway", "target": "10.20.30.1", "ok": gateway_ok,
             "latency_ms": 0.42 if gateway_ok else None,
             "error": None if gateway_ok else "no reply from 10.20.30.1 in 2 s"},
            {"kind": "dns", "target": "engine.lab.example", "ok": True,
             "latency_ms": dns_latency, "error": None},
            {"kind": "tcp", "target": "10.20.30.50:5432", "ok": True, "latency_ms": 0.9,
             "error": None},
        ],
        "listening": [
            {"proto": "tcp", "address": "0.0.0.0", "port": 22, "pid": 812, "process": "sshd"},
            {"proto": "tcp6", "address": "::", "port": 443, "pid": 1290, "process": "nginx"},
            {"proto": "udp", "address": "127.0.0.1", "port": 323, "pid": 640,
             "process": "chronyd"},
        ],
    }


def resources_data(*, cpu: float, mem_percent: float, filesystems: List[dict]) -> dict:
    total_mem = 16 * GIB
    return {
        "cpu": {"count": 4, "percent": cpu, "user": cpu * 0.7, "system": cpu * 0.2,
                "iowait": 1.2, "steal": 0.3, "idle": 100 - cpu,
                "per_cpu": [{"percent": cpu, "iowait": 1.0, "steal": 0.2}] * 4,
                "load": [0.82, 0.95, 1.1]},
        "memory": {"total": total_mem, "available": int(total_mem * (1 - mem_percent / 100)),
                   "used": int(total_mem * mem_percent / 100), "percent": mem_percent,
                   "swap_total": 2 * GIB, "swap_used": GIB // 10, "swap_percent": 5.0,
                   "swap_in_per_s": 0.0, "swap_out_per_s": 0.0},
        "pressure": {"cpu": {"some_avg10": 1.5, "some_avg60": 1.2, "full_avg10": 0.0,
                             "full_avg60": 0.0},
                     "io": {"some_avg10": 0.4, "some_avg60": 0.3, "full_avg10": 0.1,
                            "full_avg60": 0.1}},
        "filesystems": filesystems,
        "disks": [{"name": "vda", "read_bps": 2.1e6, "write_bps": 5.4e6, "read_iops": 35.0,
                   "write_iops": 120.0, "await_ms": 1.8, "util_percent": 12.0}],
        "top_cpu": [{"pid": 1290, "name": "nginx", "user": "nginx", "cpu_percent": 12.5,
                     "rss": 120 * 1024 ** 2, "memory_percent": 0.7},
                    {"pid": 2211, "name": "python3", "user": "app", "cpu_percent": 8.0,
                     "rss": 512 * 1024 ** 2, "memory_percent": 3.1}],
        "top_memory": [{"pid": 2211, "name": "python3", "user": "app", "cpu_percent": 8.0,
                        "rss": 512 * 1024 ** 2, "memory_percent": 3.1}],
        "fds": {"open": 1824, "max": 65536},
        "uptime_s": 9 * 86400 + 3 * 3600,
        "boot_time": 1.7e9,
        "oom_kills": 0,
    }


def filesystem(mount: str, total: float, used: float, device: str = "/dev/vda1") -> dict:
    total, used = int(total), int(used)
    return {"mountpoint": mount, "device": device, "fstype": "xfs", "total": total,
            "used": used, "free": total - used, "percent": round(used / total * 100, 1),
            "inodes_total": 5_000_000, "inodes_used": 250_000, "inodes_percent": 5.0,
            "readonly": False}


def applications_data(*, failed: List[dict] | None = None,
                      processes: List[dict] | None = None) -> dict:
    return {
        "failed_units": failed or [],
        "units": [{"name": "nginx.service", "active_state": "active", "sub_state": "running",
                   "expected": "active"},
                  {"name": "chronyd.service", "active_state": "active", "sub_state": "running",
                   "expected": "active"}],
        "processes": processes or [{"name": "nginx", "present": True, "count": 5}],
        "packages": {"manager": "rpm", "count": 812, "digest": "sha256:4f1c2a", "changed": False},
    }


def settings_data(*, hostname: str, sysctls: Dict[str, str] | None = None) -> dict:
    return {
        "hostname": hostname, "fqdn": hostname + ".lab.example",
        "os": {"name": "Rocky Linux", "version": "9.4", "id": "rocky",
               "pretty": "Rocky Linux 9.4 (Blue Onyx)"},
        "kernel": "5.14.0-427.13.1.el9_4.x86_64", "arch": "x86_64", "timezone": "Europe/Prague",
        "time_sync": {"service": "chronyd", "synchronized": True, "offset_ms": 0.8,
                      "source": "10.20.30.2"},
        "security": {"selinux": "enforcing", "apparmor": None},
        "sysctls": sysctls or {"vm.swappiness": "30", "net.ipv4.ip_forward": "0"},
        "users": [{"name": "root", "terminal": "pts/0", "host": "10.20.30.9",
                   "started": 1.7e9}],
        "reboot_required": False, "reboot_reason": None,
    }


def checks_data(results: List[dict]) -> dict:
    return {"results": results}


def check(cid: str, name: str, status: str, message: str, value: float | None = None,
          threshold: float | None = None) -> dict:
    return {"id": cid, "name": name, "status": status, "message": message, "value": value,
            "threshold": threshold}


def report(now: float, seq: int, sections: Dict[str, dict]) -> dict:
    """A report message the relay would accept (validated by diag_protocol)."""
    return validate(make_report("b0a1-%d" % seq, "r-%d" % seq, seq, sections, now=now))


def vm_summary(vm: dict, health: str, last: float | None, findings: List[dict]) -> dict:
    return {"id": vm["id"], "name": vm["name"], "host_id": vm["host_id"],
            "host_name": vm["host_name"], "cluster": vm["cluster"], "health": health,
            "last_report_at": last, "worst_findings": findings}


class Fleet:
    """All test VMs: their VM documents, summaries and metric histories."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.docs: Dict[str, dict] = {}
        self.histories: Dict[str, Dict[str, dict]] = {}
        self._build()

    # -- helpers ---------------------------------------------------------------------------

    def _vm(self, vm_id: str, name: str, host_id: str | None, cluster: str,
            status: str = "up") -> dict:
        return {"id": vm_id, "name": name, "host_id": host_id or "",
                "host_name": HOSTS.get(host_id or "", ""), "cluster": cluster, "status": status}

    def _series(self, vm_id: str, metric: str, fn, step: float = 300.0,
                span: float = 86400.0) -> None:
        points = []
        t = self.now - span
        while t <= self.now:
            points.append([t, fn(t)])
            t += step
        self.histories.setdefault(vm_id, {})[metric] = {
            "vm_id": vm_id, "metric": metric, "resolution": "5m", "points": points,
            "forecast": None}

    def _cpu_mem(self, vm_id: str, cpu_base: float, mem_base: float, until: float) -> None:
        def cpu(t: float) -> float:
            swing = min(10.0, cpu_base / 2)
            return cpu_base + swing * math.sin((t - self.now) / 5400.0)

        self._series(vm_id, "cpu.percent", cpu)
        self._series(vm_id, "memory.percent", lambda t: mem_base + 2 * math.sin(t / 7200.0))
        if until < self.now:  # no data after the agent went silent
            for series in self.histories[vm_id].values():
                series["points"] = [p for p in series["points"] if p[0] <= until]

    # -- the fleet -------------------------------------------------------------------------

    def _build(self) -> None:
        now = self.now
        # 1. Healthy web server.
        vm = self._vm(VM_HEALTHY, "web-01", HOST_A, "Production")
        fs_root = filesystem("/", 40 * GIB, 12.5 * GIB)
        fs_boot = filesystem("/boot", 1 * GIB, 0.3 * GIB)
        rep = report(now - 40, 812, {
            "network": _section(now, network_data()),
            "resources": _section(now, resources_data(cpu=14.0, mem_percent=41.0,
                                                      filesystems=[fs_root, fs_boot])),
            "applications": _section(now, applications_data()),
            "settings": _section(now, settings_data(hostname="web-01")),
            "checks": _section(now, checks_data([
                check("fs.fill:/", "Free space on /", "ok", "/ is 31 % full.", 31.2, 85),
                check("net.gateway", "Gateway reachable", "ok",
                      "The default gateway answers in 0.4 ms.", 0.42, None)])),
        })
        self.docs[VM_HEALTHY] = {
            "vm": vm,
            "agent": {"state": "reporting", "version": "0.1.0", "last_report_at": now - 38,
                      "silent_for_s": None},
            "health": {"status": "ok", "since": now - 5 * 86400, "reasons": []},
            "forecasts": [],
            "report": rep, "received_at": now - 38,
        }
        self._cpu_mem(VM_HEALTHY, 14, 41, now)
        self._series(VM_HEALTHY, "fs.used:/", lambda t: 12.5 * GIB - (now - t) * 1000)
        self._series(VM_HEALTHY, "fs.used:/boot", lambda t: 0.3 * GIB)

        # 2. Database whose /var/lib/pgsql fills up: critical, with a forecast.
        vm = self._vm(VM_FILLING, "db-01", HOST_A, "Production")
        total = 100 * GIB
        used = 91 * GIB
        slope = 4.5 * GIB / 86400  # bytes per second
        eta_s = (total - used) / slope
        fs_data = filesystem("/var/lib/pgsql", total, used, device="/dev/vdb1")
        rep = report(now - 25, 4410, {
            "network": _section(now, network_data(dns_latency=48.0)),
            "resources": _section(now, resources_data(
                cpu=63.0, mem_percent=78.0, filesystems=[filesystem("/", 20 * GIB, 9 * GIB),
                                                         fs_data])),
            "applications": _section(now, applications_data(
                failed=[{"name": "pg-backup.service", "description": "Nightly PostgreSQL dump",
                         "active_state": "failed", "sub_state": "failed"}],
                processes=[{"name": "postgres", "present": True, "count": 14}])),
            "settings": _section(now, settings_data(hostname="db-01"),
                                 errors=[{"field": "users",
                                          "error": "utmp not readable: permission denied"}]),
            "checks": _section(now, checks_data([
                check("fs.fill:/var/lib/pgsql", "Free space on /var/lib/pgsql", "critical",
                      "/var/lib/pgsql is 91 % full and grows 4.5 GiB a day: free space or "
                      "grow the disk within 2 days.", 91.0, 90.0),
                check("unit.failed:pg-backup.service", "Failed units", "warning",
                      "pg-backup.service failed: run 'journalctl -u pg-backup' in the guest.")])),
        })
        forecast = {"metric": "fs.used:/var/lib/pgsql", "label": "Used space on /var/lib/pgsql",
                    "kind": "filesystem_bytes", "status": "critical", "eta_s": eta_s,
                    "eta_at": now + eta_s, "confidence": 0.93, "trend_per_day": slope * 86400,
                    "capacity": total, "current": used,
                    "method": "recent", "held": False,
                    "fit": {"slope": slope, "intercept": used, "t0": now, "start": now - 9 * 3600,
                            "end": now - 20, "slope_error": slope / 20, "resets": 0,
                            "reason": None}}
        self.docs[VM_FILLING] = {
            "vm": vm,
            "agent": {"state": "reporting", "version": "0.1.0", "last_report_at": now - 20,
                      "silent_for_s": None},
            "health": {"status": "critical", "since": now - 3 * 3600, "reasons": [
                {"code": "unit.failed", "severity": "warning",
                 "message": "pg-backup.service failed: run 'journalctl -u pg-backup' in the "
                            "guest.", "metric": None},
                {"code": "fs.fill", "severity": "critical",
                 "message": "/var/lib/pgsql will be full in about 2 days (at 4.5 GiB a day).",
                 "metric": "fs.used:/var/lib/pgsql"},
            ]},
            "forecasts": [forecast],
            "report": rep, "received_at": now - 20,
        }
        self._cpu_mem(VM_FILLING, 63, 78, now)
        self._series(VM_FILLING, "fs.used:/", lambda t: 9 * GIB)
        self._series(VM_FILLING, "fs.used:/var/lib/pgsql",
                     lambda t: used + slope * (t - now) + 0.2 * GIB * math.sin(t / 3000.0))

        # 3. Agent silent for 2 hours: the last report is still shown.
        vm = self._vm(VM_SILENT, "app-02", HOST_B, "Staging")
        last = now - 7200
        rep = report(last, 99, {
            "network": _section(last, network_data(gateway_ok=False)),
            "resources": _section(last, resources_data(cpu=3.0, mem_percent=22.0, filesystems=[
                filesystem("/", 30 * GIB, 7 * GIB)])),
            "applications": _section(last, applications_data()),
            "settings": _section(last, settings_data(hostname="app-02")),
            "checks": _section(last, checks_data([])),
        })
        self.docs[VM_SILENT] = {
            "vm": vm,
            "agent": {"state": "silent", "version": "0.1.0", "last_report_at": last,
                      "silent_for_s": 7200.0},
            "health": {"status": "unknown", "since": last + 300, "reasons": [
                {"code": "agent.silent", "severity": "unknown",
                 "message": "No report for 2 h: check the vmdiag-agent service in the guest.",
                 "metric": None}]},
            "forecasts": [], "report": rep, "received_at": last,
        }
        self._cpu_mem(VM_SILENT, 3, 22, last)

        # 4. VM down.
        vm = self._vm(VM_DOWN, "batch-03", None, "Staging", status="down")
        last = now - 3 * 86400
        rep = report(last, 12, {
            "resources": _section(last, resources_data(cpu=1.0, mem_percent=10.0, filesystems=[
                filesystem("/", 20 * GIB, 4 * GIB)])),
        })
        self.docs[VM_DOWN] = {
            "vm": vm,
            "agent": {"state": "vm_down", "version": "0.1.0", "last_report_at": last,
                      "silent_for_s": None},
            "health": {"status": "unknown", "since": last, "reasons": [
                {"code": "vm.down", "severity": "unknown", "message": "The VM is down.",
                 "metric": None}]},
            "forecasts": [], "report": rep, "received_at": last,
        }

        # 5. No agent ever reported.
        vm = self._vm(VM_NO_AGENT, "legacy-04", HOST_B, "Production")
        self.docs[VM_NO_AGENT] = {
            "vm": vm,
            "agent": {"state": "not_installed", "version": None, "last_report_at": None,
                      "silent_for_s": None},
            "health": {"status": "unknown", "since": None, "reasons": [
                {"code": "agent.missing", "severity": "unknown",
                 "message": "No vmdiag agent reports from this VM.", "metric": None}]},
            "forecasts": [], "report": None, "received_at": None,
        }

        # 6. A guest that sends markup and script in every string it controls.
        p = PAYLOADS
        vm = self._vm(VM_HOSTILE, "evil-05 " + p[0], HOST_B, "Staging " + p[2])
        net = network_data()
        net["interfaces"][0]["name"] = "eth0" + p[2]
        net["probes"][1]["target"] = p[1]
        net["listening"][0]["process"] = p[3]
        res = resources_data(cpu=5.0, mem_percent=30.0,
                             filesystems=[filesystem("/" + p[0], 10 * GIB, 2 * GIB)])
        res["top_cpu"][0]["name"] = p[1]
        rep = report(now - 10, 5, {
            "network": _section(now, net),
            "resources": _section(now, res, errors=[{"field": p[0], "error": p[1]}]),
            "applications": _section(now, applications_data(
                failed=[{"name": p[0], "description": p[1], "active_state": "failed",
                         "sub_state": p[2]}],
                processes=[{"name": p[1], "present": False, "count": 0},
                           {"name": p[5], "present": True, "count": 1}])),
            "settings": _section(now, settings_data(
                hostname=p[0], sysctls={"kernel.hostname": p[1], "x" + p[2]: p[3],
                                        "vm.note": p[4]})),
            "checks": _section(now, checks_data([
                check("proc:" + p[0], p[1], "warning", p[2])])),
        })
        self.docs[VM_HOSTILE] = {
            "vm": vm,
            "agent": {"state": "reporting", "version": p[5], "last_report_at": now - 10,
                      "silent_for_s": None},
            "health": {"status": "warning", "since": now - 600, "reasons": [
                {"code": p[0], "severity": "warning", "message": p[1], "metric": p[2]}]},
            "forecasts": [{"metric": "fs.used:/" + p[0], "label": p[1], "kind": p[2],
                           "status": "ok", "eta_s": None, "eta_at": None, "confidence": 0.2,
                           "trend_per_day": 0.0, "capacity": 10 * GIB, "current": 2 * GIB,
                           "method": p[3], "held": p[4],
                           "fit": {"slope": 0.0, "intercept": 2 * GIB, "t0": now,
                                   "start": p[5], "end": now, "slope_error": p[0],
                                   "reason": p[1]}}],
            "report": rep, "received_at": now - 10,
        }

    # -- contract views ----------------------------------------------------------------------

    def summary_row(self, vm_id: str) -> dict:
        doc = self.docs[vm_id]
        findings = [{"severity": r["severity"], "code": r["code"], "message": r["message"]}
                    for r in doc["health"]["reasons"]]
        return vm_summary(doc["vm"], doc["health"]["status"], doc["agent"]["last_report_at"],
                          findings)

    def summary(self, vm_ids: List[str]) -> dict:
        rows = [self.summary_row(i) for i in vm_ids if i in self.docs]
        counts = {k: 0 for k in ("ok", "warning", "critical", "unknown")}
        for row in rows:
            counts[row["health"]] += 1
        return {"counts": counts, "vms": rows}
