"""CPU, memory, pressure, disk and file-handle counters from /proc and /sys.

These are raw counters (ticks, sectors, pages); the resources collector turns them into rates
between two calls. Reading the files directly costs a few syscalls and works on a fixture tree.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

from ..errors import Unsupported
from ..machine import Machine
from ..records import CpuStat, DiskStat, Mount
from .files import read_first_line, read_int, read_lines

#: /proc/stat cpu columns, in kernel order (older kernels stop early; missing ones read as 0).
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
              "guest", "guest_nice")
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size








def _cpu_row(values: List[str]) -> Dict[str, int]:
    numbers = [int(v) for v in values] + [0] * len(CPU_FIELDS)
    return dict(zip(CPU_FIELDS, numbers))


def cpu_stat(m: Machine) -> CpuStat:
    total: Dict[str, int] = {}
    per_cpu: List[Dict[str, int]] = []
    boot_time = None
    for line in read_lines(m.paths.proc("stat")):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu":
            total = _cpu_row(parts[1:])
        elif parts[0].startswith("cpu"):
            per_cpu.append(_cpu_row(parts[1:]))
        elif parts[0] == "btime":
            boot_time = int(parts[1])
    if not total:
        raise ValueError("no cpu line in %s" % m.paths.proc("stat"))
    return CpuStat(total, per_cpu, boot_time)


def load_average(m: Machine) -> List[float]:
    return [float(v) for v in read_first_line(m.paths.proc("loadavg")).split()[:3]]


def meminfo(m: Machine) -> Dict[str, int]:
    """/proc/meminfo in bytes (the file says kB and means KiB)."""
    out: Dict[str, int] = {}
    for line in read_lines(m.paths.proc("meminfo")):
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            out[key] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return out


def vmstat(m: Machine) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in read_lines(m.paths.proc("vmstat")):
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def pressure(m: Machine) -> Dict[str, Dict[str, float]]:
    """PSI averages per resource: {"cpu": {"some_avg10": ..., "full_avg60": ...}, ...}."""
    base = m.paths.proc("pressure")
    if not os.path.isdir(base):
        raise Unsupported("pressure stall information is not available: the kernel is older "
                          "than 4.20 or PSI is off (boot with psi=1 to enable it)")
    out: Dict[str, Dict[str, float]] = {}
    for resource in ("cpu", "memory", "io"):
        try:
            lines = read_lines(os.path.join(base, resource))
        except FileNotFoundError:
            continue
        values: Dict[str, float] = {}
        for line in lines:
            kind, *pairs = line.split()
            for pair in pairs:
                key, _, value = pair.partition("=")
                if key in ("avg10", "avg60"):
                    values["%s_%s" % (kind, key)] = float(value)
        out[resource] = values
    return out


def mounts(m: Machine) -> List[Mount]:
    path = m.paths.proc("self", "mounts")
    if not os.path.exists(path):
        path = m.paths.proc("mounts")
    out = []
    for line in read_lines(path):
        parts = line.split()
        if len(parts) >= 4:
            out.append(Mount(_unescape(parts[0]), _unescape(parts[1]), parts[2],
                             tuple(parts[3].split(","))))
    return out


def _unescape(field: str) -> str:
    """Mount fields escape space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in field:
        return field
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def real_filesystems(m: Machine) -> set:
    """Filesystem types backed by storage: those /proc/filesystems does not mark ``nodev``."""
    out = set()
    for line in read_lines(m.paths.proc("filesystems")):
        if not line.startswith("nodev"):
            out.add(line.strip())
    return out


def statvfs(m: Machine, mountpoint: str) -> os.statvfs_result:
    return os.statvfs(m.paths.host(mountpoint))


#: Block devices that are not disks an admin cares about for I/O load.
_VIRTUAL_DISKS = ("loop", "ram", "zram", "fd", "sr", "nbd")


def disk_stats(m: Machine) -> Dict[str, DiskStat]:
    """Counters of whole block devices (those in /sys/block, not loop/ram/zram, size > 0)."""
    wanted = set()
    try:
        for name in os.listdir(m.paths.sys("block")):
            if name.startswith(_VIRTUAL_DISKS):
                continue
            try:
                if read_int(m.paths.sys("block", name, "size")) == 0:
                    continue
            except (OSError, ValueError):
                pass
            wanted.add(name)
    except FileNotFoundError:
        wanted = set()  # no sysfs: keep every device listed
    out: Dict[str, DiskStat] = {}
    for line in read_lines(m.paths.proc("diskstats")):
        f = line.split()
        if len(f) < 14:
            continue
        name = f[2]
        if wanted and name not in wanted:
            continue
        if not wanted and name.startswith(_VIRTUAL_DISKS):
            continue
        out[name] = DiskStat(int(f[3]), int(f[5]) * SECTOR_BYTES, int(f[6]), int(f[7]),
                             int(f[9]) * SECTOR_BYTES, int(f[10]), int(f[12]))
    return out


def file_handles(m: Machine) -> Tuple[int, int]:
    """(open, max) from /proc/sys/fs/file-nr: allocated minus free, and the system limit."""
    allocated, free, maximum = (int(v) for v in read_first_line(
        m.paths.proc("sys", "fs", "file-nr")).split()[:3])
    return allocated - free, maximum


def uptime(m: Machine) -> float:
    return float(read_first_line(m.paths.proc("uptime")).split()[0])
