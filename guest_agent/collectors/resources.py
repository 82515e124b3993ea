"""The ``resources`` section: CPU, memory, pressure, file systems, disks, processes, limits.

Rates come from the difference of two samples (``CollectorState``); on the first report of a
run they are None. Units: CPU figures are percent of all CPUs (per-CPU ones of that CPU);
``swap_in_per_s``/``swap_out_per_s`` are pages per second (as ``sar -W``); disk ``*_bps`` are
bytes per second; ``await_ms`` is the mean time an I/O took, ``util_percent`` the share of
time the device was busy (as ``iostat -x``). A process's ``cpu_percent`` is percent of one
CPU (as ``top``), so it can exceed 100 on multi-core guests.

Top processes come from one pass over /proc/<pid>/stat on the ``top_interval_s`` cadence,
shared with the applications section's watched-process check in the same report.
"""

from __future__ import annotations

from typing import Any, Dict, List

from .. import platform
from ..platform import CpuStat, ProcStat
from .errors import FieldErrors
from .options import CollectorOptions
from .state import CollectorState

#: Storage-backed file systems that are full by design or not the admin's to fill.
SKIP_FSTYPES = frozenset({"squashfs", "iso9660", "udf", "erofs", "cramfs"})
LIMITS = {"filesystems": 512, "disks": 512, "per_cpu": 1024, "top": 100}


def collect(options: CollectorOptions, state: CollectorState, errors: FieldErrors
            ) -> Dict[str, Any]:
    m = options.machine
    data: Dict[str, Any] = {}
    stat: CpuStat | None = None
    with errors.field("cpu"):
        stat = platform.cpu_stat(m)
        data["cpu"] = cpu_section(stat, state.swap("resources.cpu", stat))
        with errors.field("cpu.load"):
            data["cpu"]["load"] = platform.load_average(m)
    vm: Dict[str, int] = {}
    with errors.field("oom_kills"):
        vm = platform.vmstat(m)
    meminfo: Dict[str, int] = {}
    with errors.field("memory"):
        meminfo = platform.meminfo(m)
        data["memory"] = memory_section(meminfo, vm, state.swap("resources.swap", vm))
    with errors.field("pressure"):
        data["pressure"] = platform.pressure(m)
    with errors.field("filesystems"):
        data["filesystems"] = filesystems(options, errors)
    with errors.field("disks"):
        disks = platform.disk_stats(m)
        data["disks"] = disk_rates(disks, state.swap("resources.disks", disks))
    if options.top_n > 0:
        with errors.field("top_cpu"):
            data["top_cpu"], data["top_memory"] = top_processes(options, state, meminfo)
    with errors.field("fds"):
        opened, maximum = platform.file_handles(m)
        data["fds"] = {"open": opened, "max": maximum}
    with errors.field("uptime_s"):
        data["uptime_s"] = platform.uptime(m)
    if stat is not None and stat.boot_time is not None:
        data["boot_time"] = float(stat.boot_time)
    if "oom_kill" in vm:
        data["oom_kills"] = vm["oom_kill"]
    elif vm:
        errors.add("oom_kills", "this kernel has no oom_kill counter in /proc/vmstat "
                                "(added in Linux 4.13); check dmesg for OOM kills")
    return data


def _cpu_shares(now: Dict[str, int], before: Dict[str, int] | None) -> Dict[str, float | None]:
    d = {k: now[k] - (before[k] if before else 0) for k in now}
    # user and nice already include guest time; adding guest would count it twice.
    total = sum(v for k, v in d.items() if k not in ("guest", "guest_nice"))
    if before is None or total <= 0 or min(d.values()) < 0:
        return {k: None for k in ("percent", "user", "system", "iowait", "steal", "idle")}

    def pct(*keys: str) -> float:
        return round(100.0 * sum(d[k] for k in keys) / total, 2)

    return {"percent": round(100.0 - pct("idle", "iowait"), 2), "user": pct("user", "nice"),
            "system": pct("system", "irq", "softirq"), "iowait": pct("iowait"),
            "steal": pct("steal"), "idle": pct("idle")}


def cpu_section(stat: CpuStat, previous: Any) -> Dict[str, Any]:
    before: CpuStat | None = previous[1] if previous else None
    out: Dict[str, Any] = {"count": len(stat.per_cpu) or None}
    out.update(_cpu_shares(stat.total, before.total if before else None))
    per_cpu = []
    for i, row in enumerate(stat.per_cpu[:LIMITS["per_cpu"]]):
        # CPU hotplug changes the list; compare only CPUs present in both samples.
        old = before.per_cpu[i] if before and i < len(before.per_cpu) else None
        shares = _cpu_shares(row, old)
        per_cpu.append({"percent": shares["percent"], "iowait": shares["iowait"],
                        "steal": shares["steal"]})
    out["per_cpu"] = per_cpu
    return out


def memory_section(mem: Dict[str, int], vm: Dict[str, int], previous: Any) -> Dict[str, Any]:
    total = mem["MemTotal"]
    available = mem.get("MemAvailable")
    if available is None:  # Linux < 3.14: the classic estimate
        available = mem["MemFree"] + mem.get("Buffers", 0) + mem.get("Cached", 0)
    used = total - available
    swap_total = mem.get("SwapTotal", 0)
    swap_used = swap_total - mem.get("SwapFree", 0)
    out: Dict[str, Any] = {
        "total": total, "available": available, "used": used,
        "percent": round(100.0 * used / total, 2) if total else None,
        "swap_total": swap_total, "swap_used": swap_used,
        "swap_percent": round(100.0 * swap_used / swap_total, 2) if swap_total else 0.0,
        "swap_in_per_s": None, "swap_out_per_s": None,
    }
    if previous is not None:
        elapsed, before = previous
        for key, name in (("pswpin", "swap_in_per_s"), ("pswpout", "swap_out_per_s")):
            if key in vm and key in before and vm[key] >= before[key]:
                out[name] = round((vm[key] - before[key]) / elapsed, 3)
    return out


