"""The relay daemon: libvirt discovery -> one session per VM -> cache (+ uploader), and control.

``RelayDaemon`` is the DiscoveryListener: it opens a ``VMSession`` when a domain with the
vmdiag channel runs, closes it when the domain stops or migrates away (or when the
after_vm_destroy hook says so, which is quicker than the event on a busy host), and reconciles
after every libvirt (re)connection. Each session's reports go to the cache and, when
``[upload] enabled`` is on, to the ``Uploader``; without it the relay runs standalone and
``vmdiag-relay status|show`` is how people read it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Set

import libvirt

from diag_protocol import ALLOWED_METHODS

from .cache import ReportCache, VMEntry
from .control import ControlError, ControlServer
from .discovery import Discovery, DomainInfo
from .session import RequestError, Runstate, SessionConfig, VMSession

log = logging.getLogger("vmdiag.relay")

_PAUSED = ("paused", "pmsuspended")


@dataclass
class DaemonSettings:
    """What the daemon needs from relay.conf (``from_config``) or from a test."""

    host_id: str
    libvirt_uri: str = "qemu:///system"
    control_socket: str = "/run/vmdiag/relay.sock"
    control_mode: int = 0o660
    control_group: str | None = None
    silence_timeout: float = 180.0
    reconnect_max_backoff: float = 30.0
    max_vms: int = 5000
    #: Per-VM report rate limit (0: none) and its burst, from [relay].
    min_report_interval: float = 0.0
    report_burst: int = 10
    libvirt_readonly: bool = True
    #: Every so often, VMs whose channel cannot be opened are looked up in libvirt again.
    recheck_interval: float = 30.0

    @classmethod
    def from_config(cls, cfg: Any) -> DaemonSettings:
        """From ``vdsm_hooks.config.load_config()``'s ``RelayConfig``."""
        relay = cfg.relay
        return cls(host_id=relay.host_id, libvirt_uri=relay.libvirt_uri,
                   control_socket=relay.control_socket,
                   control_group=relay.control_group or None,
                   silence_timeout=relay.silence_timeout,
                   reconnect_max_backoff=relay.reconnect_max_backoff,
                   max_vms=relay.max_vms, min_report_interval=relay.min_report_interval,
                   report_burst=relay.report_burst)

    def session_config(self) -> SessionConfig:
        return SessionConfig(silence_timeout=self.silence_timeout,
                             reconnect_max_backoff=self.reconnect_max_backoff,
                             min_report_interval=self.min_report_interval,
                             report_burst=self.report_burst)


