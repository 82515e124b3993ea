"""systemd unit states through systemctl (the only stable interface to them without D-Bus)."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

from ..errors import Unsupported
from ..machine import Machine

_SHOW_PROPS = "Id,LoadState,ActiveState,SubState"


def _require_systemd(m: Machine) -> None:
    # sd_booted(): the same test systemd itself uses.
    if not os.path.isdir(m.paths.host("/run/systemd/system")):
        raise Unsupported("systemd is not the init system here (no /run/systemd/system), so "
                          "unit states cannot be read; watch processes instead")


def failed_units(m: Machine) -> List[Dict[str, str]]:
    _require_systemd(m)
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
