"""A small org.freedesktop.systemd1 (plus timedate1 and timesync1) on a real dbus-daemon.

The agent's D-Bus code is tested against a real bus daemon (``dbus-daemon --session``) and
real D-Bus messages; only the service at the other end is this stand-in. It implements the
parts of systemd's documented API the agent uses (``Manager.ListUnitsByNames``,
``ListUnitsFiltered``, ``Subscribe``, ``Unsubscribe``, ``Properties.Get/GetAll`` and
``PropertiesChanged`` on unit objects, sent only while a client is subscribed, as systemd
does) with the same signatures, and fails on any other method (dbus-python answers
UnknownMethod). Tests drive it through ``org.vmdiag.test.Control``.

    python -m tests.guest_agent.fake_systemd ADDRESS STATE.json   (run by ``FakeSystemd``)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any, Dict, List

SYSTEMD = "org.freedesktop.systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
PROPS = "org.freedesktop.DBus.Properties"
CONTROL = "org.vmdiag.test.Control"
UNIT_INFO = "a(ssssssouso)"


def unit_path(name: str) -> str:
    """systemd's bus_label_escape: every byte but [A-Za-z0-9] as _xx."""
    out = []
    for ch in name.encode():
        c = chr(ch)
        out.append(c if c.isascii() and c.isalnum() else "_%02x" % ch)
    return "/org/freedesktop/systemd1/unit/" + "".join(out)


def serve(address: str, state_file: str) -> None:
    import dbus
    import dbus.bus
    import dbus.service
    from dbus.mainloop.glib import DBusGMainLoop

    from guest_agent.platform.bus import MainContext

    with open(state_file, encoding="utf-8") as fh:
        state: Dict[str, Any] = json.load(fh)
    units: Dict[str, Dict[str, str]] = state["units"]
    bus = dbus.bus.BusConnection(address, mainloop=DBusGMainLoop())
    names = [dbus.service.BusName(n, bus) for n in
             (SYSTEMD, "org.freedesktop.timedate1", "org.freedesktop.timesync1")]
    subscribers: set = set()
    calls: List[str] = []

    def info(name: str) -> tuple:
        u = units.get(name) or {"load": "not-found", "active": "inactive", "sub": "dead",
                                "description": name}
        return (name, u.get("description", name), u["load"], u["active"], u["sub"], "",
                dbus.ObjectPath(unit_path(name)), dbus.UInt32(0), "", dbus.ObjectPath("/"))

    class Unit(dbus.service.Object):
        def __init__(self, name: str) -> None:
            super().__init__(bus, unit_path(name))
            self.name = name

        def props(self) -> Dict[str, Any]:
            row = info(self.name)
            return {"Id": row[0], "Description": row[1], "LoadState": row[2],
                    "ActiveState": row[3], "SubState": row[4]}

        @dbus.service.method(PROPS, in_signature="ss", out_signature="v")
        def Get(self, interface: str, prop: str) -> Any:  # noqa: N802 - D-Bus names
            return self.props()[prop]

        @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
        def GetAll(self, interface: str) -> Any:  # noqa: N802
            return self.props()

        @dbus.service.signal(PROPS, signature="sa{sv}as")
        def PropertiesChanged(self, interface: str, changed: Any, invalidated: Any  # noqa: N802
                              ) -> None:
            pass

    unit_objects: Dict[str, Unit] = {}

    def unit_object(name: str) -> Unit:
        if name not in unit_objects:
            unit_objects[name] = Unit(name)
        return unit_objects[name]

    class Manager(dbus.service.Object):
        @dbus.service.method(MANAGER, in_signature="as", out_signature=UNIT_INFO)
        def ListUnitsByNames(self, wanted: Any) -> Any:  # noqa: N802
            calls.append("ListUnitsByNames")
            for n in wanted:
                unit_object(str(n))
            return [info(str(n)) for n in wanted]

        @dbus.service.method(MANAGER, in_signature="as", out_signature=UNIT_INFO)
        def ListUnitsFiltered(self, states: Any) -> Any:  # noqa: N802
            calls.append("ListUnitsFiltered")
            st = {str(s) for s in states}
            return [info(n) for n, u in sorted(units.items())
                    if not st or st & {u["load"], u["active"], u["sub"]}]

        @dbus.service.method(MANAGER, in_signature="", out_signature="",
                             sender_keyword="sender")
        def Subscribe(self, sender: str) -> None:  # noqa: N802
            calls.append("Subscribe")
            subscribers.add(sender)

        @dbus.service.method(MANAGER, in_signature="", out_signature="",
                             sender_keyword="sender")
        def Unsubscribe(self, sender: str) -> None:  # noqa: N802
            subscribers.discard(sender)

    class Control(dbus.service.Object):
        @dbus.service.method(CONTROL, in_signature="sss", out_signature="")
        def SetState(self, name: str, active: str, sub: str) -> None:  # noqa: N802
            u = units.setdefault(str(name), {"load": "loaded", "description": str(name)})
            u["active"], u["sub"] = str(active), str(sub)
            if subscribers:  # systemd sends unit changes only while someone subscribed
                unit_object(str(name)).PropertiesChanged(
                    UNIT, {"ActiveState": str(active), "SubState": str(sub)},
                    dbus.Array([], signature="s"))

        @dbus.service.method(CONTROL, in_signature="", out_signature="as")
        def Calls(self) -> Any:  # noqa: N802
            return calls

        @dbus.service.method(CONTROL, in_signature="", out_signature="u")
        def Subscribers(self) -> Any:  # noqa: N802
            return len(subscribers)

    class Properties(dbus.service.Object):
        def __init__(self, path: str, interface: str, values: Dict[str, Any]) -> None:
            super().__init__(bus, path)
            self.interface, self.values = interface, values

        @dbus.service.method(PROPS, in_signature="ss", out_signature="v")
        def Get(self, interface: str, prop: str) -> Any:  # noqa: N802
            calls.append("Get:%s.%s" % (interface, prop))
            if interface != self.interface or prop not in self.values:
                raise dbus.exceptions.DBusException(
                    "no property %s.%s" % (interface, prop),
                    name="org.freedesktop.DBus.Error.UnknownProperty")
            return self.values[prop]

        @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
        def GetAll(self, interface: str) -> Any:  # noqa: N802
            calls.append("GetAll:%s" % interface)
            return self.values if interface == self.interface else {}

    Manager(bus, "/org/freedesktop/systemd1")
    Control(bus, "/org/vmdiag/test")
    if "timedate" in state:
        Properties("/org/freedesktop/timedate1", "org.freedesktop.timedate1",
                   {k: dbus.Boolean(v) for k, v in state["timedate"].items()})
    if "timesync" in state:
        ts = state["timesync"]
        msg = dbus.Struct([dbus.UInt32(v) for v in ts["ntp_message"][:4]]
                          + [dbus.Int32(ts["ntp_message"][4]),
                             dbus.UInt64(ts["ntp_message"][5]), dbus.UInt64(ts["ntp_message"][6]),
                             dbus.Array([], signature="y")]
                          + [dbus.UInt64(v) for v in ts["ntp_message"][8:12]]
                          + [dbus.Boolean(False), dbus.UInt64(1), dbus.UInt64(0)],
                          signature="uuuuittayttttbtt")
        Properties("/org/freedesktop/timesync1", "org.freedesktop.timesync1.Manager",
                   {"ServerName": ts["server"], "NTPMessage": msg})
    assert names  # the names are owned as long as these objects live
    loop = MainContext()
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    print("ready", flush=True)
    loop.run()
    del names


