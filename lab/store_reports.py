"""Realistic, schema-valid relay envelopes for the store's tests and its benchmark.

Every envelope goes through ``diag_protocol.validate_envelope``, so the store is always fed
what the service will really hand it. Values are arguments, so a test knows what it expects.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Dict, List, Sequence, Tuple

from diag_protocol import make_envelope, make_report, validate_envelope

Check = Tuple[str, str, str]  # (id, status, message)


def vm_uuid(n: int) -> str:
    """A stable VM UUID for a small integer, so tests can name VMs by number."""
    return str(uuid.UUID(int=0x5EED0000_0000_4000_8000_000000000000 + n))


def report_sections(t: float, cpu: float = 12.5, mem_percent: float = 40.0,
                    mem_used: float = 3.2e9, mem_total: float = 8e9,
                    filesystems: Sequence[Tuple[str, float, float]] = (("/", 4e9, 1e10),),
                    interfaces: Sequence[Tuple[str, float, float]] = (("eth0", 1000.0, 500.0),),
                    processes: Sequence[Tuple[str, float]] = (("postgres", 2e8),),
                    checks: Sequence[Check] | None = (),
                    hostname: str | None = "guest.example.test",
                    extra: int = 0, rng: random.Random | None = None) -> Dict[str, Any]:
    """The ``sections`` of a report collected at ``t``; ``checks=None`` omits that section
    (a failed collector), ``hostname=None`` omits settings. ``extra`` adds bulk that carries
    no metrics (units, sockets, packages) to reach realistic report sizes."""
    rng = rng or random.Random(0)
    sections: Dict[str, Any] = {
        "resources": {"collected_at": t, "duration_ms": 12.0, "errors": [], "data": {
            "cpu": {"count": 4, "percent": cpu, "user": cpu * 0.7, "system": cpu * 0.2,
                    "iowait": 1.5, "steal": 0.25, "idle": 100 - cpu,
                    "per_cpu": [{"percent": cpu, "iowait": 1.0, "steal": 0.0}] * 4,
                    "load": [0.75, 0.5, 0.25]},
            "memory": {"total": mem_total, "available": mem_total - mem_used, "used": mem_used,
                       "percent": mem_percent, "swap_total": 2e9, "swap_used": 1e8,
                       "swap_percent": 5.0, "swap_in_per_s": 0.0, "swap_out_per_s": 0.0},
            "pressure": {"cpu": {"some_avg10": 0.1, "some_avg60": 0.2, "full_avg10": 0.0,
                                 "full_avg60": 0.0}},
            "filesystems": [{"mountpoint": mp, "device": "/dev/vda%d" % i, "fstype": "xfs",
                             "total": int(total), "used": int(used),
                             "free": int(total - used),
                             "percent": 100.0 * used / total, "inodes_total": 655360,
                             "inodes_used": 12345 + i, "inodes_percent": 1.9,
                             "readonly": False}
                            for i, (mp, used, total) in enumerate(filesystems)],
            "disks": [{"name": "vda", "read_bps": 1e5, "write_bps": 2e5, "read_iops": 10.0,
                       "write_iops": 20.0, "await_ms": 1.2, "util_percent": 3.0}],
            "top_cpu": [{"pid": 100 + i, "name": name, "user": "root", "cpu_percent": 1.0,
                         "rss": int(rss), "memory_percent": 1.0}
                        for i, (name, rss) in enumerate(processes)],
            "top_memory": [{"pid": 100 + i, "name": name, "user": "root", "cpu_percent": 1.0,
                            "rss": int(rss), "memory_percent": 1.0}
                           for i, (name, rss) in enumerate(processes)],
            "fds": {"open": 1024, "max": 65536}, "uptime_s": 3600.0, "boot_time": t - 3600,
            "oom_kills": 0}},
        "network": {"collected_at": t, "duration_ms": 30.0, "errors": [], "data": {
            "interfaces": [{"name": name, "up": True, "mtu": 1500, "mac": "52:54:00:00:00:%02x"
                            % i, "speed_mbps": 1000.0,
                            "addresses": [{"family": "inet", "address": "192.0.2.%d" % (i + 10),
                                           "prefixlen": 24}],
                            "rx_bytes": 10 ** 9, "tx_bytes": 10 ** 8, "rx_packets": 10 ** 6,
                            "tx_packets": 10 ** 5, "rx_errors": 0, "tx_errors": 0,
                            "rx_dropped": 0, "tx_dropped": 0, "rx_bps": rx, "tx_bps": tx,
                            "error_rate": 0.0, "drop_rate": 0.0}
                           for i, (name, rx, tx) in enumerate(interfaces)],
            "routes": [{"destination": "0.0.0.0/0", "gateway": "192.0.2.1",
                        "interface": "eth0", "metric": 100}],
            "default_gateway": {"address": "192.0.2.1", "interface": "eth0"},
            "dns": {"nameservers": ["192.0.2.53"], "search": ["example.test"]},
            "probes": [{"kind": "gateway", "target": "192.0.2.1", "ok": True,
                        "latency_ms": 0.4, "error": None}],
            "listening": [{"proto": "tcp", "address": "0.0.0.0", "port": 1000 + i,
                           "pid": 200 + i, "process": "svc%d" % i} for i in range(extra)]}},
        "applications": {"collected_at": t, "duration_ms": 50.0, "errors": [], "data": {
            "failed_units": [],
            "units": [{"name": "unit%03d.service" % i, "active_state": "active",
                       "sub_state": "running", "expected": "active"} for i in range(extra)],
            "processes": [{"name": name, "present": True, "count": 1}
                          for name, _ in processes],
            "packages": {"manager": "rpm", "count": 600 + extra,
                         "digest": "%032x" % rng.getrandbits(128), "changed": False}}},
    }
    if hostname is not None:
        sections["settings"] = {"collected_at": t, "duration_ms": 5.0, "errors": [], "data": {
            "hostname": hostname, "fqdn": hostname, "os": {"name": "Rocky Linux",
                                                           "version": "9.4", "id": "rocky",
                                                           "pretty": "Rocky Linux 9.4"},
            "kernel": "5.14.0-427.el9.x86_64", "arch": "x86_64", "timezone": "UTC",
            "time_sync": {"service": "chronyd", "synchronized": True, "offset_ms": 0.2,
                          "source": "192.0.2.123"},
            "security": {"selinux": "enforcing", "apparmor": None},
            "sysctls": {"vm.swappiness": "30", "net.ipv4.ip_forward": "0"},
            "users": [], "reboot_required": False, "reboot_reason": None}}
    if checks is not None:
        sections["checks"] = {"collected_at": t, "duration_ms": 1.0, "errors": [], "data": {
            "results": [{"id": cid, "name": cid, "status": status, "message": message,
                         "value": None, "threshold": None} for cid, status, message in checks]}}
    return sections


def envelope(vm: int, seq: int, t: float, run_id: str = "run-1", host_id: str = "host-1",
             received_at: float | None = None, **values: Any) -> Dict[str, Any]:
    """A validated envelope of VM number ``vm``: report ``seq`` of ``run_id``, collected at
    ``t`` and received one second later unless ``received_at`` says otherwise."""
    report = make_report("boot-%d" % vm, run_id, seq, report_sections(t, **values), now=t)
    return validate_envelope(make_envelope(host_id, vm_uuid(vm), report,
                                           received_at=t + 1 if received_at is None
                                           else received_at))


def batch(vms: Sequence[int], seq: int, t: float, **values: Any) -> List[Dict[str, Any]]:
    return [envelope(vm, seq, t, **values) for vm in vms]


def ingest_as_received(store: Any, envelopes: Sequence[Dict[str, Any]]) -> int:
    """Ingest each envelope as the engine would have when the relay sent it (simulated time:
    the engine's receive time is the envelope's ``received_at``); returns reports stored."""
    return sum(store.ingest([env], now=env["received_at"]).accepted for env in envelopes)
