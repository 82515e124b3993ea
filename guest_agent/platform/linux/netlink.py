"""Interface addresses from the kernel over rtnetlink (``RTM_GETADDR``), as getifaddrs(3) does.

psutil's ``net_if_addrs()`` gives the same, but importing psutil defines some thirty named
tuples, which under emulation is most of a second of the agent's start; the lean first report
needs only the addresses. One request, one dump, stdlib only. Records take psutil's shape
(``family``, ``address``, ``netmask``) so ``net.addresses`` reads either.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Dict, List, NamedTuple

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type
#: A dump larger than this is cut (about 300 addresses per read; reads repeat until done).
_RECV = 65536
_MAX_READS = 1024


class IfAddr(NamedTuple):
    family: int
    address: str
    netmask: str


def _align(n: int) -> int:
    return (n + 3) & ~3


def _netmask(family: int, prefixlen: int) -> str:
    bits = 32 if family == socket.AF_INET else 128
    prefixlen = min(prefixlen, bits)
    mask = ((1 << prefixlen) - 1) << (bits - prefixlen)
    return str(ipaddress.IPv4Address(mask) if bits == 32 else ipaddress.IPv6Address(mask))


def parse_addr(payload: bytes) -> tuple | None:
    """One ``RTM_NEWADDR`` payload -> (interface index, IfAddr), None for other families."""
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs: Dict[int, bytes] = {}
    pos = _align(_IFADDRMSG.size)
    while pos + _RTATTR.size <= len(payload):
        length, kind = _RTATTR.unpack_from(payload, pos)
        if length < _RTATTR.size:
            break
        attrs[kind] = payload[pos + _RTATTR.size:pos + length]
        pos += _align(length)
    # IFA_LOCAL is the interface's own address where it differs (point-to-point links)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or len(raw) != (4 if family == socket.AF_INET else 16):
        return None
    return index, IfAddr(family, socket.inet_ntop(family, raw), _netmask(family, prefixlen))


def if_addrs() -> Dict[str, List[IfAddr]]:
    """Interface name -> its IPv4 and IPv6 addresses; OSError when netlink is not there."""
    out: Dict[str, List[IfAddr]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETADDR,
                                 NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        names: Dict[int, str] = dict(socket.if_nameindex())  # one call, not one per index
        for _ in range(_MAX_READS):
            data = sock.recv(_RECV)
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
                if length < _NLMSGHDR.size:
                    raise OSError("netlink: a message of %d bytes" % length)
                payload = data[pos + _NLMSGHDR.size:pos + length]
                pos += _align(length)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    raise OSError(code, "netlink RTM_GETADDR refused")
                if kind != RTM_NEWADDR or len(payload) < _IFADDRMSG.size:
                    continue
                found = parse_addr(payload)
                if found is None:
                    continue
                index, addr = found
                if index not in names:
                    try:
                        names[index] = socket.if_indextoname(index)
                    except OSError:  # the interface went away meanwhile
                        names[index] = ""
                if names[index]:
                    out.setdefault(names[index], []).append(addr)
    raise OSError("netlink: the address dump did not end")


__all__ = ["IfAddr", "if_addrs", "parse_addr"]
