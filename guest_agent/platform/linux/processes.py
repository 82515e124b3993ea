"""One cheap pass over /proc/<pid>/stat: name, CPU ticks and resident pages of every process.

``/proc/<pid>/stat`` alone carries comm, utime+stime, starttime and rss, so the scan costs one
open/read per process (psutil's process_iter with the same attributes reads stat *and* statm
and builds objects; see the benchmark in the collectors tests). Owner and argv are read only
for the few processes a caller asks about.
"""

from __future__ import annotations

import os
import pwd
from typing import Dict, List

from ..machine import Machine
from ..records import ProcStat
from .files import read_lines


def scan(m: Machine) -> List[ProcStat]:
    base = m.paths.proc()
    out: List[ProcStat] = []
    for entry in os.listdir(base):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(base, entry, "stat"), "rb") as f:
                raw = f.read()
        except OSError:  # exited between listdir and open, or hidden by hidepid
            continue
        parsed = parse_stat(raw)
        if parsed is not None:
            out.append(parsed)
    return out


def process_stat(m: Machine, pid: int) -> ProcStat | None:
    """One process's stat (a single small read), None when it no longer exists."""
    try:
        with open(m.paths.proc(str(pid), "stat"), "rb") as f:
            return parse_stat(f.read())
    except OSError:
        return None


def parse_stat(raw: bytes) -> ProcStat | None:
    # comm is in parentheses and may itself contain ") " or spaces: split at the last ")".
    head, sep, tail = raw.rpartition(b")")
    if not sep:
        return None
    pid_text, _, comm = head.partition(b" (")
    fields = tail.split()
    if len(fields) < 22:
        return None
    # tail fields: [0]=state ... [11]=utime [12]=stime ... [19]=starttime [21]=rss
    return ProcStat(int(pid_text), comm.decode("utf-8", "replace"),
                    fields[0].decode("ascii", "replace"), int(fields[11]) + int(fields[12]),
                    int(fields[19]), int(fields[21]))


def cmdline(m: Machine, pid: int) -> List[str]:
    with open(m.paths.proc(str(pid), "cmdline"), "rb") as f:
        raw = f.read()
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def owner_uid(m: Machine, pid: int) -> int:
    return os.stat(m.paths.proc(str(pid))).st_uid


def user_names(m: Machine) -> Dict[int, str]:
    """uid -> name from the tree's /etc/passwd; on the live system NSS (LDAP, sssd) is asked too."""
    out: Dict[int, str] = {}
    try:
        for line in read_lines(m.paths.etc("passwd")):
            parts = line.split(":")
            if len(parts) >= 3 and parts[2].isdigit():
                out.setdefault(int(parts[2]), parts[0])
    except OSError:
        pass
    return out


def user_name(m: Machine, uid: int, cache: Dict[int, str]) -> str:
    """Name of ``uid``: NSS on the live system (LDAP, sssd), else the tree's /etc/passwd."""
    name = cache.get(uid)
    if name is None:
        if m.paths.is_live:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
        else:
            if not cache:
                cache.update(user_names(m))
            name = cache.get(uid, str(uid))
        cache[uid] = name
    return name


def process_name(m: Machine, pid: int) -> str:
    """The kernel's short name (comm) of ``pid``."""
    with open(m.paths.proc(str(pid), "comm"), "rb") as f:
        return f.read().decode("utf-8", "replace").rstrip("\n")
