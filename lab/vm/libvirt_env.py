"""A real libvirtd on this machine and a transient test guest booted through it.

Without systemd (CI containers) nothing starts libvirtd, so :func:`ensure_daemons` starts
``virtlogd -d`` and ``libvirtd -d`` itself and waits for the socket. :class:`Guest` then walks
a VM through the same path oVirt does: domain XML -> VDSM ``before_vm_start`` hook (which adds
vmdiag's channel) -> ``createXML`` (a transient domain, like VDSM's) -> boot -> destroy ->
``after_vm_destroy`` hook. The guest boots from a qcow2 overlay, so a killed guest never dirties
the cached image. When anything fails, errors carry the tail of the serial console log.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Callable, TypeVar

import libvirt

from diag_protocol import CHANNEL_NAME, HOST_CHANNELS_DIR, host_socket_path

from . import domain_xml, vdsm_hook
from .accel import choose_accel
from .guest_net import ensure_guest_services
from .image import GuestImage, cache_dir
from .progress import log, step

URI = "qemu:///system"
SOCKET = "/run/libvirt/libvirt-sock"
CHANNELS_DIR = HOST_CHANNELS_DIR
QEMU_USER = "libvirt-qemu"
BOOT_TIMEOUT_ENV = "VMDIAG_TEST_BOOT_TIMEOUT"
#: Printed by agetty once the guest reached multi-user (autologin on ttyS0).
LOGIN_MARKER = "login:"

T = TypeVar("T")

# libvirt prints every error to stderr by default, including expected ones.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class GuestError(RuntimeError):
    """The guest did not start or boot. The message ends with its console log's tail."""


def _wait_for(predicate: Callable[[], bool], timeout: float, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def _daemon_running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], stdout=subprocess.DEVNULL).returncode == 0


def _revive_event_loop() -> None:
    """Give libvirt's event implementation a running loop again, if an earlier test left it on a
    closed one.

    The relay tests register libvirtaio in this (pytest) process, once and for good, on their
    own asyncio loops; when the VM tests connect afterwards, libvirt would hand the new
    connection's keepalive to a closed loop (a "Event loop is closed" traceback, then a
    connection that looks dead). A loop in a daemon thread adopts the implementation instead,
    the way the relay moves it between loops (``discovery.ensure_event_impl``).
    """
    import libvirtaio

    impl = libvirtaio.getCurrentImpl()
    if impl is None or not impl.loop.is_closed():
        return
    from vdsm_hooks.relay.discovery import ensure_event_impl

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="libvirt-events", daemon=True).start()

    async def adopt() -> None:
        ensure_event_impl()

    asyncio.run_coroutine_threadsafe(adopt(), loop).result(10)


def ensure_daemons(timeout: float = 30.0) -> libvirt.virConnect:
    """Start virtlogd and libvirtd if they are not running, and the lab's DNS and NTP servers
    for guests (``guest_net``); return a connection to libvirtd."""
    ensure_guest_services(os.path.join(cache_dir(), "lab-net"))
    for daemon in ("virtlogd", "libvirtd"):
        if _daemon_running(daemon):
            continue
        if shutil.which(daemon) is None:
            raise GuestError("%s is not installed: apt-get install libvirt-daemon-system "
                             "qemu-system-x86 qemu-utils" % daemon)
        with step("start %s -d" % daemon):
            subprocess.run([daemon, "-d"], check=True)
    if not _wait_for(lambda: os.path.exists(SOCKET), timeout):
        raise GuestError("libvirtd started but %s did not appear within %.0fs; run "
                         "'libvirtd -v' in a terminal to see why" % (SOCKET, timeout))
    _revive_event_loop()
    last: Exception | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return libvirt.open(URI)
        except libvirt.libvirtError as err:
            last = err
            time.sleep(0.5)
    raise GuestError("cannot connect to %s: %s" % (URI, last))


def ensure_channels_dir(path: str = CHANNELS_DIR) -> str:
    """Create the host channel folder as oVirt hosts have it: owned by QEMU's user, mode 0775."""
    os.makedirs(path, exist_ok=True)
    try:
        qemu = pwd.getpwnam(QEMU_USER)
        os.chown(path, qemu.pw_uid, qemu.pw_gid)
    except KeyError:
        pass
    os.chmod(path, 0o775)
    return path


