"""The ``network`` section: interfaces with rates, routes, DNS config, probes, listening sockets.

Units: ``rx_bps``/``tx_bps`` are bits per second (as link speeds are quoted);
``error_rate``/``drop_rate`` are errors (drops) per packet, rx and tx together, over the time
since the previous report (0.0 to 1.0; None when no packet moved or on the first report).
Listening sockets are read on the slow cadence (``listening_interval_s``), reusing the last
list in between, because mapping sockets to processes walks every process's fd table; the
lean first report of a start (``CollectorState.lean``) leaves them out. Probes are started
before the other sections of a report are read (``start_probes``) and gathered here.
"""

from __future__ import annotations

from typing import Any, Dict, List

from .. import platform
from .errors import FieldErrors
from .options import CollectorOptions
from .probes import gather, submit_probes
from .state import CollectorState

LIMITS = {"interfaces": 256, "addresses": 64, "routes": 1024, "listening": 1024, "dns": 32}


def collect(options: CollectorOptions, state: CollectorState, errors: FieldErrors
            ) -> Dict[str, Any]:
    m = options.machine
    data: Dict[str, Any] = {}
    with errors.field("interfaces"):
        data["interfaces"] = _interfaces(options, state, errors)
    with errors.field("routes"):
        routes = platform.routes(m)
        data["routes"] = routes[:LIMITS["routes"]]
        data["default_gateway"] = platform.default_gateway(routes)
    with errors.field("dns"):
        dns = platform.resolv_conf(m)
        data["dns"] = {k: v[:LIMITS["dns"]] for k, v in dns.items()}
    pending, state.pending_probes = state.pending_probes, None
    if pending is None:
        gateway = (data.get("default_gateway") or {}).get("address")
        pending = submit_probes(options, state, gateway)
    if not state.lean:  # a start's first report leaves the socket-to-process walk out
        with errors.field("listening"):
            data["listening"] = _listening(options, state)
    data["probes"] = gather(pending)
    return data


def start_probes(options: CollectorOptions, state: CollectorState) -> None:
    """Start this report's probes now (they run while the other sections are read); the
    network section gathers them. The gateway is read here for that (one small /proc read)."""
    try:
        gateway = (platform.default_gateway(platform.routes(options.machine)) or {}).get(
            "address")
    except (OSError, ValueError, platform.PlatformError):
        gateway = None  # the network section says why it cannot read the routes
    state.pending_probes = submit_probes(options, state, gateway)


def _interfaces(options: CollectorOptions, state: CollectorState, errors: FieldErrors
                ) -> List[Dict[str, Any]]:
    m = options.machine
    links = platform.interfaces(m)[:LIMITS["interfaces"]]
    addresses: Dict[str, List[Dict[str, Any]]] = {}
    with errors.field("interfaces.addresses"):
        addresses = platform.addresses(m)
    counters = {link["name"]: link for link in links}
    previous = state.swap("network.counters", counters)
    for link in links:
        link["addresses"] = addresses.get(link["name"], [])[:LIMITS["addresses"]]
        link.update(_rates(link, previous))
    return links


def _delta(now: Dict[str, Any], before: Dict[str, Any], key: str) -> int | None:
    a, b = now.get(key), before.get(key)
    if a is None or b is None or a < b:  # counter missing or reset (driver reload)
        return None
    return a - b


def _rates(link: Dict[str, Any], previous: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"rx_bps": None, "tx_bps": None, "error_rate": None, "drop_rate": None}
    if previous is None:
        return out
    elapsed, counters = previous
    before = counters.get(link["name"])
    if before is None:
        return out
    d = {key: _delta(link, before, key) for key in (
        "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
        "rx_dropped", "tx_dropped")}
    for direction in ("rx", "tx"):
        moved = d[direction + "_bytes"]
        if moved is not None:
            out[direction + "_bps"] = round(moved * 8 / elapsed, 3)
    packets = _sum(d["rx_packets"], d["tx_packets"])
    if packets:
        errors = _sum(d["rx_errors"], d["tx_errors"])
        drops = _sum(d["rx_dropped"], d["tx_dropped"])
        out["error_rate"] = None if errors is None else round(errors / packets, 6)
        out["drop_rate"] = None if drops is None else round(drops / packets, 6)
    return out


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _listening(options: CollectorOptions, state: CollectorState) -> List[Dict[str, Any]]:
    if not state.due("listening", options.listening_interval_s):
        return state.recall("listening")
    m = options.machine
    sockets = platform.listening_sockets(m)[:LIMITS["listening"]]
    owners = platform.socket_owners(m, {s["inode"] for s in sockets if s["inode"]})
    names: Dict[int, str | None] = {}
    out = []
    for s in sockets:
        pid = owners.get(s.pop("inode"))
        if pid is not None and pid not in names:
            try:
                names[pid] = platform.process_name(m, pid)
            except OSError:
                names[pid] = None
        s["pid"] = pid
        s["process"] = names.get(pid) if pid is not None else None
        out.append(s)
    out.sort(key=lambda s: (s["proto"], s["port"], s["address"]))
    state.remember("listening", out)
    return out
