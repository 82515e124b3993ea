"""A resolver and a time source that the lab's guests reach, so a healthy guest is healthy for real.

The guests use QEMU's user-mode network, where ``10.0.2.2`` is the host's loopback. On the host
this module keeps two small servers on ``127.0.0.1``, for every guest of this machine:

- DNS on port 53: dnsmasq (Debian's ``dnsmasq-base``, no service of its own) answering the lab's
  zone ``vmdiag.lab`` from its command line and nothing else (``--no-resolv``): the guest's
  ``/etc/resolv.conf`` names ``10.0.2.2`` and its agent probes ``host.vmdiag.lab``;
- NTP on port 123: :class:`SntpServer`, an RFC 4330 server answering from the host's clock,
  which the guest's systemd-timesyncd synchronises against (``NTP=10.0.2.2``) every 16 s, its
  shortest poll: an emulated (TCG) guest's clock drifts by hundreds of ms between timesyncd's
  default polls, which the agent rightly reports as a clock offset (at 32 s, on a host whose
  two cores also ran the test suite, 820 ms: over the 500 ms warning, so the demo's healthy
  guest was not healthy).

Both are started detached, like ``libvirtd -d``, and found again by their ports: a second test
run, the demo and the benchmarks share them. Their logs are in
``<image cache>/lab-net/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from typing import Dict, Tuple

from .progress import log, step

#: The host as a user-mode-network guest sees it.
HOST_FROM_GUEST = "10.0.2.2"
ZONE = "vmdiag.lab"
#: Names the lab's DNS answers; the guest's agent probes the first.
HOSTS: Dict[str, str] = {"host." + ZONE: HOST_FROM_GUEST}
PROBED_NAME = "host." + ZONE
LISTEN = "127.0.0.1"
DNS_PORT, NTP_PORT = 53, 123
#: Seconds between 1900-01-01 (NTP's era) and 1970-01-01 (Unix time).
NTP_EPOCH_OFFSET = 2208988800


def guest_files() -> Dict[str, str]:
    """Files of the guest image (relative paths) that point it at these servers."""
    return {
        "etc/resolv.conf": "# the lab's resolver on the host (lab/vm/guest_net.py)\n"
                           "nameserver %s\n" % HOST_FROM_GUEST,
        "etc/systemd/timesyncd.conf.d/vmdiag-lab.conf": (
            "# the lab's time source on the host (lab/vm/guest_net.py)\n"
            "[Time]\nNTP=%s\nFallbackNTP=\nPollIntervalMinSec=16\nPollIntervalMaxSec=16\n"
            % HOST_FROM_GUEST),
    }


def _to_ntp(t: float) -> bytes:
    seconds = int(t) + NTP_EPOCH_OFFSET
    fraction = int((t - int(t)) * 2**32) & 0xFFFFFFFF
    return struct.pack("!II", seconds & 0xFFFFFFFF, fraction)


def sntp_answer(request: bytes, received: float, now: float) -> bytes | None:
    """The server's answer to a client's NTP packet, or None for anything else.

    Stratum 2 with a tiny root distance, so a client takes it; the client's transmit time is
    echoed as the originate time, as clients check.
    """
    if len(request) < 48:
        return None
    first = request[0]
    version, mode = (first >> 3) & 0x7, first & 0x7
    if mode != 3 or not 1 <= version <= 4:
        return None
    poll = request[2]
    header = struct.pack("!BBbb", (0 << 6) | (version << 3) | 4, 2, poll, -20)
    root = struct.pack("!II", 0, 16)  # root delay 0, root dispersion 16/65536 s
    ref_id = socket.inet_aton(LISTEN)
    return (header + root + ref_id + _to_ntp(now - 1.0) + request[40:48] + _to_ntp(received)
            + _to_ntp(time.time()))


class SntpServer:
    """A blocking UDP NTP server from the host's clock (one thread is plenty)."""

    def __init__(self, address: Tuple[str, int] = (LISTEN, NTP_PORT)) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.address = self.sock.getsockname()

    def serve_forever(self) -> None:
        while True:
            data, peer = self.sock.recvfrom(512)
            received = time.time()
            answer = sntp_answer(data, received, received)
            if answer is not None:
                self.sock.sendto(answer, peer)


def _port_taken(port: int, kind: int) -> bool:
    probe = socket.socket(socket.AF_INET, kind)
    try:
        probe.bind((LISTEN, port))
        return False
    except OSError:
        return True
    finally:
        probe.close()


def _detached(cmd: list, log_path: str) -> None:
    with open(log_path, "ab") as out:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                         start_new_session=True, close_fds=True)


def ensure_guest_services(state_dir: str) -> None:
    """Start the lab's DNS and NTP servers on the host unless their ports are already taken.

    A taken port is assumed to be ours from an earlier run (or the machine's own server, which
    serves as well for NTP; for DNS the guest's probe of ``host.vmdiag.lab`` then says more).
    """
    os.makedirs(state_dir, exist_ok=True)
    if not _port_taken(DNS_PORT, socket.SOCK_DGRAM):
        dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.path.exists(dnsmasq):
            raise RuntimeError("dnsmasq is not installed: apt-get install dnsmasq-base "
                               "(scripts/setup-deps does)")
        with step("start the lab's DNS for guests (dnsmasq on %s:%d)" % (LISTEN, DNS_PORT)):
            _detached([dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                       "--no-hosts", "--listen-address=" + LISTEN,
                       "--bind-interfaces", "--port=%d" % DNS_PORT, "--local=/%s/" % ZONE,
                       "--pid-file=" + os.path.join(state_dir, "dnsmasq.pid"),
                       "--log-facility=-"]
                      + ["--host-record=%s,%s" % item for item in sorted(HOSTS.items())],
                      os.path.join(state_dir, "dnsmasq.log"))
    if not _port_taken(NTP_PORT, socket.SOCK_DGRAM):
        with step("start the lab's NTP server for guests on %s:%d" % (LISTEN, NTP_PORT)):
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            _detached([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                       "from lab.vm.guest_net import SntpServer; SntpServer().serve_forever()"
                       % root], os.path.join(state_dir, "sntp.log"))
    deadline = time.monotonic() + 10
    while not (_port_taken(DNS_PORT, socket.SOCK_DGRAM) and _port_taken(NTP_PORT,
                                                                       socket.SOCK_DGRAM)):
        if time.monotonic() > deadline:
            raise RuntimeError("the lab's DNS or NTP server did not come up; see %s"
                               % state_dir)
        time.sleep(0.1)
    log("guests resolve %s and take the time from %s" % (PROBED_NAME, HOST_FROM_GUEST))
