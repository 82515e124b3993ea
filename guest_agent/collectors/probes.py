"""Reachability probes: default gateway, DNS names, TCP targets and HTTP URLs.

All probes of a report run at once on the state's small thread pool, started before the
report's other sections are read (``submit_probes``, then ``gather`` when the network section
is built), and the report waits at most ``probe_timeout_s`` (plus a little slack) from their
start for all of them: a probe still running then is
reported as timed out and never holds the report up. Each probe also carries its own socket
timeout, so workers normally come back on time; only a resolver stuck inside getaddrinfo
(which has no timeout argument) keeps its worker, and the pool size bounds that.

Gateway: an ICMP echo is the honest test, but raw sockets need root and ICMP datagram
("ping") sockets need the group in net.ipv4.ping_group_range. The probe tries the ping
socket, then a raw socket, then falls back to a TCP connect to port 53 where a refusal
(RST) also proves the gateway answers. The ``method`` field says which one decided.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from concurrent.futures import Future, wait
from typing import Any, Callable, Dict, List, Tuple

from .options import CollectorOptions
from .state import CollectorState

Probe = Dict[str, Any]
SLACK_S = 0.25
TCP_FALLBACK_PORT = 53
_NO_ICMP = (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT)


class ProbeFailed(Exception):
    """The target did not answer as required; the message says how."""


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_socket(family: int) -> Tuple[socket.socket, bool]:
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), False
    except OSError as err:
        if err.errno not in _NO_ICMP:
            raise
    return socket.socket(family, socket.SOCK_RAW, proto), True  # PermissionError unless root


def icmp_echo(address: str, timeout: float) -> Dict[str, Any]:
    """One ICMP echo to ``address``; returns {"latency_ms"} or raises (PermissionError: no ICMP)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    request, reply = (128, 129) if family == socket.AF_INET6 else (8, 0)
    token = os.urandom(16)
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", request, 0, 0, ident, 1)
    packet = header + token
    if family == socket.AF_INET:  # the kernel computes ICMPv6 checksums itself
        packet = struct.pack("!BBHHH", request, 0, _checksum(packet), ident, 1) + token
    sock, raw = _icmp_socket(family)
    with sock:
        start = time.perf_counter()
        deadline = start + timeout
        sock.settimeout(timeout)
        sock.sendto(packet, (address, 0))
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise ProbeFailed("no ICMP echo reply within %.1fs" % timeout)
            sock.settimeout(remaining)
            try:
                data = sock.recv(2048)
            except socket.timeout:
                raise ProbeFailed("no ICMP echo reply within %.1fs" % timeout) from None
            if raw and family == socket.AF_INET:
                data = data[(data[0] & 0x0F) * 4:]  # strip the IPv4 header raw sockets include
            # Ping sockets rewrite the identifier, so match our reply by its random payload.
            if len(data) >= 8 + len(token) and data[0] == reply and data[8:8 + len(token)] == token:
                return {"latency_ms": _ms(start), "method": "icmp"}


def tcp_reach(address: str, port: int, timeout: float) -> Dict[str, Any]:
    """Reachable if the host accepts *or refuses* a TCP connection (both prove it answered)."""
    start = time.perf_counter()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        pass
    except socket.timeout:
        raise ProbeFailed("no answer to a TCP connection to port %d within %.1fs (ICMP not "
                          "permitted for this user)" % (port, timeout)) from None
    return {"latency_ms": _ms(start), "method": "tcp"}


def gateway_probe(address: str, timeout: float) -> Dict[str, Any]:
    try:
        return icmp_echo(address, timeout)
    except PermissionError:
        return tcp_reach(address, TCP_FALLBACK_PORT, timeout)


