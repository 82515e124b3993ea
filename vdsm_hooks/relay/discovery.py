"""Which running VMs have a vmdiag channel, and when that changes: libvirt, event driven.

At (re)connection the relay lists the active domains and reads each one's live XML for a
``<channel type='unix'>`` whose ``<target type='virtio' name='org.vmdiag.agent.0'/>``; the
socket path comes from that channel's ``<source path=...>`` (the hook writes
``<channels_dir>/<uuid>.org.vmdiag.agent.0``, but the XML is the truth). Lifecycle events
(started, stopped, migrated in and out, suspended and resumed, crashed), reboot events and
device events (a channel hot-plugged by ``vmdiag-relay attach`` or unplugged) keep the listener
current. When the connection to libvirtd closes (a libvirtd restart) the
discovery reconnects with backoff and lists again; the listener's ``domains_listed`` then
reconciles, so VMs that stopped meanwhile are closed and new ones opened.

The connection is read-only: listing, live XML and events need nothing more, and the relay
can run unprivileged (see docs/relay.md, shipped as /usr/share/doc/vmdiag-relay/relay.md).
Calls into libvirt that may block (open, list, XML) run in a worker thread so a slow libvirtd
never stalls the channel sessions; events arrive on the asyncio loop through ``libvirtaio``.

Errors::

    DiscoveryError          the libvirt event loop cannot be set up in this process
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Dict, List, Protocol, Tuple

import libvirt
import libvirtaio

from diag_protocol import CHANNEL_NAME

log = logging.getLogger("vmdiag.relay.discovery")


class DiscoveryError(Exception):
    """libvirt events cannot be received in this process; the message says why."""


@dataclass(frozen=True)
class DomainInfo:
    """A running domain that has the vmdiag channel."""

    vm_id: str
    name: str
    socket_path: str
    state: str = "running"


class DiscoveryListener(Protocol):
    """What the discovery tells (the daemon implements it; every call is on the loop)."""

    def domain_up(self, info: DomainInfo) -> None:
        """A domain with the channel runs (idempotent: may be told again)."""

    def domain_down(self, vm_id: str, reason: str) -> None:
        """A domain stopped or left this host (migrated away, destroyed, crashed, saved)."""

    def domain_state(self, vm_id: str, state: str) -> None:
        """A domain changed state without stopping (paused, running, rebooted, crashed)."""

    def domains_listed(self, domains: List[DomainInfo], complete: bool) -> None:
        """After each (re)connection: every running domain with the channel. ``complete`` is
        False when some domains could not be read; the listener must then not close others."""


_EV = libvirt
#: Lifecycle event -> what the listener hears. "up" re-reads the domain; "down" stops it.
_LIFECYCLE = {
    _EV.VIR_DOMAIN_EVENT_STARTED: ("up", "running"),
    _EV.VIR_DOMAIN_EVENT_RESUMED: ("up", "running"),
    _EV.VIR_DOMAIN_EVENT_SUSPENDED: ("state", "paused"),
    _EV.VIR_DOMAIN_EVENT_PMSUSPENDED: ("state", "pmsuspended"),
    _EV.VIR_DOMAIN_EVENT_SHUTDOWN: ("state", "shutting down"),
    _EV.VIR_DOMAIN_EVENT_CRASHED: ("state", "crashed"),
    _EV.VIR_DOMAIN_EVENT_STOPPED: ("down", "stopped"),
}
_STOPPED_DETAIL = {
    _EV.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
    _EV.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    _EV.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    _EV.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated away",
    _EV.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    _EV.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
    _EV.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "reverted to a snapshot",
}
_ACTIVE_STATES = {
    _EV.VIR_DOMAIN_RUNNING: "running",
    _EV.VIR_DOMAIN_BLOCKED: "running",
    _EV.VIR_DOMAIN_PAUSED: "paused",
    _EV.VIR_DOMAIN_SHUTDOWN: "shutting down",
    _EV.VIR_DOMAIN_CRASHED: "crashed",
    _EV.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


def channel_socket(domain_xml: str) -> str | None:
    """The host socket path of the vmdiag channel in a domain's XML, or None without one."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None
    for channel in root.iterfind("./devices/channel[@type='unix']"):
        target = channel.find("target")
        source = channel.find("source")
        if (target is not None and target.get("type") == "virtio"
                and target.get("name") == CHANNEL_NAME and source is not None
                and source.get("path")):
            return source.get("path")
    return None


