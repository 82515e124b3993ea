"""The system D-Bus, through the distribution's dbus-python (``python3-dbus``) when it is there.

Why dbus-python: it is the one D-Bus client both EL9 (``python3-dbus``, BaseOS, which
firewalld and tuned need) and Debian 12 (``python3-dbus``) ship as a distribution package; it
costs about 4 MiB of RSS and 25 ms of CPU to import here, half of what PyGObject's Gio costs,
and it needs no thread or main loop for method calls. (jeepney is lighter still, but EL9
does not ship it.) The agent must run with nothing but Python and psutil, so dbus-python is
optional: without it, or without a reachable bus, every caller falls back to its helper
command and says so (``BusUnavailable``).

``Bus`` opens one private connection lazily, on the first call, and again after the bus went
away (dbus-daemon restarted); calls are serialised by a lock, so the collector thread and the
event watcher can share it. Values come back as plain Python types (``plain``).

Signals need a main loop: ``Bus.open_signal_connection`` returns a new connection attached
to GLib's default main context through ``dbus.mainloop.glib`` (part of python3-dbus), and
``MainContext`` iterates that context from one thread through ctypes. GLib is a dependency
of python3-dbus itself on both distributions, so no PyGObject is needed for this.

    Bus(address=None)         the system bus (``address``: any D-Bus address, e.g. a test's)
    NoBus(why)                a machine read from a root path: every call raises BusUnavailable
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from .errors import PlatformError

#: Seconds a method call may take before it counts as failed (systemd answers in ms).
CALL_TIMEOUT_S = 5.0
PROPERTIES = "org.freedesktop.DBus.Properties"


class BusUnavailable(PlatformError):
    """No D-Bus here: dbus-python is not installed, or the bus cannot be reached."""


class BusError(PlatformError):
    """A D-Bus call failed (the service is not there, refused, or did not answer)."""


def plain(value: Any) -> Any:
    """dbus-python's typed values (dbus.String, dbus.Array, ...) as plain Python values."""
    try:
        import dbus
    except ImportError:  # no dbus-python: nothing can be a dbus-python value
        return value

    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.ByteArray, bytes)):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, dbus.Struct):
        return tuple(plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class Bus:
    """A lazily opened private connection to the system bus (or to ``address``)."""

    def __init__(self, address: str | None = None, timeout: float = CALL_TIMEOUT_S) -> None:
        self.address = address
        self.timeout = timeout
        self._conn: Any = None
        self._lock = threading.Lock()
        self._missing: str | None = None

    def _module(self) -> Any:
        if self._missing is not None:
            raise BusUnavailable(self._missing)
        try:
            import dbus.bus
        except ImportError as err:
            self._missing = ("the D-Bus client python3-dbus is not installed (%s); install it "
                             "so the agent reads systemd over D-Bus instead of starting "
                             "helper commands" % err)
            raise BusUnavailable(self._missing) from None
        return dbus

    def _connect(self, mainloop: Any = None) -> Any:
        dbus = self._module()
        try:
            target = dbus.bus.BUS_SYSTEM if self.address is None else self.address
            conn = dbus.bus.BusConnection(target, mainloop=mainloop)
        except dbus.exceptions.DBusException as err:
            raise BusUnavailable("cannot connect to the %s: %s" % (
                "system D-Bus" if self.address is None else "D-Bus at " + self.address,
                err.get_dbus_message() or err.get_dbus_name())) from None
        conn.set_exit_on_disconnect(False)  # libdbus would exit() the agent otherwise
        return conn

    def connection(self) -> Any:
        """The open connection (opened now if needed); raises BusUnavailable."""
        with self._lock:
            return self._connection()

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.get_is_connected():
            self._conn = None  # the bus went away; open a new connection
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def call(self, service: str, path: str, interface: str, method: str,
             signature: str = "", args: Sequence[Any] = ()) -> Any:
        """Call ``method`` and return its (plain) result; a method returning several values
        gives a tuple. Raises BusUnavailable (no bus) or BusError (the call failed)."""
        with self._lock:
            conn = self._connection()
            dbus = self._module()
            try:
                result = conn.call_blocking(service, path, interface, method, signature,
                                            tuple(args), timeout=self.timeout)
            except dbus.exceptions.DBusException as err:
                if not conn.get_is_connected():
                    self._conn = None
                    raise BusUnavailable("the D-Bus connection closed during %s.%s" % (
                        interface, method)) from None
                raise BusError("%s.%s on %s failed: %s" % (
                    interface, method, service, err.get_dbus_message() or err.get_dbus_name())
                ) from None
        return plain(result)

    def get_property(self, service: str, path: str, interface: str, name: str) -> Any:
        return self.call(service, path, PROPERTIES, "Get", "ss", (interface, name))

    def get_properties(self, service: str, path: str, interface: str) -> Any:
        return self.call(service, path, PROPERTIES, "GetAll", "s", (interface,))

    def open_signal_connection(self) -> Any:
        """A new connection whose signals are dispatched by GLib's default main context (run
        it with ``MainContext``); the caller owns and closes it."""
        dbus = self._module()
        try:
            from dbus.mainloop.glib import DBusGMainLoop
        except ImportError as err:
            raise BusUnavailable("dbus.mainloop.glib cannot be imported (%s)" % err) from None
        del dbus
        return self._connect(mainloop=DBusGMainLoop())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class NoBus(Bus):
    """The bus of a machine that is not the running system: there is none."""

    def __init__(self, why: str = "this machine is read from a root path, not the live system"
                 ) -> None:
        super().__init__()
        self._missing = "no D-Bus: %s" % why


class MainContext:
    """GLib's default main context, iterated from one thread (``run``) until ``stop``.

    ctypes releases the GIL around each iteration; dbus-python takes it back to run the
    signal handlers, in the thread that calls ``run``.
    """

    def __init__(self) -> None:
        try:
            import ctypes

            self._glib = ctypes.CDLL("libglib-2.0.so.0")
        except (ImportError, OSError, MemoryError) as err:
            # MemoryError: ctypes' import-time callback where W^X memory is enforced without
            # libffi's static trampolines
            raise BusUnavailable("GLib (libglib-2.0.so.0) cannot be loaded through ctypes: %s"
                                 % err) from None
        self._glib.g_main_context_iteration.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._glib.g_main_context_iteration.restype = ctypes.c_int
        self._glib.g_main_context_wakeup.argtypes = [ctypes.c_void_p]
        self._stop = threading.Event()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        while not self._stop.is_set() and not (until is not None and until()):
            self._glib.g_main_context_iteration(None, 1)

    def stop(self) -> None:
        self._stop.set()
        self._glib.g_main_context_wakeup(None)


__all__ = ["Bus", "BusError", "BusUnavailable", "MainContext", "NoBus", "plain"]