def filesystems(options: CollectorOptions, errors: FieldErrors) -> List[Dict[str, Any]]:
    """Storage-backed mounts, one per device (bind mounts repeat a device), with usage."""
    m = options.machine
    real = platform.real_filesystems(m)
    seen = set()
    out: List[Dict[str, Any]] = []
    for mount in platform.mounts(m):
        if mount.fstype not in real or mount.fstype in SKIP_FSTYPES:
            continue
        if mount.device in seen and mount.device.startswith("/"):
            continue
        seen.add(mount.device)
        with errors.field("filesystems." + mount.mountpoint):
            st = platform.statvfs(m, mount.mountpoint)
            out.append(fs_usage(mount, st))
        if len(out) >= LIMITS["filesystems"]:
            break
    return out


def fs_usage(mount: platform.Mount, st: Any) -> Dict[str, Any]:
    """Sizes as ``df`` shows them: ``free`` is what non-root users may still write."""
    total = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    free = st.f_bavail * st.f_frsize
    inodes_used = st.f_files - st.f_ffree
    return {
        "mountpoint": mount.mountpoint, "device": mount.device, "fstype": mount.fstype,
        "total": total, "used": used, "free": free,
        "percent": round(100.0 * used / (used + free), 2) if used + free else None,
        # btrfs and some others report no inode limit (f_files == 0)
        "inodes_total": st.f_files if st.f_files else None,
        "inodes_used": inodes_used if st.f_files else None,
        "inodes_percent": round(100.0 * inodes_used / st.f_files, 2) if st.f_files else None,
        "readonly": "ro" in mount.options,
    }


def disk_rates(disks: Dict[str, platform.DiskStat], previous: Any) -> List[Dict[str, Any]]:
    out = []
    for name in sorted(disks)[:LIMITS["disks"]]:
        now = disks[name]
        row: Dict[str, Any] = {"name": name, "read_bps": None, "write_bps": None,
                               "read_iops": None, "write_iops": None, "await_ms": None,
                               "util_percent": None}
        before = previous[1].get(name) if previous else None
        if before is not None and all(a >= b for a, b in zip(now, before)):
            elapsed = previous[0]
            ios = (now.reads - before.reads) + (now.writes - before.writes)
            waited = (now.read_ms - before.read_ms) + (now.write_ms - before.write_ms)
            row.update({
                "read_bps": round((now.read_bytes - before.read_bytes) / elapsed, 3),
                "write_bps": round((now.write_bytes - before.write_bytes) / elapsed, 3),
                "read_iops": round((now.reads - before.reads) / elapsed, 3),
                "write_iops": round((now.writes - before.writes) / elapsed, 3),
                "await_ms": round(waited / ios, 3) if ios else 0.0,
                "util_percent": round(min(100.0, (now.io_ms - before.io_ms)
                                          / (elapsed * 10.0)), 2),
            })
        out.append(row)
    return out


def top_processes(options: CollectorOptions, state: CollectorState, meminfo: Dict[str, int]
                  ) -> Any:
    """(top_cpu, top_memory), refreshed every ``top_interval_s`` and reused in between."""
    if not state.due("top", options.top_interval_s):
        return state.recall("top")
    m = options.machine
    procs = state.process_scan(lambda: platform.scan(m))
    hz = platform.clock_ticks()
    uptime = platform.uptime(m)
    previous = state.swap("resources.proc_ticks",
                          {(p.pid, p.start_ticks): p.ticks for p in procs})
    cpu: Dict[int, float] = {}
    for p in procs:
        lifetime = max(uptime - p.start_ticks / hz, 1e-3)
        if previous is None:  # first scan of the run: average since the process started
            used, span = p.ticks, lifetime
        else:
            elapsed, before = previous
            old = before.get((p.pid, p.start_ticks))
            # A process new since the last scan used all its ticks within the interval.
            used, span = (p.ticks - old, elapsed) if old is not None else \
                (p.ticks, min(lifetime, elapsed))
        cpu[p.pid] = 100.0 * used / hz / span
    page = platform.page_size()
    total = meminfo.get("MemTotal")
    n = min(options.top_n, LIMITS["top"])
    by_cpu = sorted(procs, key=lambda p: (-cpu.get(p.pid, 0.0), p.pid))[:n]
    by_mem = sorted(procs, key=lambda p: (-p.rss_pages, p.pid))[:n]
    result = ([_process(options, state, p, cpu.get(p.pid), page, total) for p in by_cpu],
              [_process(options, state, p, cpu.get(p.pid), page, total) for p in by_mem])
    state.remember("top", result)
    return result


def _process(options: CollectorOptions, state: CollectorState, p: ProcStat,
             cpu: float | None, page: int, total: int | None) -> Dict[str, Any]:
    rss = p.rss_pages * page
    try:
        user: str | None = platform.user_name(options.machine,
                                              platform.owner_uid(options.machine, p.pid),
                                              state.user_names)
    except OSError:  # exited since the scan
        user = None
    return {"pid": p.pid, "name": p.name, "user": user,
            "cpu_percent": None if cpu is None else round(cpu, 2), "rss": rss,
            "memory_percent": round(100.0 * rss / total, 2) if total else None}
