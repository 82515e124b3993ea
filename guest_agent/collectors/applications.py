"""The ``applications`` section: failed and watched systemd units, watched processes, packages.

Unit states come from systemd's D-Bus API, or from systemctl without it; ``units_via`` says
which (``dbus`` or ``systemctl``).

The package inventory is the heavy part: it is re-read when the package database file
changed (one stat per report) or every ``packages_interval_s``, and the full list is sent
only when it differs from the last one sent; otherwise the section carries ``count``,
``digest`` (a fingerprint of the list) and ``changed: false``. Each inventory read is kept in
``packages_cache`` with the database's stamp, so an agent start with no package change since
takes it from there instead of running the package manager. The lean first report of a start
carries packages only when the cache fits; otherwise the next report has them.
"""

from __future__ import annotations

import json
import logging
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
#: Format of the ``packages_cache`` file; a file of another version is ignored.
CACHE_VERSION = 1

log = logging.getLogger(__name__)


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
    if not state.lean or inventory_at_hand(options, state):
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


def inventory_at_hand(options: CollectorOptions, state: CollectorState) -> bool:
    """Whether the package list can be given without running the package manager: read by
    this run for the database as it is now, or cached on disk (``packages_cache``) for it."""
    memo = state.packages
    stamp = platform.package_db_stamp(options.machine)
    if stamp is None:
        return False
    if memo.digest is not None and memo.stamp == stamp:
        return True
    return memo.stamp is None and load_cache(options, state, stamp)


def packages(options: CollectorOptions, state: CollectorState, errors: FieldErrors
             ) -> Dict[str, Any]:
    m = options.machine
    memo = state.packages
    stamp = platform.package_db_stamp(m)
    if memo.stamp is None and stamp is not None:
        load_cache(options, state, stamp)  # an agent start with the database unchanged
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
        if stamp is not None:
            save_cache(options, stamp, manager, items)
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


def _cache_path(options: CollectorOptions) -> str | None:
    return options.machine.paths.host(options.packages_cache) if options.packages_cache else None


def load_cache(options: CollectorOptions, state: CollectorState, stamp: Any) -> bool:
    """Take the inventory from the cache file when it was saved for the database ``stamp``
    (an agent restart with no package change since); False when there is none that fits.
    The file is the agent's own, but anything in it that is not an inventory is ignored."""
    path = _cache_path(options)
    if path is None:
        return False
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
        if doc.get("version") != CACHE_VERSION or doc.get("stamp") != list(stamp):
            return False
        manager = doc["manager"]
        items = [platform.Package(*row) for row in doc["packages"][:LIMITS["packages"]]
                 if isinstance(row, list) and len(row) == 3
                 and all(isinstance(v, str) for v in row)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        if not isinstance(err, FileNotFoundError):
            log.info("package inventory cache %s not used: %s", path, err)
        return False
    memo = state.packages
    memo.stamp, memo.manager, memo.count, memo.error = stamp, str(manager)[:16], len(items), None
    memo.items, memo.digest = items, digest(items)
    state.remember("packages", None)  # the next periodic read counts from now
    return True


def save_cache(options: CollectorOptions, stamp: Any, manager: str,
               items: List[platform.Package]) -> None:
    """Keep the inventory for the next agent start (atomically: a new file renamed over the
    old). Only into a folder that exists (systemd's CacheDirectory=); never fatal."""
    path = _cache_path(options)
    if path is None or not os.path.isdir(os.path.dirname(path)):
        return
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"version": CACHE_VERSION, "stamp": list(stamp), "manager": manager,
                       "packages": [list(p) for p in items]}, handle, separators=(",", ":"))
        os.replace(tmp, path)
    except (OSError, ValueError) as err:
        log.info("cannot keep the package inventory in %s: %s", path, err)
        try:
            os.unlink(tmp)
        except OSError:
            pass


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