def ensure_event_impl() -> None:
    """Route libvirt's events to the running asyncio loop (``libvirtaio``).

    libvirt accepts one event implementation per process, for good. The daemon has one loop;
    tests and tools that run several loops one after another get the registered adapter moved
    to the new loop once the old one is closed.
    """
    loop = asyncio.get_running_loop()
    # libvirt prints every error to stderr by default; the relay reports them itself.
    libvirt.registerErrorHandler(_ignore_error, None)
    impl = libvirtaio.getCurrentImpl()
    if impl is None:
        try:
            libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        except RuntimeError as err:
            raise DiscoveryError("another libvirt event loop implementation is registered in "
                                 "this process; run the relay in its own process") from err
        return
    if impl.loop is loop:
        return
    if not impl.loop.is_closed():
        raise DiscoveryError("libvirt events are bound to another event loop that still runs; "
                             "use one asyncio loop per process for discovery")
    if not impl.is_idle():
        log.debug("moving libvirt events to a new loop with %d callbacks left",
                  len(impl.callbacks))
    impl.loop = loop
    impl.descriptors = libvirtaio.DescriptorDict(impl)


class Discovery:
    """Follows one libvirt connection; tells a DiscoveryListener about channel-bearing VMs."""

    def __init__(self, uri: str, listener: DiscoveryListener, *, readonly: bool = True,
                 min_backoff: float = 0.5, max_backoff: float = 30.0,
                 keepalive: Tuple[int, int] = (5, 3)) -> None:
        self.uri = uri
        self.listener = listener
        self.readonly = readonly
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.keepalive = keepalive
        #: Number of successful (re)connections, each followed by a full listing.
        self.generation = 0
        self.last_error: str | None = None
        self.events: collections.Counter[str] = collections.Counter()
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: List[int] = []
        self._lost = asyncio.Event()
        self._closing = False
        self._listed = asyncio.Event()
        self._attempt = 0
        self._task: asyncio.Task[None] | None = None
        self._inspections: set[asyncio.Task[None]] = set()
        #: Per VM, a counter bumped by every event, so that a slow XML read started before a
        #: newer event never overrides what that event said.
        self._event_seq: Dict[str, int] = collections.defaultdict(int)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def wait_listed(self, generation: int, timeout: float) -> None:
        """Wait until the listing of ``generation`` (1 = first connection) has been delivered."""
        async def _wait() -> None:
            while self.generation < generation:
                self._listed.clear()
                await self._listed.wait()
        await asyncio.wait_for(_wait(), timeout)

    # -- connection loop -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="vmdiag-discovery")

    async def run(self) -> None:
        """Connect, list, follow events; reconnect with backoff until ``close()``."""
        ensure_event_impl()
        loop = asyncio.get_running_loop()
        while not self._closing:
            self._lost.clear()
            try:
                conn = await loop.run_in_executor(None, self._open)
            except libvirt.libvirtError as err:
                self.last_error = "cannot connect to libvirt at %s: %s" % (self.uri, err)
                if self._attempt == 0:
                    log.warning("%s; retrying with backoff", self.last_error)
                await self._sleep_backoff()
                continue
            try:
                await self._follow(conn, loop)
            finally:
                self._disconnect(conn)
            if not self._closing:
                log.warning("connection to libvirt at %s lost; reconnecting", self.uri)
                await self._sleep_backoff()

    async def close(self) -> None:
        self._closing = True
        self._lost.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for inspection in list(self._inspections):
            inspection.cancel()
        await asyncio.gather(*self._inspections, return_exceptions=True)

    def _open(self) -> libvirt.virConnect:
        if self.readonly:
            return libvirt.openReadOnly(self.uri)
        return libvirt.open(self.uri)

    async def _follow(self, conn: libvirt.virConnect, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass  # drivers without a remote connection (test:///) never close on their own
        try:
            conn.setKeepAlive(*self.keepalive)
        except libvirt.libvirtError:
            pass
        self._callback_ids = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                        self._on_lifecycle, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT,
                                        self._on_reboot, None),
            # a channel hot-plugged or unplugged (vmdiag-relay attach/detach, virsh)
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                                        self._on_device, "added"),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                        self._on_device, "removed"),
        ]
        before = dict(self._event_seq)
        try:
            domains, complete = await loop.run_in_executor(None, self._list, conn)
        except libvirt.libvirtError as err:
            self.last_error = "cannot list domains at %s: %s" % (self.uri, err)
            log.warning("%s; reconnecting", self.last_error)
            return
        # A domain with an event during the listing is left to that event's handling.
        changed = {vm for vm, seq in self._event_seq.items() if before.get(vm) != seq}
        domains = [d for d in domains if d.vm_id not in changed]
        self._attempt = 0
        self.last_error = None
        self.generation += 1
        log.info("libvirt at %s: %d running VM(s) with the vmdiag channel", self.uri, len(domains))
        self.listener.domains_listed(domains, complete and not changed)
        self._listed.set()
        await self._lost.wait()

    def _list(self, conn: libvirt.virConnect) -> Tuple[List[DomainInfo], bool]:
        """Every active domain with the channel; ``complete`` is False if one could not be read
        (it may have stopped while we looked, which is fine, or libvirtd may be in trouble)."""
        out: List[DomainInfo] = []
        complete = True
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                info = _inspect(dom)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    complete = False
                    log.warning("cannot read domain %s: %s", _safe_name(dom), err)
                continue
            if info is not None:
                out.append(info)
        return out, complete

    def _disconnect(self, conn: libvirt.virConnect) -> None:
        self._conn = None
        for callback_id in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
        self._callback_ids = []
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    async def _sleep_backoff(self) -> None:
        delay = min(self.max_backoff, self.min_backoff * (2 ** self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def check(self, vm_id: str) -> DomainInfo | None:
        """Ask libvirt now whether ``vm_id`` runs with the channel (None: it does not).

        For sessions that cannot reach their socket: libvirt does not always send an event
        for a VM that died while libvirtd was down. Raises libvirt.libvirtError when libvirt
        cannot say (not connected, or trouble), so the caller keeps what it has.
        """
        conn = self._conn
        if conn is None:
            raise libvirt.libvirtError("not connected to libvirt at %s" % self.uri)

        def look() -> DomainInfo | None:
            try:
                dom = conn.lookupByUUIDString(vm_id)
                return _inspect(dom)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
        return await asyncio.get_running_loop().run_in_executor(None, look)

    # -- libvirt callbacks (run on the loop) -----------------------------------------------

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: Any) -> None:
        self.events["connection_closed"] += 1
        self._lost.set()

    def _on_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int,
                      detail: int, opaque: Any) -> None:
        try:
            vm_id = dom.UUIDString()
        except libvirt.libvirtError:
            return
        self._event_seq[vm_id] += 1
        action, state = _LIFECYCLE.get(event, ("ignore", ""))
        self.events[action] += 1
        if action == "up":
            self._spawn_inspection(dom, vm_id)
        elif action == "state":
            self.listener.domain_state(vm_id, state)
        elif action == "down":
            reason = _STOPPED_DETAIL.get(detail, "stopped")
            self.listener.domain_down(vm_id, reason)

    def _on_reboot(self, conn: libvirt.virConnect, dom: libvirt.virDomain, opaque: Any) -> None:
        try:
            vm_id = dom.UUIDString()
        except libvirt.libvirtError:
            return
        self.events["reboot"] += 1
        self.listener.domain_state(vm_id, "rebooted")

    def _on_device(self, conn: libvirt.virConnect, dom: libvirt.virDomain, alias: str,
                   change: str) -> None:
        """A device was hot-plugged or unplugged: read the domain again; without the channel
        now, the listener hears that it is gone."""
        try:
            vm_id = dom.UUIDString()
        except libvirt.libvirtError:
            return
        self._event_seq[vm_id] += 1
        self.events["device_" + change] += 1
        self._spawn_inspection(dom, vm_id, gone_without_channel=True)

    def _spawn_inspection(self, dom: libvirt.virDomain, vm_id: str,
                          gone_without_channel: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(
            self._inspect_later(dom, vm_id, gone_without_channel))
        self._inspections.add(task)
        task.add_done_callback(self._inspections.discard)

    async def _inspect_later(self, dom: libvirt.virDomain, vm_id: str,
                             gone_without_channel: bool = False) -> None:
        seq = self._event_seq[vm_id]
        try:
            info = await asyncio.get_running_loop().run_in_executor(None, _inspect, dom)
        except libvirt.libvirtError as err:
            log.info("domain %s went away before it could be read: %s", vm_id, err)
            return
        if self._event_seq[vm_id] != seq:
            return  # a newer event decides
        if info is not None:
            self.listener.domain_up(info)
        elif gone_without_channel:
            self.listener.domain_down(vm_id, "the vmdiag channel was removed")


def _inspect(dom: libvirt.virDomain) -> DomainInfo | None:
    """The DomainInfo of an active domain with the channel, else None (blocking call)."""
    state, _reason = dom.state()
    if state not in _ACTIVE_STATES:
        return None
    path = channel_socket(dom.XMLDesc(0))
    if path is None:
        return None
    return DomainInfo(dom.UUIDString(), dom.name(), path, _ACTIVE_STATES[state])


def _ignore_error(_ctx: Any, _err: Any) -> None:
    """libvirt's error callback; the exception raised to the caller carries the error."""


def _safe_name(dom: libvirt.virDomain) -> str:
    try:
        return str(dom.name())
    except libvirt.libvirtError:
        return "?"
