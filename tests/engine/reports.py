"""Builders of realistic reports and envelopes for engine tests (valid per diag_protocol)."""

from __future__ import annotations

import time
from typing import Any, Dict, List

from diag_protocol import make_envelope, make_report, validate_envelope

GiB = 1 << 30


def sections(now: float, *, root_used: int = 10 * GiB, root_total: int = 40 * GiB,
             mem_percent: float = 40.0, checks: List[Dict[str, Any]] | None = None,
             hostname: str = "web1.example.test") -> Dict[str, Any]:
    def section(data: Dict[str, Any]) -> Dict[str, Any]:
        return {"collected_at": now, "duration_ms": 3.0, "errors": [], "data": data}

    mem_total = 4 * GiB
    return {
        "network": section({"interfaces": [{"name": "eth0", "up": True, "mtu": 1500,
                                            "rx_bps": 1200.0, "tx_bps": 800.0}],
                            "default_gateway": {"address": "192.0.2.1", "interface": "eth0"},
                            "dns": {"nameservers": ["192.0.2.53"], "search": []}}),
        "resources": section({
            "cpu": {"count": 2, "percent": 12.0, "steal": 0.5, "iowait": 1.0,
                    "load": [0.2, 0.3, 0.4]},
            "memory": {"total": mem_total, "used": int(mem_total * mem_percent / 100),
                       "available": int(mem_total * (100 - mem_percent) / 100),
                       "percent": mem_percent, "swap_total": 0, "swap_used": 0},
            "filesystems": [{"mountpoint": "/", "device": "/dev/vda1", "fstype": "ext4",
                             "total": root_total, "used": root_used,
                             "free": root_total - root_used,
                             "percent": 100.0 * root_used / root_total,
                             "inodes_total": 2_000_000, "inodes_used": 100_000,
                             "readonly": False}],
            "top_memory": [{"pid": 101, "name": "postgres", "rss": 200 << 20,
                            "memory_percent": 4.8}],
        }),
        "applications": section({"failed_units": [], "units": [], "processes": []}),
        "settings": section({"hostname": hostname, "kernel": "6.1.0", "arch": "x86_64"}),
        "checks": section({"results": checks or [
            {"id": "fs.fill:/", "name": "Filesystem /", "status": "ok",
             "message": "/ is 25% full.", "value": 25.0, "threshold": 85.0}]}),
    }


def envelope(vm_id: str, host_id: str, seq: int, *, run_id: str = "run-1",
             now: float | None = None, **kw: Any) -> Dict[str, Any]:
    t = time.time() if now is None else now
    report = make_report("boot-1", run_id, seq, sections(t, **kw), now=t)
    env = make_envelope(host_id, vm_id, report, received_at=t)
    validate_envelope(env)  # a builder that makes invalid input would hide real failures
    return env


def critical_checks() -> List[Dict[str, Any]]:
    return [{"id": "fs.fill:/", "name": "Filesystem /", "status": "critical",
             "message": "/ is 97% full: free space or grow the disk.", "value": 97.0,
             "threshold": 95.0}]
