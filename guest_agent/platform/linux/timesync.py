"""Clock synchronisation state from chrony, systemd-timesyncd (timedatectl) or ntpd (ntpq).

Tried in that order (chrony is the EL default, timesyncd the Debian one); the first that
answers wins. When none answers, the error lists why each failed, so the admin sees whether
the tool is missing or its daemon is down.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ..errors import CommandError, PlatformError
from ..machine import Machine


def time_sync(m: Machine) -> Dict[str, Any]:
    problems: List[str] = []
    for probe in (_chrony, _timesyncd, _ntpd):
        try:
            return probe(m)
        except CommandError as err:
            problems.append(str(err))
    raise PlatformError("no time synchronisation service answered (%s); install and enable "
                        "chronyd or systemd-timesyncd" % "; ".join(problems))


def _chrony(m: Machine) -> Dict[str, Any]:
    return parse_chrony_tracking(m.run(["chronyc", "-n", "tracking"], timeout=5).stdout)


def parse_chrony_tracking(text: str) -> Dict[str, Any]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    offset_ms = None
    system_time = fields.get("System time", "")  # "0.000012345 seconds slow of NTP time"
    parts = system_time.split()
    if len(parts) >= 3:
        offset_ms = float(parts[0]) * 1000.0 * (-1.0 if parts[2] == "slow" else 1.0)
    ref = fields.get("Reference ID", "")  # "C0A80101 (192.168.1.1)"
    source = ref.partition("(")[2].rstrip(")") or None
    leap = fields.get("Leap status", "")
    synchronized = bool(leap) and leap != "Not synchronised" and not ref.startswith("00000000")
    return {"service": "chronyd", "synchronized": synchronized, "offset_ms": offset_ms,
            "source": source}


def _timesyncd(m: Machine) -> Dict[str, Any]:
    props = _props(m.run(["timedatectl", "show"], timeout=5).stdout)
    if "NTPSynchronized" not in props:
        raise CommandError(["timedatectl"], "timedatectl show gave no NTPSynchronized property")
    source = None
    try:
        extra = _props(m.run(["timedatectl", "show-timesync", "--property=ServerName"],
                             timeout=5).stdout)
        source = extra.get("ServerName") or None
    except CommandError:
        pass  # systemd < 239 has no show-timesync; the sync flag is still right
    return {"service": "systemd-timesyncd" if props.get("NTP") == "yes" else None,
            "synchronized": props["NTPSynchronized"] == "yes", "offset_ms": None,
            "source": source}


def _ntpd(m: Machine) -> Dict[str, Any]:
    return parse_ntpq_peers(m.run(["ntpq", "-pn"], timeout=5).stdout)


def parse_ntpq_peers(text: str) -> Dict[str, Any]:
    """The ``*`` line of ``ntpq -pn`` is the selected peer; its offset column is in ms."""
    for line in text.splitlines():
        if line.startswith("*"):
            f = line[1:].split()
            return {"service": "ntpd", "synchronized": True, "offset_ms": float(f[8]),
                    "source": f[0]}
    return {"service": "ntpd", "synchronized": False, "offset_ms": None, "source": None}


def _props(text: str) -> Dict[str, str]:
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
