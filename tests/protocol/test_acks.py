"""The acknowledgement rule's bookkeeping (diag_protocol.acks), shared by the agent's channel
and the lab's simulated guests."""

from __future__ import annotations

import pytest

from diag_protocol import (
    ACK_CAPABILITY,
    ProtocolError,
    Unacked,
    decode_line,
    encode,
    make_ack,
    make_hello,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_acknowledged_reports_are_forgotten_the_rest_handed_back_oldest_first() -> None:
    kept = Unacked()
    for seq in range(5):
        kept.written(("run", seq), b"report %d\n" % seq)
    assert kept.ack("run", 1) and kept.ack("run", 3)
    assert not kept.ack("run", 3)  # twice
    assert not kept.ack("other-run", 0)  # not ours
    assert kept.counts["unknown_ack"] == 2
    assert [key for key, _ in kept.take()] == [("run", 0), ("run", 2), ("run", 4)]
    assert len(kept) == 0 and kept.size_bytes == 0 and kept.counts["resent"] == 3


def test_bounded_by_count_and_bytes_oldest_forgotten_first() -> None:
    kept = Unacked(max_messages=3, max_bytes=1000)
    for seq in range(6):
        kept.written(("run", seq), b"x" * 99 + b"\n")
    assert [key[1] for key, _ in kept.take()] == [3, 4, 5]
    for seq in range(3):
        kept.written(("run", seq), b"y" * 499 + b"\n")
    assert len(kept) == 2 and kept.size_bytes == 1000
    assert kept.counts["forgotten_full"] == 4


def test_a_report_written_again_counts_once() -> None:
    kept = Unacked()
    kept.written(("run", 1), b"a\n")
    kept.written(("run", 1), b"a\n")
    assert len(kept) == 1 and kept.size_bytes == 2


def test_unacknowledged_reports_expire_so_an_old_relay_costs_nothing() -> None:
    clock = Clock()
    kept = Unacked(timeout=120, clock=clock)
    kept.written(("run", 0), b"a\n")
    clock.now += 60
    kept.written(("run", 1), b"b\n")
    assert kept.expire() == 0
    clock.now += 60
    assert kept.expire() == 1
    assert [key for key, _ in kept.take()] == [("run", 1)]
    assert kept.counts["forgotten_timeout"] == 1


def test_the_ack_message_on_the_wire() -> None:
    line = encode(make_ack("run-1", 7))
    assert decode_line(line.rstrip(b"\n")) == {"type": "ack", "v": 1, "run_id": "run-1",
                                               "seq": 7}
    for bad in (b'{"type":"ack","v":1,"run_id":"run-1","seq":-1}',
                b'{"type":"ack","v":1,"run_id":"run 1","seq":1}',
                b'{"type":"ack","v":1,"seq":1}'):
        with pytest.raises(ProtocolError):
            decode_line(bad)
    hello = make_hello("1.0", {}, "h", "b", capabilities=[ACK_CAPABILITY])
    assert decode_line(encode(hello).rstrip(b"\n"))["capabilities"] == ["ack"]
