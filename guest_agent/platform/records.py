"""Records the platform functions return, shared by every OS implementation."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple


class CpuStat(NamedTuple):
    total: Dict[str, int]
    per_cpu: List[Dict[str, int]]
    boot_time: int | None


class DiskStat(NamedTuple):
    reads: int
    read_bytes: int
    read_ms: int
    writes: int
    write_bytes: int
    write_ms: int
    io_ms: int


class Mount(NamedTuple):
    device: str
    mountpoint: str
    fstype: str
    options: Tuple[str, ...]


class Package(NamedTuple):
    name: str
    version: str
    arch: str


class ProcStat(NamedTuple):
    pid: int
    name: str
    state: str  # R, S, D, Z, ...
    ticks: int  # utime + stime, in clock ticks
    start_ticks: int  # since boot
    rss_pages: int
