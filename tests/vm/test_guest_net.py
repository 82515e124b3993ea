"""The lab's resolver and time source for guests answer as a guest's resolver and timesyncd need."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

from lab.vm import guest_net, image


def _client_packet(transmit: bytes) -> bytes:
    return bytes([(0 << 6) | (4 << 3) | 3, 0, 6, 0]) + bytes(36) + transmit


def test_the_ntp_server_answers_a_client_with_its_own_transmit_time_echoed() -> None:
    server = guest_net.SntpServer(("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    transmit = bytes(range(1, 9))
    client.sendto(_client_packet(transmit), server.address)
    answer, _ = client.recvfrom(512)
    assert len(answer) == 48
    assert answer[0] & 0x7 == 4 and (answer[0] >> 3) & 0x7 == 4 and answer[0] >> 6 == 0
    assert answer[1] == 2  # stratum: a client refuses 0 and 16
    assert answer[24:32] == transmit  # originate = the client's transmit
    seconds, _ = struct.unpack("!II", answer[40:48])
    assert abs(seconds - guest_net.NTP_EPOCH_OFFSET - time.time()) < 5


def test_anything_but_a_client_request_gets_no_answer() -> None:
    assert guest_net.sntp_answer(b"\x1c" + bytes(47), 0.0, 0.0) is None  # mode 4: a server
    assert guest_net.sntp_answer(b"garbage", 0.0, 0.0) is None


def _query(name: str) -> bytes:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)


def test_the_lab_resolver_answers_its_zone_for_guests() -> None:
    guest_net.ensure_guest_services(os.path.join(image.cache_dir(), "lab-net"))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.sendto(_query(guest_net.PROBED_NAME), (guest_net.LISTEN, guest_net.DNS_PORT))
    answer, _ = client.recvfrom(512)
    ident, flags, _, answers = struct.unpack("!HHHH", answer[:8])
    assert ident == 0x1234 and flags & 0xF == 0 and answers == 1
    assert answer.endswith(socket.inet_aton(guest_net.HOST_FROM_GUEST))
    files = guest_net.guest_files()
    assert "nameserver %s" % guest_net.HOST_FROM_GUEST in files["etc/resolv.conf"]
