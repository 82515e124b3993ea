"""qemu-guest-agent commands through libvirt: an independent view of the guest.

The VM tests compare what vmdiag's agent reports with what QEMU's own guest agent says about
the same guest (hostname, addresses, file systems), and the benchmark measures both. Calls go
through ``libvirt_qemu.qemuAgentCommand``, the API behind ``virsh qemu-agent-command``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import libvirt
import libvirt_qemu


class AgentNotReady(RuntimeError):
    """qemu-guest-agent did not answer in time: is it running in the guest?"""


def command(domain: libvirt.virDomain, execute: str, arguments: dict | None = None,
            timeout: int = 30) -> Any:
    """Run one qga command and return its ``return`` value."""
    request: dict = {"execute": execute}
    if arguments:
        request["arguments"] = arguments
    answer = libvirt_qemu.qemuAgentCommand(domain, json.dumps(request), timeout, 0)
    return json.loads(answer)["return"]


def wait_ready(domain: libvirt.virDomain, timeout: float = 120.0) -> float:
    """Wait until qga answers ``guest-ping``; return the seconds waited."""
    began = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - began < timeout:
        try:
            command(domain, "guest-ping", timeout=5)
            return time.monotonic() - began
        except libvirt.libvirtError as err:
            last = err
            time.sleep(1)
    raise AgentNotReady("qemu-guest-agent did not answer guest-ping within %.0fs: %s"
                        % (timeout, last))


def read_file(domain: libvirt.virDomain, path: str, limit: int = 1 << 16) -> bytes:
    """Read a guest file (e.g. under /proc or /sys) without starting a guest process."""
    handle = command(domain, "guest-file-open", {"path": path, "mode": "r"})
    try:
        data = b""
        while True:
            chunk = command(domain, "guest-file-read", {"handle": handle, "count": 4096})
            data += base64.b64decode(chunk.get("buf-b64", ""))
            if chunk.get("eof") or not chunk.get("count") or len(data) >= limit:
                return data
    finally:
        command(domain, "guest-file-close", {"handle": handle})


def ipv4_addresses(domain: libvirt.virDomain) -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses as "a.b.c.d/prefix", as qga sees them."""
    out: dict[str, list[str]] = {}
    for iface in command(domain, "guest-network-get-interfaces"):
        out[iface["name"]] = ["%s/%s" % (a["ip-address"], a["prefix"])
                              for a in iface.get("ip-addresses", [])
                              if a.get("ip-address-type") == "ipv4"]
    return out


def run(domain: libvirt.virDomain, argv: list[str], timeout: float = 60.0) -> tuple[int, str]:
    """Run a command in the guest (``guest-exec``); return its exit code and its output."""
    pid = command(domain, "guest-exec", {"path": argv[0], "arg": list(argv[1:]),
                                         "capture-output": True})["pid"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = command(domain, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            out = base64.b64decode(status.get("out-data", "")) + base64.b64decode(
                status.get("err-data", ""))
            return int(status.get("exitcode", -1)), out.decode("utf-8", "replace")
        time.sleep(0.2)
    raise TimeoutError("%s did not finish in the guest within %.0fs" % (" ".join(argv), timeout))