def console_tail(path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a console log, or a note why there are none."""
    try:
        with open(path, errors="replace") as handle:
            text = handle.read()
    except OSError as err:
        return "(no console log at %s: %s)" % (path, err)
    return "\n".join(text.splitlines()[-lines:]) or "(console log %s is empty)" % path


class Guest:
    """One transient test VM. Use :meth:`start`, then :meth:`wait_for_boot`, then :meth:`destroy`.

    ``use_hook`` runs vmdiag's VDSM hook on the XML; when the hook is not in the tree (yet)
    the channel is added directly and ``hook_used`` stays False so tests can tell.
    """

    def __init__(self, conn: libvirt.virConnect, image: GuestImage, run_dir: str | None = None,
                 accel: str | None = None, name: str | None = None,
                 properties: dict[str, str] | None = None, use_hook: bool = True,
                 vm_id: str | None = None, cmdline_extra: str = "") -> None:
        self.conn = conn
        self.image = image
        self.vm_id = vm_id or str(uuid.uuid4())
        #: appended to the kernel command line; ``vmdiag.role=`` picks a role of the test image
        self.cmdline_extra = cmdline_extra
        self.name = name or "vmdiag-test-" + self.vm_id[:8]
        self.own_run_dir = run_dir is None
        self.run_dir = run_dir or tempfile.mkdtemp(prefix=self.name + "-")
        os.chmod(self.run_dir, 0o755)
        self.overlay = os.path.join(self.run_dir, "overlay.qcow2")
        self.console_log = os.path.join(self.run_dir, "console.log")
        self.accel = accel or choose_accel(image.kernel)
        self.properties = {"vmdiag": "on"} if properties is None else properties
        self.use_hook = use_hook
        self.hook_used = False
        self.xml = ""
        self.domain: libvirt.virDomain | None = None

    @property
    def dom(self) -> libvirt.virDomain:
        """The running domain, looked up again if libvirtd restarted under us.

        libvirtd keeps running guests across its own restarts, but the old connection is dead;
        on a shared machine another job may restart the daemon at any time.
        """
        if self.domain is None:
            raise GuestError("guest %s is not running: call start() first" % self.name)
        try:
            alive = self.conn.isAlive() == 1
        except libvirt.libvirtError:
            alive = False
        if not alive:
            self._reconnect()
        return self.domain

    def _reconnect(self) -> None:
        log("libvirt connection lost (libvirtd restarted?); reconnecting")
        self.conn = ensure_daemons()
        try:
            self.domain = self.conn.lookupByUUIDString(self.vm_id)
        except libvirt.libvirtError as err:
            raise GuestError("guest %s vanished while libvirtd restarted (%s); console:\n%s"
                             % (self.name, err, console_tail(self.console_log))) from err

    def call(self, func: Callable[[libvirt.virDomain], T], attempts: int = 4) -> T:
        """``func(domain)``, retried across a libvirtd restart (reconnect, wait for qga).

        After a restart libvirtd needs a moment to reattach the guest-agent channel, so a
        failed call is retried a few times, two seconds apart, on a fresh connection.
        """
        for attempt in range(1, attempts + 1):
            try:
                return func(self.dom)
            except libvirt.libvirtError as err:
                if attempt == attempts:
                    raise
                log("libvirt call failed (%s); retrying (%d/%d)" % (err, attempt, attempts - 1))
                time.sleep(2)
                try:
                    alive = self.conn.isAlive() == 1
                except libvirt.libvirtError:
                    alive = False
                if not alive:
                    self._reconnect()
        raise AssertionError("unreachable")

    def is_active(self) -> bool:
        """Whether the domain runs; survives one libvirtd restart during the call."""
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError:
            self._reconnect()
            return bool(self.dom.isActive())

    @property
    def channel_path(self) -> str:
        """The host socket of the vmdiag channel (DESIGN.md: explicit path under channels/)."""
        return host_socket_path(self.vm_id)

    def spec(self) -> domain_xml.DomainSpec:
        return domain_xml.DomainSpec(
            name=self.name, uuid=self.vm_id, kernel=self.image.kernel, initrd=self.image.initrd,
            cmdline=" ".join(p for p in (self.image.cmdline, self.cmdline_extra) if p),
            disk=self.overlay, console_log=self.console_log,
            accel=self.accel)

    def build_xml(self) -> str:
        """Domain XML after the ``before_vm_start`` hook (or the direct fallback) ran on it."""
        xml = domain_xml.domain_xml(self.spec())
        script = vdsm_hook.hook_path("before_vm_start")
        if self.use_hook and os.path.exists(script):
            self.hook_used = True
            return vdsm_hook.run_hook(script, xml, self.vm_id, self.properties)
        if self.use_hook:
            log("WARNING: %s is not in the tree yet; adding the vmdiag channel directly" % script)
        return add_channel(xml, self.channel_path)

    def start(self) -> None:
        """Create the overlay, run the hook and create the transient domain."""
        ensure_channels_dir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        self.image.root_image, self.overlay], check=True)
        self.xml = self.build_xml()
        with open(os.path.join(self.run_dir, "domain.xml"), "w", encoding="utf-8") as handle:
            handle.write(self.xml)
        self._destroy_leftover()
        with step("create domain %s (%s, uuid %s)" % (self.name, self.accel, self.vm_id)):
            try:
                self.domain = self.conn.createXML(self.xml, 0)
            except libvirt.libvirtError as err:
                raise GuestError("libvirt refused the domain: %s\nXML: %s\nconsole:\n%s" % (
                    err, os.path.join(self.run_dir, "domain.xml"),
                    console_tail(self.console_log))) from err

    def _destroy_leftover(self) -> None:
        """A transient domain of this name left by an interrupted lab run (its disk lies in the
        lab's cache) would make createXML fail: destroy it, and say so. Anything else of this
        name is somebody else's, and createXML's refusal names it."""
        try:
            other = self.conn.lookupByName(self.name)
        except libvirt.libvirtError:
            return
        if other.isPersistent() or cache_dir() not in other.XMLDesc(0):
            return
        log("destroying %s (uuid %s), left running by an interrupted lab run"
            % (self.name, other.UUIDString()))
        try:
            other.destroy()
        except libvirt.libvirtError as err:
            log("could not destroy the leftover %s: %s" % (self.name, err))

    def console_text(self) -> str:
        try:
            with open(self.console_log, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def wait_for_console(self, marker: str, timeout: float, after: int = 0) -> float:
        """Wait until ``marker`` shows on the console past offset ``after``; return seconds."""
        began = time.monotonic()

        def seen() -> bool:
            if self.domain is not None and not self.is_active():
                raise GuestError("guest %s stopped while booting; console:\n%s"
                                 % (self.name, console_tail(self.console_log)))
            return marker in self.console_text()[after:]

        if not _wait_for(seen, timeout, 0.5):
            raise GuestError("guest %s did not print %r within %.0fs (accel %s); console log %s "
                             "ends with:\n%s" % (self.name, marker, timeout, self.accel,
                                                self.console_log, console_tail(self.console_log)))
        return time.monotonic() - began

    def boot_timeout(self) -> float:
        default = 120.0 if self.accel == "kvm" else 300.0
        return float(os.environ.get(BOOT_TIMEOUT_ENV, default))

    def wait_for_boot(self, after: int = 0) -> float:
        """Wait for the serial login prompt (multi-user reached); return the boot time in s."""
        with step("boot guest %s to its login prompt" % self.name):
            return self.wait_for_console(LOGIN_MARKER, self.boot_timeout(), after)

    def reboot(self) -> int:
        """Ask the guest to reboot (qemu-guest-agent, else ACPI); return the console offset."""
        offset = len(self.console_text())
        try:
            self.dom.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT)
        except libvirt.libvirtError as err:
            log("reboot through the guest agent failed (%s); trying ACPI" % err)
            self.dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        return offset

    def destroy(self) -> None:
        """Stop the guest, run the ``after_vm_destroy`` hook if present, delete the overlay."""
        if self.domain is not None:
            try:
                if self.is_active():
                    self.dom.destroy()
            except (libvirt.libvirtError, GuestError) as err:
                log("destroying %s: %s" % (self.name, err))
            self.domain = None
        script = vdsm_hook.hook_path("after_vm_destroy")
        if self.hook_used and os.path.exists(script):
            try:
                vdsm_hook.run_hook(script, self.xml, self.vm_id, self.properties)
            except (vdsm_hook.HookFailed, OSError) as err:
                log("after_vm_destroy hook: %s" % err)
        if os.path.exists(self.overlay):
            os.unlink(self.overlay)
        if self.own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def add_channel(xml: str, path: str) -> str:
    """Add the vmdiag virtio channel bound at ``path`` (what the hook does, for its absence)."""
    domain = ET.fromstring(xml)
    devices = domain.find("devices")
    assert devices is not None
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "source", mode="bind", path=path)
    ET.SubElement(channel, "target", type="virtio", name=CHANNEL_NAME)
    return ET.tostring(domain, encoding="unicode")