class FakeSystemd:
    """A private dbus-daemon with the fake services on it; ``address`` to connect to."""

    def __init__(self, tmpdir: str, state: Dict[str, Any], socket: str | None = None) -> None:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            raise RuntimeError("dbus-daemon is not installed (Debian package dbus); "
                               "scripts/setup-deps installs it")
        self.state_file = os.path.join(tmpdir, "fake-systemd.json")
        with open(self.state_file, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        where = ["--address=unix:path=" + socket] if socket else []
        self.daemon = subprocess.Popen([daemon, "--session", "--nofork", "--print-address"] + where,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.daemon.stdout is not None
        self.address = self.daemon.stdout.readline().decode().strip()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.service = subprocess.Popen([sys.executable, "-m", "tests.guest_agent.fake_systemd",
                                         self.address, self.state_file], cwd=root,
                                        stdout=subprocess.PIPE)
        assert self.service.stdout is not None
        line = self.service.stdout.readline()
        if line.strip() != b"ready":
            self.close()
            raise RuntimeError("the fake systemd did not start (see its stderr above)")

    def control(self, method: str, signature: str = "", args: tuple = ()) -> Any:
        from guest_agent.platform.bus import Bus

        bus = Bus(self.address)
        try:
            return bus.call(SYSTEMD, "/org/vmdiag/test", CONTROL, method, signature, args)
        finally:
            bus.close()

    def set_state(self, name: str, active: str, sub: str) -> None:
        self.control("SetState", "sss", (name, active, sub))

    def calls(self) -> List[str]:
        result: List[str] = self.control("Calls")
        return result

    def close(self) -> None:
        for proc in (self.service, self.daemon):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
