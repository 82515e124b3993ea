"""Clock synchronisation state from chrony, systemd-timesyncd or ntpd.

With systemd's D-Bus (``read_via`` "dbus"): which time daemon runs is one ``ListUnitsByNames``
call to systemd; for systemd-timesyncd the server and the offset of its last exchange come
from its own interface (org.freedesktop.timesync1, no process start), and whether the kernel
clock is synchronised from timedated's ``NTPSynchronized`` (org.freedesktop.timedate1, the
value ``timedatectl`` shows: the kernel's adjtimex state, whichever daemon disciplines it).
timedated is started by the bus on demand and exits when idle, so that read costs one process
start in timedated's own unit every ``[collect] timesync_interval``. chrony and ntpd have no
D-Bus interface: their figures still come from ``chronyc``/``ntpq`` ("dbus+chronyc").

Without D-Bus, the helper commands are tried in order (chrony is the EL default, timesyncd
the Debian one); the first that answers wins. When none answers, the error lists why each
failed, so the admin sees whether the tool is missing or its daemon is down.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from ..bus import BusError, BusUnavailable
from ..errors import CommandError, PlatformError
from ..machine import Machine
from .services import list_units_by_names

#: Time daemons' units, in the order a running one is picked, and the service name reported.
TIME_UNITS = (("chronyd.service", "chronyd"), ("chrony.service", "chronyd"),
              ("systemd-timesyncd.service", "systemd-timesyncd"), ("ntpd.service", "ntpd"),
              ("ntp.service", "ntpd"), ("ntpsec.service", "ntpd"))
TIMEDATE = ("org.freedesktop.timedate1", "/org/freedesktop/timedate1",
            "org.freedesktop.timedate1")
TIMESYNC = ("org.freedesktop.timesync1", "/org/freedesktop/timesync1",
            "org.freedesktop.timesync1.Manager")


def time_sync(m: Machine) -> Dict[str, Any]:
    try:
        return _via_dbus(m)
    except BusUnavailable:
        pass
    problems: List[str] = []
    for probe in (_chrony, _timesyncd, _ntpd):
        try:
            return probe(m)
        except CommandError as err:
            problems.append(str(err))
    raise PlatformError("no time synchronisation service answered (%s); install and enable "
                        "chronyd or systemd-timesyncd" % "; ".join(problems))


def _via_dbus(m: Machine) -> Dict[str, Any]:
    if not os.path.isdir(m.paths.host("/run/systemd/system")):
        raise BusUnavailable("systemd is not the init system here")
    try:
        rows = list_units_by_names(m, [unit for unit, _ in TIME_UNITS])
    except BusError as err:
        raise BusUnavailable(str(err)) from None  # a bus without systemd: use the commands
    active = {r[0] for r in rows if r[3] == "active"}
    service = next((name for unit, name in TIME_UNITS if unit in active), None)
    if service == "chronyd":
        out = _chrony(m)
        out["read_via"] = "dbus+chronyc"  # chronyd has no D-Bus interface
        return out
    if service == "ntpd":
        out = _ntpd(m)
        out["read_via"] = "dbus+ntpq"
        return out
    try:
        synced = bool(m.dbus.get_property(*TIMEDATE, "NTPSynchronized"))
    except BusError:
        synced = None  # no timedated (minimal containers): the check says it cannot tell
    source, offset_ms = None, None
    if service == "systemd-timesyncd":
        props = m.dbus.get_properties(*TIMESYNC)
        source = props.get("ServerName") or None
        offset_ms = ntp_message_offset_ms(props.get("NTPMessage"))
    return {"service": service, "synchronized": synced, "offset_ms": offset_ms,
            "source": source, "read_via": "dbus"}


def ntp_message_offset_ms(message: Any) -> float | None:
    """The system clock's offset from the server at timesyncd's last exchange, in ms, signed
    as chrony's (negative: the clock is slow), from its ``NTPMessage`` property
    ``(leap, version, mode, stratum, precision, root delay, root dispersion, reference,
    origin, receive, transmit, destination, spike, packets, jitter)``, times in us; None
    before the first exchange."""
    if not isinstance(message, (list, tuple)) or len(message) < 12:
        return None
    origin, receive, transmit, dest = (int(v) for v in message[8:12])
    if not (origin and receive and transmit and dest):
        return None
    server_ahead_us = ((receive - origin) + (transmit - dest)) / 2.0
    return round(-server_ahead_us / 1000.0, 3)


def _chrony(m: Machine) -> Dict[str, Any]:
    out = parse_chrony_tracking(m.run(["chronyc", "-n", "tracking"], timeout=5).stdout)
    out["read_via"] = "chronyc"
    return out


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
            "source": source, "read_via": "timedatectl"}


def _ntpd(m: Machine) -> Dict[str, Any]:
    out = parse_ntpq_peers(m.run(["ntpq", "-pn"], timeout=5).stdout)
    out["read_via"] = "ntpq"
    return out


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
