"""systemd's unit state changes as they happen: PropertiesChanged signals over D-Bus.

systemd sends a unit's ``PropertiesChanged`` only while some client has called
``Manager.Subscribe``; this one does, on a connection of its own, with a match rule that lets
the bus daemon forward only the ``org.freedesktop.systemd1.Unit`` changes of unit objects.
The signals are dispatched on a thread of their own (GLib's main context, see ``bus``); the
callback gets the unit's name and its new ``ActiveState``/``SubState`` (None when systemd only
said they changed). Closing the connection ends the subscription (systemd tracks its clients).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Callable

from ..bus import BusUnavailable, MainContext
from ..machine import Machine
from .services import MANAGER, SYSTEMD, SYSTEMD_PATH, UNIT, _require_systemd

log = logging.getLogger(__name__)

UNIT_PREFIX = "/org/freedesktop/systemd1/unit/"
MATCH = ("type='signal',sender='%s',interface='org.freedesktop.DBus.Properties',"
         "member='PropertiesChanged',path_namespace='%s',arg0='%s'"
         % (SYSTEMD, UNIT_PREFIX.rstrip("/"), UNIT))

#: (unit name, ActiveState or None, SubState or None)
UnitCallback = Callable[[str, "str | None", "str | None"], None]


def unit_name(path: str) -> str | None:
    """The unit a systemd object path names (the reverse of systemd's bus_label_escape)."""
    if not path.startswith(UNIT_PREFIX):
        return None
    label = path[len(UNIT_PREFIX):]
    try:
        raw = re.sub(r"_([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), label)
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeError, ValueError):
        return None


class UnitSignals:
    """Calls ``callback`` for each unit state change systemd announces, until ``close``."""

    def __init__(self, m: Machine, callback: UnitCallback) -> None:
        _require_systemd(m)
        self._callback = callback
        try:
            import dbus.lowlevel
        except ImportError as err:
            raise BusUnavailable("the D-Bus client python3-dbus is not installed (%s)" % err
                                 ) from None
        self._loop = MainContext()
        self._conn: Any = m.dbus.open_signal_connection()
        try:
            self._not_handled = dbus.lowlevel.HANDLER_RESULT_NOT_YET_HANDLED
            self._conn.add_message_filter(self._filter)
            self._conn.add_match_string(MATCH)
            self._conn.call_blocking(SYSTEMD, SYSTEMD_PATH, MANAGER, "Subscribe", "", (),
                                     timeout=m.dbus.timeout)
        except dbus.exceptions.DBusException as err:
            self._conn.close()
            raise BusUnavailable("cannot subscribe to systemd's unit changes: %s" % err
                                 ) from None
        self._thread = threading.Thread(target=self._loop.run, name="vmdiag-unit-signals",
                                        daemon=True)
        self._thread.start()

    def _filter(self, _conn: Any, msg: Any) -> Any:
        try:
            if msg.get_member() == "PropertiesChanged":
                name = unit_name(str(msg.get_path() or ""))
                args = msg.get_args_list()
                if name is not None and len(args) >= 3 and str(args[0]) == UNIT:
                    changed, invalidated = args[1], [str(a) for a in args[2]]
                    if "ActiveState" in changed or "ActiveState" in invalidated:
                        active = changed.get("ActiveState")
                        sub = changed.get("SubState")
                        self._callback(name, None if active is None else str(active),
                                       None if sub is None else str(sub))
        except Exception:  # noqa: BLE001 - a bad signal must not end the dispatch thread
            log.warning("handling a unit signal failed", exc_info=True)
        return self._not_handled

    @property
    def connected(self) -> bool:
        """False once the bus went away (dbus-daemon restarted): subscribe again then."""
        return bool(self._conn.get_is_connected())

    def close(self) -> None:
        self._loop.stop()
        self._thread.join(5.0)
        self._conn.close()


def watch_units(m: Machine, callback: UnitCallback) -> UnitSignals:
    """Start delivering unit state changes to ``callback``; raises Unsupported (no systemd)
    or BusUnavailable (no D-Bus client, bus, or main loop)."""
    return UnitSignals(m, callback)
