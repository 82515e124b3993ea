"""Interfaces, routes, resolver configuration and listening sockets from /sys and /proc/net."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Any, Dict, Iterable, List, Set

from ..machine import Machine
from .files import read_first_line, read_int, read_lines

COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
            "rx_dropped", "tx_dropped")
IFF_UP = 0x1
RTF_GATEWAY = 0x2
RTF_REJECT = 0x200
RTF_LOCAL = 0x80000000
TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"


def interfaces(m: Machine) -> List[Dict[str, Any]]:
    """Link facts and raw counters of every interface under /sys/class/net."""
    base = m.paths.sys("class", "net")
    out = []
    for name in sorted(os.listdir(base)):
        d = os.path.join(base, name)
        info: Dict[str, Any] = {"name": name}
        try:
            operstate = read_first_line(os.path.join(d, "operstate"))
            flags = int(read_first_line(os.path.join(d, "flags")), 16)
            # "unknown" is what lo and many virtual links report; then the admin flag decides.
            info["up"] = operstate == "up" or (operstate == "unknown" and bool(flags & IFF_UP))
        except (OSError, ValueError):
            info["up"] = None
        info["mtu"] = _maybe_int(os.path.join(d, "mtu"))
        try:
            info["mac"] = read_first_line(os.path.join(d, "address")) or None
        except OSError:
            info["mac"] = None
        speed = _maybe_int(os.path.join(d, "speed"))  # EINVAL while down; -1 on virtio
        info["speed_mbps"] = speed if speed is not None and speed > 0 else None
        for counter in COUNTERS:
            info[counter] = _maybe_int(os.path.join(d, "statistics", counter))
        out.append(info)
    return out


def _maybe_int(path: str) -> int | None:
    try:
        return read_int(path)
    except (OSError, ValueError):
        return None


def addresses(m: Machine) -> Dict[str, List[Dict[str, Any]]]:
    """IPv4/IPv6 addresses per interface (getifaddrs via psutil: IPv4 has no /proc file)."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for name, addrs in m.if_addrs().items():
        items = out.setdefault(name, [])
        for a in addrs:
            if a.family == socket.AF_INET:
                family = "inet"
            elif a.family == socket.AF_INET6:
                family = "inet6"
            else:
                continue
            address = a.address.split("%", 1)[0]  # fe80::1%eth0 -> fe80::1
            items.append({"family": family, "address": address,
                          "prefixlen": _prefixlen(a.netmask)})
    return out


def _prefixlen(netmask: str | None) -> int | None:
    """255.255.255.0 -> 24, ffff:ffff:: -> 32; None when the mask is missing or not a mask."""
    if not netmask:
        return None
    try:
        packed = ipaddress.ip_address(netmask).packed
    except ValueError:
        return None
    return bin(int.from_bytes(packed, "big")).count("1")


def routes(m: Machine) -> List[Dict[str, Any]]:
    """Main-table routes, IPv4 then IPv6, without local/multicast/reject entries."""
    out: List[Dict[str, Any]] = []
    try:
        lines = read_lines(m.paths.proc("net", "route"))[1:]
    except FileNotFoundError:
        lines = []
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        flags = int(f[3], 16)
        if flags & RTF_REJECT:
            continue
        dest = _ipv4(f[1])
        prefix = bin(int(f[7], 16)).count("1")
        out.append({"destination": "%s/%d" % (dest, prefix),
                    "gateway": _ipv4(f[2]) if flags & RTF_GATEWAY else None,
                    "interface": f[0], "metric": int(f[6])})
    try:
        lines = read_lines(m.paths.proc("net", "ipv6_route"))
    except FileNotFoundError:  # IPv6 disabled
        lines = []
    for line in lines:
        f = line.split()
        if len(f) < 10:
            continue
        flags = int(f[8], 16)
        dest6 = _ipv6(f[0])
        if flags & (RTF_REJECT | RTF_LOCAL) or dest6.is_multicast:
            continue
        out.append({"destination": "%s/%d" % (dest6, int(f[1], 16)),
                    "gateway": str(_ipv6(f[4])) if flags & RTF_GATEWAY else None,
                    "interface": f[9], "metric": int(f[5], 16)})
    return out


def _ipv4(hex_le: str) -> str:
    return socket.inet_ntoa(struct.pack("<I", int(hex_le, 16)))


def _ipv6(hex_text: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(bytes.fromhex(hex_text))


def default_gateway(route_list: Iterable[Dict[str, Any]]) -> Dict[str, Any] | None:
    """The default route with the lowest metric, IPv4 preferred (what most traffic uses)."""
    best = None
    for r in route_list:
        if r["destination"] not in ("0.0.0.0/0", "::/0") or not r["gateway"]:
            continue
        key = (":" in r["gateway"], r["metric"])
        if best is None or key < best[0]:
            best = (key, r)
    if best is None:
        return None
    return {"address": best[1]["gateway"], "interface": best[1]["interface"]}


def resolv_conf(m: Machine) -> Dict[str, List[str]]:
    nameservers: List[str] = []
    search: List[str] = []
    for line in read_lines(m.paths.etc("resolv.conf")):
        f = line.split()
        if not f or f[0].startswith(("#", ";")):
            continue
        if f[0] == "nameserver" and len(f) > 1:
            nameservers.append(f[1])
        elif f[0] in ("search", "domain"):
            search = f[1:]  # the last search/domain line wins, as in the resolver
    return {"nameservers": nameservers, "search": search}


def listening_sockets(m: Machine) -> List[Dict[str, Any]]:
    """TCP sockets in LISTEN and bound unconnected UDP sockets, with their ``inode``."""
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = read_lines(m.paths.proc("net", proto))[1:]
        except FileNotFoundError:
            continue
        wanted = TCP_LISTEN if proto.startswith("tcp") else UDP_UNCONNECTED
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != wanted:
                continue
            address, _, port = f[1].partition(":")
            out.append({"proto": proto, "address": _socket_address(address),
                        "port": int(port, 16), "inode": int(f[9])})
    return out


def _socket_address(hex_text: str) -> str:
    if len(hex_text) == 8:
        return _ipv4(hex_text)
    # IPv6 in /proc/net is four host-order 32-bit words.
    raw = b"".join(struct.pack("<I", int(hex_text[i:i + 8], 16)) for i in range(0, 32, 8))
    return str(ipaddress.IPv6Address(raw))


def socket_owners(m: Machine, inodes: Set[int]) -> Dict[int, int]:
    """inode -> pid for the given socket inodes, by reading /proc/<pid>/fd links.

    Stops as soon as every inode is found; without root, other users' fds are unreadable and
    their sockets stay without a pid.
    """
    found: Dict[int, int] = {}
    if not inodes:
        return found
    base = m.paths.proc()
    for entry in os.listdir(base):
        if not entry.isdigit():
            continue
        fd_dir = os.path.join(base, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes and inode not in found:
                    found[inode] = int(entry)
        if len(found) == len(inodes):
            break
    return found
