"""The ``applications`` section: failed and watched systemd units, watched processes, packages.

Unit states come from systemd's D-Bus API, or from systemctl without it; ``units_via`` says
which (``dbus`` or ``systemctl``).

The package inventory is the heavy part: it is re-read when the package database file
changed (one stat per report) or every ``packages_interval_s``, and the full list is sent
only when it differs from the last one sent; otherwise the section carries ``count``,
``digest`` (a fingerprint of the list) and ``changed: false``.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from .. import platform
from .errors import EXPECTED, FieldErrors, describe
from .options import CollectorOptions
from .state import CollectorState

LIMITS = {"failed_units": 1024, "units": 1024, "processes": 256, "packages": 50000}
#: CollectorState key of {watched process name: [pids]} from the last report.
WATCHED_PIDS = "processes.pids"
#: A package list bigger than this (as JSON) would crowd the 1 MiB line; send count+digest only.
MAX_LIST_BYTES = 640 * 1024


def collect(options: CollectorOptions, state: CollectorState, errors: FieldErrors
            ) -> Dict[str, Any]:
    m = options.machine
    data: Dict[str, Any] = {}
    try:
        data["units_via"] = platform.units_via(m)
    except platform.Unsupported:
        pass  # no systemd: failed_units says so once
    with errors.field("failed_units"):
        data["failed_units"] = platform.failed_units(m)[:LIMITS["failed_units"]]
    with errors.field("units"):
        data["units"] = watched_units(options)
    with errors.field("processes"):
        data["processes"] = watched_processes(options, state)
    with errors.field("packages"):
        data["packages"] = packages(options, state, errors)
    return data


def parse_unit_spec(spec: str) -> Tuple[str, str]:
    """``"name"`` or ``"name=expected_state"`` -> (name, expected active state)."""
    name, _, expected = spec.partition("=")
    return name.strip(), expected.strip() or "active"


def watched_units(options: CollectorOptions) -> List[Dict[str, Any]]:
    specs = [parse_unit_spec(s) for s in options.watched_units][:LIMITS["units"]]
    if not specs:
        return []
    states = platform.unit_states(options.machine, [name for name, _ in specs])
    out = []
    for name, expected in specs:
        st = states.get(name, {})
        out.append({"name": name, "active_state": st.get("active_state") or None,
                    "sub_state": st.get("sub_state") or None, "expected": expected,
                    "load_state": st.get("load_state") or None})
    return out


def watched_processes(options: CollectorOptions, state: CollectorState) -> List[Dict[str, Any]]:
    """Each watched name: present (not a zombie) and how many processes match it.

    A process matches by its kernel name (comm, cut at 15 characters) or by the base name of
    its argv[0]; argv is read only for processes whose comm matched nothing. The matching
    PIDs are remembered (``WATCHED_PIDS``) for the event watcher, which polls only those.
    """
    names = list(dict.fromkeys(n for n in options.watched_processes if n))[:LIMITS["processes"]]
    if not names:
        return []
    m = options.machine
    pids = match_processes(m, state.process_scan(lambda: platform.scan(m)), names)
    state.remember(WATCHED_PIDS, pids)
    return [{"name": n, "present": bool(pids[n]), "count": len(pids[n])} for n in names]


def match_processes(m: platform.Machine, procs: Iterable[platform.ProcStat],
                    names: Sequence[str]) -> Dict[str, List[int]]:
    """name -> PIDs of the live (not zombie) processes in ``procs`` that match it."""
    wanted = set(names)
    pids: Dict[str, List[int]] = {n: [] for n in names}
    for p in procs:
        if p.state == "Z":
            continue
        if p.name in wanted:
            pids[p.name].append(p.pid)
            continue
        try:
            argv = platform.cmdline(m, p.pid)
        except OSError:
            continue
        if argv:
            base = os.path.basename(argv[0])
            if base in wanted:
                pids[base].append(p.pid)
    return pids


def packages(options: CollectorOptions, state: CollectorState, errors: FieldErrors
             ) -> Dict[str, Any]:
    m = options.machine
    memo = state.packages
    stamp = platform.package_db_stamp(m)
    if stamp != memo.stamp or state.due("packages", options.packages_interval_s):
        # Remember the attempt first: a failing rpm must not be retried at every report.
        state.remember("packages", None)
        memo.stamp = stamp
        try:
            manager, items = platform.installed_packages(m)
        except EXPECTED as err:
            memo.error = describe(err)
            raise
        memo.error = None
        items = items[:LIMITS["packages"]]
        memo.manager, memo.count = manager, len(items)
        if memo.items is None or items != memo.items:  # compared in full, not by digest
            memo.items, memo.digest = items, digest(items)
    if memo.digest is None:
        raise platform.PlatformError("%s (next try in at most %ds)" % (
            memo.error or "no package inventory yet", options.packages_interval_s))
    changed = memo.items is not memo.sent
    out: Dict[str, Any] = {"manager": memo.manager, "count": memo.count, "digest": memo.digest,
                           "changed": changed}
    if changed:
        listed = [{"name": p.name, "version": p.version, "arch": p.arch}
                  for p in memo.items or ()]
        size = len(json.dumps(listed, separators=(",", ":")))
        if size > MAX_LIST_BYTES:
            errors.add("packages.list", "%d packages take %d KiB, too much for one report; "
                       "only count and digest are sent" % (memo.count or 0, size // 1024))
        else:
            out["list"] = listed
        memo.sent = memo.items
    return out


def digest(items: List[platform.Package]) -> str:
    """A fingerprint of the inventory for readers of the report: ``crc32:`` and 8 hex digits.

    Whether the list changed is decided by comparing it in full, so this needs no
    cryptographic hash; SHA-256 would load OpenSSL's libcrypto, over 3 MiB of the agent's RSS
    for the life of the process.
    """
    crc = 0
    for p in items:
        line = "%s\t%s\t%s\n" % (p.name, p.version, p.arch)
        crc = zlib.crc32(line.encode("utf-8", "replace"), crc)
    return "crc32:%08x" % crc