def dns_probe(name: str, timeout: float) -> Dict[str, Any]:
    """Resolve ``name`` with the system resolver (nsswitch: files, DNS, ...)."""
    start = time.perf_counter()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ProbeFailed("cannot resolve %s: %s" % (name, err.strerror or err)) from None
    addresses: List[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return {"latency_ms": _ms(start), "addresses": addresses[:8]}


def split_target(target: str) -> Tuple[str, int]:
    """``host:port`` or ``[v6addr]:port`` -> (host, port); ValueError when malformed."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("%r is not host:port" % target)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def tcp_probe(target: str, timeout: float) -> Dict[str, Any]:
    host, port = split_target(target)
    start = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.timeout:
        raise ProbeFailed("no answer within %.1fs (filtered by a firewall, or the host is "
                          "down)" % timeout) from None
    except ConnectionRefusedError:
        raise ProbeFailed("connection refused: nothing listens on %s, or a firewall "
                          "rejects it" % target) from None
    except socket.gaierror as err:
        raise ProbeFailed("cannot resolve %s: %s" % (host, err.strerror or err)) from None
    return {"latency_ms": _ms(start)}


def http_probe(url: str, timeout: float) -> Dict[str, Any]:
    """GET ``url``; any status below 500 counts as answering (4xx is the server speaking)."""
    # Imported here: urllib.request pulls in http.client, email and ssl (about 8 MiB of RSS),
    # which an agent without http_targets never needs.
    import urllib.error
    import urllib.request

    # Direct connections only: the probe measures whether this guest reaches the URL itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"User-Agent": "vmdiag-agent"})
    start = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
        err.close()
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, socket.timeout):
            raise ProbeFailed("no answer within %.1fs" % timeout) from None
        raise ProbeFailed("request failed: %s" % reason) from None
    except socket.timeout:
        raise ProbeFailed("no complete answer within %.1fs" % timeout) from None
    latency = _ms(start)
    if status >= 500:
        raise ProbeFailed("server answered HTTP %d" % status, {"status": status,
                                                              "latency_ms": latency})
    return {"latency_ms": latency, "status": status}


def _run(kind: str, target: str, fn: Callable[[str, float], Dict[str, Any]],
         timeout: float) -> Probe:
    result: Probe = {"kind": kind, "target": target, "ok": False, "latency_ms": None,
                     "error": None}
    try:
        result.update(fn(target, timeout))
        result["ok"] = True
    except ProbeFailed as err:
        result["error"] = str(err.args[0])
        if len(err.args) > 1:
            result.update(err.args[1])
    except (OSError, ValueError) as err:
        result["error"] = ("%s" % (err.strerror or err)) if isinstance(err, OSError) else str(err)
    return result


class PendingProbes:
    """Probes submitted to the pool, not yet gathered (``submit_probes`` -> ``gather``)."""

    def __init__(self, jobs: List[Tuple[str, str]], futures: List[Future], timeout: float,
                 started: float) -> None:
        self.jobs = jobs
        self.futures = futures
        self.timeout = timeout
        self.started = started


def submit_probes(options: CollectorOptions, state: CollectorState,
                  gateway: str | None) -> PendingProbes:
    """Start every configured probe on the state's pool and return at once."""
    timeout = options.probe_timeout_s
    jobs: List[Tuple[str, str, Callable[[str, float], Dict[str, Any]]]] = []
    if gateway and options.probe_gateway:
        jobs.append(("gateway", gateway, gateway_probe))
    jobs += [("dns", name, dns_probe) for name in options.dns_names]
    jobs += [("tcp", target, tcp_probe) for target in options.tcp_targets]
    jobs += [("http", url, http_probe) for url in options.http_targets]
    jobs = jobs[:64]  # protocol cap
    futures: List[Future] = [state.executor.submit(_run, kind, target, fn, timeout)
                             for kind, target, fn in jobs]
    return PendingProbes([(kind, target) for kind, target, _ in jobs], futures, timeout,
                         time.monotonic())


def gather(pending: PendingProbes) -> List[Probe]:
    """The results of ``pending``: waits until the probe timeout (+slack) counted from their
    start; a probe still running then is reported as timed out."""
    if not pending.futures:
        return []
    left = pending.started + pending.timeout + SLACK_S - time.monotonic()
    wait(pending.futures, timeout=max(0.0, left))
    out = []
    for (kind, target), future in zip(pending.jobs, pending.futures):
        if future.done():
            out.append(future.result())
        else:
            future.cancel()  # still queued behind stuck workers: drop it
            out.append({"kind": kind, "target": target, "ok": False, "latency_ms": None,
                        "error": "no answer within %.1fs" % pending.timeout})
    return out


def run_probes(options: CollectorOptions, state: CollectorState,
               gateway: str | None) -> List[Probe]:
    """Run every configured probe concurrently; never wait past the probe timeout (+slack)."""
    return gather(submit_probes(options, state, gateway))