class RelayDaemon:
    """Owns the cache, the sessions, discovery, the control server and the uploader."""

    def __init__(self, settings: DaemonSettings, *, uploader: Any = None,
                 session_config: SessionConfig | None = None,
                 accept: Callable[[DomainInfo], bool] | None = None) -> None:
        """``accept`` limits which VMs are followed (default: all with the channel); tests
        on a shared libvirtd use it to leave other people's VMs alone."""
        self.settings = settings
        self.accept = accept
        self.uploader = uploader
        self.session_config = session_config or settings.session_config()
        self.cache = ReportCache()
        self.sessions: Dict[str, VMSession] = {}
        self.discovery = Discovery(settings.libvirt_uri, self,
                                   readonly=settings.libvirt_readonly,
                                   max_backoff=settings.reconnect_max_backoff)
        self.control = ControlServer(settings.control_socket, self.handle,
                                     mode=settings.control_mode, group=settings.control_group)
        self.started_at = time.time()
        self.refused_vms = 0
        self._closing: Set[asyncio.Task[None]] = set()
        self._upload_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._recheck_task: asyncio.Task[None] | None = None

    # -- lifetime --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.control.start()
        if self.uploader is not None:
            self._upload_task = asyncio.get_running_loop().create_task(
                self.uploader.run(), name="vmdiag-upload")
        self.discovery.start()
        self._recheck_task = asyncio.get_running_loop().create_task(
            self._recheck_loop(), name="vmdiag-recheck")
        log.info("vmdiag-relay started: host %s, libvirt %s, upload %s", self.settings.host_id,
                 self.settings.libvirt_uri, "on" if self.uploader is not None else "off")

    async def stop(self) -> None:
        if self._recheck_task is not None:
            self._recheck_task.cancel()
            await asyncio.gather(self._recheck_task, return_exceptions=True)
        await self.control.close()
        await self.discovery.close()
        await asyncio.gather(*(s.close() for s in list(self.sessions.values())),
                             *self._closing, return_exceptions=True)
        self.sessions.clear()
        if self.uploader is not None:
            await self.uploader.close()
        if self._upload_task is not None:
            await asyncio.gather(self._upload_task, return_exceptions=True)
        log.info("vmdiag-relay stopped")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or ``request_stop()``), stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

    # -- DiscoveryListener -----------------------------------------------------------------

    def domain_up(self, info: DomainInfo) -> None:
        if self.accept is not None and not self.accept(info):
            return
        session = self.sessions.get(info.vm_id)
        if session is not None and session.socket_path == info.socket_path:
            session.entry.name = info.name
            self._set_vm_state(session.entry, info.state)
            return
        if session is not None:  # a new socket path: start over with it
            self._close_session(info.vm_id, "channel moved to %s" % info.socket_path)
        if len(self.sessions) >= self.settings.max_vms:
            self.refused_vms += 1
            log.error("not following VM %s (%s): already at [relay] max_vms = %d; raise it",
                      info.name, info.vm_id, self.settings.max_vms)
            return
        # the session hands each accepted report straight to the uploader, which wraps it
        session = VMSession(info.vm_id, info.socket_path, self.cache, name=info.name,
                            config=self.session_config,
                            on_report=self.uploader.submit_report if self.uploader else None)
        self._set_vm_state(session.entry, info.state)
        self.sessions[info.vm_id] = session
        session.start()
        log.info("following VM %s (%s) at %s", info.name, info.vm_id, info.socket_path)

    def domain_down(self, vm_id: str, reason: str) -> None:
        if vm_id in self.sessions:
            self._close_session(vm_id, reason)

    def domain_state(self, vm_id: str, state: str) -> None:
        session = self.sessions.get(vm_id)
        if session is None:
            return
        if state == "rebooted":
            session.log.info("guest rebooted")
            return
        self._set_vm_state(session.entry, state)

    def domains_listed(self, domains: List[DomainInfo], complete: bool) -> None:
        for info in domains:
            self.domain_up(info)
        if not complete:
            return
        running = {info.vm_id for info in domains
                   if self.accept is None or self.accept(info)}
        for vm_id in [vm for vm in self.sessions if vm not in running]:
            self._close_session(vm_id, "not running any more")

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.recheck_interval)
            try:
                await self.recheck()
            except Exception:  # noqa: BLE001 - the loop must outlive any bug
                log.exception("rechecking unreachable VMs failed")

    async def recheck(self) -> None:
        """Close sessions of VMs that libvirt says are gone, among those whose channel
        cannot be opened (libvirt sends no event for a VM that died while libvirtd was down)."""
        stuck = [s for s in list(self.sessions.values())
                 if s.state in (Runstate.BACKOFF, Runstate.CONNECTING)]
        for session in stuck:
            try:
                info = await self.discovery.check(session.vm_id)
            except libvirt.libvirtError:
                return  # libvirt cannot tell right now; the next listing will
            if self.sessions.get(session.vm_id) is not session:
                continue
            if info is None:
                self._close_session(session.vm_id, "libvirt says it is not running")
            else:
                self.domain_up(info)

    def _set_vm_state(self, entry: VMEntry, state: str) -> None:
        entry.vm_state = state
        session = self.sessions.get(entry.vm_id)
        if session is not None:
            session.paused = state in _PAUSED

    def _close_session(self, vm_id: str, reason: str) -> None:
        session = self.sessions.pop(vm_id, None)
        if session is None:
            return
        session.log.info("stop following: %s", reason)
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        # the engine keeps the history; the relay forgets a VM that is not here any more
        if self.cache.get(vm_id) is session.entry:
            self.cache.remove(vm_id)

    # -- control ---------------------------------------------------------------------------

    async def handle(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """Answer one control request (see ``control``); raise ControlError to refuse it."""
        cmd = request.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "show":
            return {"vm": self._find(request.get("vm")).detail()}
        if cmd == "vm_destroyed":
            vm_id = str(request.get("vm_id") or "").lower()[:64]
            known = vm_id in self.sessions
            log.info("after_vm_destroy hook: VM %s destroyed (%s)", vm_id,
                     "closing its session" if known else "not followed here")
            self.domain_down(vm_id, "destroyed (after_vm_destroy hook)")
            return {"closed": known}
        if cmd == "request":
            return await self._request(request)
        raise ControlError("unknown command %r; use status, show, request or vm_destroyed"
                           % (str(cmd)[:40],))

    def status(self) -> Dict[str, Any]:
        now = time.time()
        disc = self.discovery
        return {
            "host_id": self.settings.host_id,
            "pid": os.getpid(),
            "uptime_s": now - self.started_at,
            "libvirt": {"uri": disc.uri, "connected": disc.connected,
                        "generation": disc.generation, "last_error": disc.last_error,
                        "events": dict(disc.events)},
            "refused_vms": self.refused_vms,
            "upload": self.uploader.stats() if self.uploader is not None else None,
            "vms": sorted((e.status_row(now) for e in self.cache),
                          key=lambda r: (r["name"] or "", r["vm_id"])),
        }

    def _find(self, key: Any) -> VMEntry:
        if not isinstance(key, str) or not key:
            raise ControlError('say which VM: {"vm": "<uuid or name>"}')
        entry = self.cache.find(key)
        if entry is None:
            raise ControlError("no VM %r on this host with the vmdiag channel; "
                               "'vmdiag-relay status' lists them" % key[:80])
        return entry

    async def _request(self, request: Dict[str, Any]) -> Dict[str, Any]:
        method = request.get("method")
        if method not in ALLOWED_METHODS:
            raise ControlError("method must be one of %s" % ", ".join(ALLOWED_METHODS))
        entry = self._find(request.get("vm"))
        session = self.sessions.get(entry.vm_id)
        if session is None:
            raise ControlError("VM %s is not being followed right now" % entry.vm_id)
        params = request.get("params") or {}
        timeout = request.get("timeout")
        if not isinstance(params, dict) or not isinstance(timeout, (int, float, type(None))):
            raise ControlError('"params" must be an object and "timeout" a number')
        try:
            result = await session.request(method, params, timeout=timeout)
        except RequestError as err:
            raise ControlError(str(err)) from err
        return {"vm_id": entry.vm_id, "result": result}
