"""The ``settings`` section: identity, OS, kernel, time zone and sync, security, sysctls,
logged-in users and whether a reboot is pending.

The time sync state is read every ``timesync_interval_s`` (helper commands, a slow-moving
state; over D-Bus, timedated started on demand); the lean first report of an agent start
leaves it out, and the FQDN lookup in DNS. The FQDN comes from /etc/hosts when it names one;
otherwise from a canonical-name lookup run on the probe pool with the probe timeout (a broken
resolver must not stall the report) and cached for ``listening_interval_s``.
"""

from __future__ import annotations

import socket
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Dict

from .. import platform
from .errors import FieldErrors
from .options import CollectorOptions
from .state import CollectorState

LIMITS = {"sysctls": 256, "users": 256}


def collect(options: CollectorOptions, state: CollectorState, errors: FieldErrors
            ) -> Dict[str, Any]:
    m = options.machine
    data: Dict[str, Any] = {}
    with errors.field("hostname"):
        data["hostname"] = platform.hostname(m)
        with errors.field("fqdn"):
            found = fqdn(options, state, data["hostname"])
            if found is not None or not state.lean:  # lean: not looked up in DNS yet
                data["fqdn"] = found
    with errors.field("os"):
        info = platform.os_release(m)
        data["os"] = {k: info.get(k) for k in ("name", "version", "id", "pretty")}
    with errors.field("kernel"):
        data["kernel"] = platform.kernel_release(m)
    with errors.field("arch"):
        data["arch"] = platform.arch(m)
    with errors.field("timezone"):
        data["timezone"] = platform.timezone(m)
    if not state.lean or not state.due("time_sync", options.timesync_interval_s):
        with errors.field("time_sync"):
            data["time_sync"] = time_sync(options, state)
    with errors.field("security"):
        data["security"] = platform.security_modules(m)
    sysctls: Dict[str, str] = {}
    for name in list(dict.fromkeys(options.sysctls))[:LIMITS["sysctls"]]:
        with errors.field("sysctls." + name):
            sysctls[name] = platform.sysctl(m, name)[:1024]
    data["sysctls"] = sysctls
    if not state.lean:  # lean: the logged-in users (psutil, utmp) say nothing about health
        with errors.field("users"):
            data["users"] = platform.logged_in_users(m)[:LIMITS["users"]]
    with errors.field("reboot_required"):
        data["reboot_required"], data["reboot_reason"] = platform.reboot_required(m)
    return data


def time_sync(options: CollectorOptions, state: CollectorState) -> Dict[str, Any]:
    """The clock's sync state, read every ``timesync_interval_s`` and reused in between; a
    failed read is not remembered, so the next report tries again."""
    if not state.due("time_sync", options.timesync_interval_s):
        cached: Dict[str, Any] = state.recall("time_sync")
        return cached
    value = platform.time_sync(options.machine)
    state.remember("time_sync", value)
    return value


def fqdn(options: CollectorOptions, state: CollectorState, hostname: str) -> str | None:
    found = platform.fqdn_from_hosts(options.machine, hostname)
    if found or not options.resolve_fqdn or not options.machine.paths.is_live or state.lean:
        return found
    if not state.due("fqdn", options.listening_interval_s):
        return state.recall("fqdn")
    state.remember("fqdn", None)
    future = state.executor.submit(_canonical_name, hostname)
    try:
        name = future.result(timeout=options.probe_timeout_s)
    except FutureTimeout:
        raise platform.PlatformError("looking up the FQDN of %s took over %.1fs; check the "
                                     "resolvers in /etc/resolv.conf" % (
                                         hostname, options.probe_timeout_s)) from None
    state.remember("fqdn", name)
    return name


def _canonical_name(hostname: str) -> str | None:
    # getaddrinfo encodes a str host with the idna codec, which loads encodings.idna, stringprep
    # and unicodedata (about 0.3 MiB for the agent's lifetime); an ASCII name needs none of it.
    host: str | bytes = hostname.encode("ascii") if hostname.isascii() else hostname
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)
    except socket.gaierror:
        return None  # the name is not in DNS: there is no FQDN to report
    for info in infos:
        if "." in info[3]:
            return info[3]
    return None
