"""systemd unit states: from systemd's D-Bus API when it can be reached, else through systemctl.

Over D-Bus a report costs two method calls to PID 1 (``ListUnitsFiltered`` for the failed
units, ``ListUnitsByNames`` for the watched ones) and no process start; ``systemctl`` costs
a process start per call, which under emulation is most of a report's CPU. ``units_via``
tells which one is used (``dbus`` or ``systemctl``), for the report and ``vmdiag-agent
report``. The fallback needs nothing but systemctl, so a guest with only Python and psutil
still gets unit states.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

from ..bus import BusUnavailable
from ..errors import Unsupported
from ..machine import Machine

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
#: What units_via answers: the interface unit states are read through.
VIA_DBUS, VIA_SYSTEMCTL = "dbus", "systemctl"

_SHOW_PROPS = "Id,LoadState,ActiveState,SubState"


def _require_systemd(m: Machine) -> None:
    # sd_booted(): the same test systemd itself uses.
    if not os.path.isdir(m.paths.host("/run/systemd/system")):
        raise Unsupported("systemd is not the init system here (no /run/systemd/system), so "
                          "unit states cannot be read; watch processes instead")


def units_via(m: Machine) -> str:
    """``dbus`` when systemd's D-Bus API can be reached, else ``systemctl``."""
    _require_systemd(m)
    try:
        m.dbus.connection()
    except BusUnavailable:
        return VIA_SYSTEMCTL
    return VIA_DBUS


def list_units_by_names(m: Machine, names: Sequence[str]) -> List[Any]:
    """systemd's unit-info rows ``(name, description, load, active, sub, following, path,
    ...)`` of ``names`` (loaded on demand; a unit that does not exist reads not-found, an
    invalid name is left out). Raises BusUnavailable when there is no bus."""
    rows: List[Any] = m.dbus.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "ListUnitsByNames", "as",
                                  (list(names),))
    return rows


def failed_units(m: Machine) -> List[Dict[str, str]]:
    _require_systemd(m)
    try:
        rows = m.dbus.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "ListUnitsFiltered", "as",
                           (["failed"],))
    except BusUnavailable:
        return _failed_units_systemctl(m)
    return [{"name": r[0], "active_state": r[3], "sub_state": r[4], "description": r[1]}
            for r in sorted(rows) if r[3] == "failed"]


def _failed_units_systemctl(m: Machine) -> List[Dict[str, str]]:
    result = m.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend",
                    "--no-pager", "--full"])
    out = []
    for line in result.stdout.splitlines():
        f = line.strip().lstrip("●* ").split(None, 4)
        if len(f) < 4:
            continue
        out.append({"name": f[0], "active_state": f[2], "sub_state": f[3],
                    "description": f[4] if len(f) > 4 else ""})
    return out


def unit_states(m: Machine, names: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """name -> {"load_state", "active_state", "sub_state"}; unknown units read "not-found"."""
    if not names:
        return {}
    _require_systemd(m)
    try:
        rows = list_units_by_names(m, names)
    except BusUnavailable:
        return _unit_states_systemctl(m, names)
    by_name = {r[0]: {"load_state": r[2], "active_state": r[3], "sub_state": r[4]}
               for r in rows}
    return {name: by_name[name] for name in names if name in by_name}


def _unit_states_systemctl(m: Machine, names: Sequence[str]) -> Dict[str, Dict[str, str]]:
    result = m.run(["systemctl", "show", "--no-pager", "--property=" + _SHOW_PROPS, "--"]
                   + list(names))
    out: Dict[str, Dict[str, str]] = {}
    # One block per unit, in argument order, separated by blank lines.
    blocks = [b for b in result.stdout.split("\n\n") if b.strip()]
    for name, block in zip(names, blocks):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        out[name] = {"load_state": props.get("LoadState", ""),
                     "active_state": props.get("ActiveState", ""),
                     "sub_state": props.get("SubState", "")}
    return out
