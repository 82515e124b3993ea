"""Hostile guests: the relay stays up, memory stays bounded, neighbours keep their latency,
and every drop is counted by reason."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import pytest

from diag_protocol import MAX_LINE_BYTES, encode, make_heartbeat
from lab.fake_guest import FakeGuest, hello, sample_report
from tests.relay.test_session import until
from vdsm_hooks.relay.cache import ReportCache
from vdsm_hooks.relay.session import Runstate, SessionConfig, VMSession

#: Hostile tests push a lot of bytes; the per-guest rate limit is raised so they run quickly,
#: except in the test of the limit itself.
QUICK = SessionConfig(read_rate=512 << 20, read_burst=64 << 20, reconnect_min_backoff=0.05)


class Neighbour:
    """A well-behaved VM next to the hostile one: its reports keep coming through, and the one
    event loop that runs every session never works on the hostile guest for long at a stretch.

    Both are measured in the CPU time of this thread, which runs the relay's sessions and both
    fake guests: a ticker that wakes every 10 ms sees how much CPU the loop spent between two of
    its turns (the longest stretch anything kept the neighbour waiting, whether or not one of
    its reports was in flight just then), and each report's lateness is the CPU spent between
    its send and its receipt. Wall time would also count the moments a loaded machine does not
    run this process at all, which no relay can help (the test failed so at load 15-20).
    """

    def __init__(self, guest: FakeGuest, session: VMSession) -> None:
        self.guest = guest
        self.session = session
        self.latencies: list[float] = []  # CPU seconds of this thread, send to receipt
        self.longest_stretch = 0.0  # CPU seconds of this thread between two ticks
        self._sent_cpu: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0

    def _on_report(self, vm_id: str, report: dict, received_at: float, *_: object) -> None:
        sent = self._sent_cpu.pop(report["seq"], None)
        if sent is not None:
            self.latencies.append(time.thread_time() - sent)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._loop()), asyncio.ensure_future(self._tick())]

    async def _loop(self) -> None:
        report = encode(sample_report(seq=0))
        while True:
            self._seq += 1
            msg = json.loads(report)
            msg["seq"], msg["time"] = self._seq, time.time()
            self._sent_cpu[self._seq] = time.thread_time()
            await self.guest.send(msg)
            await asyncio.sleep(0.05)

    async def _tick(self) -> None:
        last = time.thread_time()
        while True:
            await asyncio.sleep(0.01)
            now = time.thread_time()
            self.longest_stretch = max(self.longest_stretch, now - last)
            last = now

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def assert_unaffected(self) -> None:
        """The neighbour kept getting reports through and after the attack, all of them fast."""
        seen = len(self.latencies)
        await until(lambda: len(self.latencies) >= seen + 3, timeout=30,
                    what="the neighbour's reports after the attack")
        assert self.session.entry.counters.dropped == 0
        worst = max(self.latencies)
        assert worst < 0.5, "a neighbour's report waited %.3f s of the loop's CPU" % worst
        assert self.longest_stretch < 0.5, (
            "the loop worked %.3f s of CPU at a stretch without giving the neighbour a turn"
            % self.longest_stretch)


@pytest.fixture
async def arena(tmp_path):
    """(hostile guest, its session, a running neighbour, cache)."""
    cache = ReportCache()
    bad = await FakeGuest(str(tmp_path / "bad.sock")).start()
    good = await FakeGuest(str(tmp_path / "good.sock")).start()
    bad_session = VMSession(bad.vm_id, bad.path, cache, name="bad", config=QUICK)
    good_session = VMSession(good.vm_id, good.path, cache, name="good", config=QUICK)
    neighbour = Neighbour(good, good_session)
    good_session.on_report = neighbour._on_report
    bad_session.start()
    good_session.start()
    await bad_session.wait_state(Runstate.CONNECTED, timeout=5)
    await good_session.wait_state(Runstate.CONNECTED, timeout=5)
    neighbour.start()
    yield bad, bad_session, neighbour, cache
    await neighbour.stop()
    for s in (bad_session, good_session):
        await s.close()
    await bad.close()
    await good.close()


async def still_works(guest: FakeGuest, session: VMSession, seq: int) -> None:
    """After the attack, the same session accepts a valid report."""
    await guest.send(sample_report(seq=seq, run_id="after"))
    await until(lambda: session.entry.summary is not None
                and session.entry.summary.run_id == "after", what="report after the attack")
    assert session.state is Runstate.CONNECTED


async def test_garbage_lines_are_dropped_and_counted(arena):
    bad, session, neighbour, _ = arena
    lines = [b"hello there", b"{not json", b"[1,2,3]", b'"a string"', b"42",
             b'{"type":"shell","v":1}', b'{"type":"report","v":99}',
             b'{"type":"report","v":1,"seq":-1}', b"NaN", b'{"type":"hello","v":1}',
             b'{"type":"request","v":1,"id":"x","method":"ping"}']
    await bad.write(b"\n".join(lines) + b"\n")
    await still_works(bad, session, 1)
    drops = session.entry.counters.drops
    assert drops["bad_json"] == 3           # hello there, {not json, NaN
    assert drops["not_object"] == 3         # list, string, number
    assert drops["unknown_type"] == 1
    assert drops["bad_version"] == 1
    assert drops["invalid"] == 2            # report without fields, hello without version
    assert drops["unexpected_request"] == 1  # a guest may not send requests to the host
    assert session.entry.counters.dropped == len(lines)
    await neighbour.assert_unaffected()


async def test_invalid_utf8_lines_are_dropped_and_counted(arena):
    bad, session, neighbour, _ = arena
    line = encode(hello()).replace(b"guest.example", b"gu\xff\xfeest")
    await bad.write(line + b"\xc3\x28garbage\n")
    await still_works(bad, session, 1)
    assert session.entry.hello is None  # the hello with bad bytes was not kept, not repaired
    assert session.entry.counters.drops == {"bad_utf8": 2}
    assert session.entry.counters.dropped == 2
    await neighbour.assert_unaffected()


async def test_deeply_nested_json_is_dropped(arena):
    bad, session, neighbour, _ = arena
    depth = 200_000  # far past the interpreter's recursion limit
    await bad.write(b"[" * depth + b"]" * depth + b"\n")
    nested = b'{"type":"report","v":1,"x":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}\n"
    await bad.write(nested)
    await still_works(bad, session, 1)
    assert session.entry.counters.drops["too_deep"] == 2
    await neighbour.assert_unaffected()


async def test_schema_shaped_but_enormous_lists_are_dropped(arena):
    bad, session, neighbour, _ = arena
    huge = sample_report(seq=1)
    unit = huge["sections"]["applications"]["data"]["units"][0]
    huge["sections"]["applications"]["data"]["units"] = [unit] * 9000  # under 1 MiB, over cap
    line = json.dumps(huge).encode()
    assert len(line) < MAX_LINE_BYTES
    many = b'{"type":"heartbeat","v":1,"time":1,"x":[' + b"0," * 400_000 + b"0]}"
    await bad.write(line + b"\n" + many + b"\n")
    await still_works(bad, session, 2)
    assert session.entry.counters.drops["invalid"] == 2
    assert session.entry.summary.seq == 2
    await neighbour.assert_unaffected()


async def test_a_100_mb_line_is_streamed_and_never_buffered(arena):
    bad, session, neighbour, _ = arena
    chunk = b"x" * (1 << 20)
    tracemalloc.start()
    try:
        for _ in range(100):
            await bad.write(chunk)
        await bad.write(b"\n")
        await until(lambda: session.entry.counters.bytes >= 100 * len(chunk),
                    timeout=60, what="100 MB consumed")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One line's cap (1 MiB) plus transport buffers and the writer's chunk, never 100 MB.
    assert peak < 12 * MAX_LINE_BYTES, "peak traced memory %d bytes" % peak
    assert session._decoder is not None and session._decoder.buffered == 0
    await still_works(bad, session, 1)
    assert session.entry.counters.drops["oversize"] == 1
    await neighbour.assert_unaffected()


async def test_a_flood_is_counted_and_does_not_starve_neighbours(arena):
    bad, session, neighbour, _ = arena
    beats = b"".join(encode(make_heartbeat("b", "r", i)) for i in range(2000))
    rounds = 25
    for _ in range(rounds):
        await bad.write(beats)
    await until(lambda: session.entry.counters.heartbeats == rounds * 2000, timeout=30,
                what="flood consumed")
    assert session.entry.counters.dropped == 0
    await neighbour.assert_unaffected()


async def test_the_rate_limit_pushes_back_on_a_flooding_guest(tmp_path):
    cache = ReportCache()
    g = await FakeGuest(str(tmp_path / "flood.sock")).start()
    cfg = SessionConfig(read_rate=256 << 10, read_burst=256 << 10)
    s = VMSession(g.vm_id, g.path, cache, config=cfg)
    s.start()
    try:
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        beats = b"".join(encode(make_heartbeat("b", "r", i)) for i in range(10000))
        started = time.monotonic()
        writer = asyncio.ensure_future(g.write(beats * 2))  # about 1.4 MB
        await until(lambda: s.entry.counters.heartbeats == 20000, timeout=30, what="flood")
        elapsed = time.monotonic() - started
        await writer
        # 1.4 MB at 256 KiB/s after a 256 KiB burst takes several seconds, not milliseconds
        assert elapsed > 3.0, "read %d bytes in %.2f s" % (s.entry.counters.bytes, elapsed)
        assert s.entry.counters.throttled > 0
    finally:
        await s.close()
        await g.close()


async def test_a_one_byte_drip_is_assembled_without_blocking_anyone(arena):
    bad, session, neighbour, _ = arena
    line = encode(hello("drip"))
    for i in range(len(line)):
        await bad.write(line[i:i + 1])
        await asyncio.sleep(0.002)
    await until(lambda: session.entry.hello is not None, what="dripped hello")
    assert session.entry.agent_version == "drip"
    assert session.entry.counters.dropped == 0
    await neighbour.assert_unaffected()


async def test_memory_per_vm_is_bounded_by_one_report(arena):
    bad, session, neighbour, _ = arena
    big = sample_report(seq=1, processes=100, units=1000)
    size = len(encode(big))
    assert size > 100_000
    for seq in range(2, 30):
        big["seq"] = seq
        await bad.send(big)
    await until(lambda: session.entry.summary is not None and session.entry.summary.seq == 29,
                what="last big report")
    assert session.entry.report_bytes <= size  # the latest one only, as compact JSON
    assert session.entry.report_bytes <= MAX_LINE_BYTES
    await neighbour.assert_unaffected()


async def test_numbers_out_of_the_contracts_range_are_dropped_before_any_upload(arena):
    bad, session, neighbour, _ = arena
    forwarded: list[dict] = []
    session.on_report = lambda vm_id, report, *_: forwarded.append(report)
    hostile = []
    for field, value in (("seq", 2**63), ("seq", 2**53), ("time", 1e13), ("time", -5)):
        msg = sample_report(seq=1)
        msg[field] = value
        hostile.append(json.dumps(msg).encode())
    counter = sample_report(seq=1)
    counter["sections"]["resources"]["data"]["oom_kills"] = 2**63
    hostile.append(json.dumps(counter).encode())
    await bad.write(b"\n".join(hostile) + b"\n")
    await still_works(bad, session, 1)
    assert session.entry.counters.drops["out_of_range"] == len(hostile)
    assert [report["seq"] for report in forwarded] == [1]
    await neighbour.assert_unaffected()


async def test_a_report_flood_is_rate_limited_per_vm_and_counted(tmp_path):
    cache = ReportCache()
    flood = await FakeGuest(str(tmp_path / "flood.sock")).start()
    calm = await FakeGuest(str(tmp_path / "calm.sock")).start()
    cfg = SessionConfig(read_rate=512 << 20, read_burst=64 << 20, reconnect_min_backoff=0.05,
                        min_report_interval=0.5, report_burst=5,
                        read_rate_over_limit=512 << 20)  # the byte penalty: next test
    taken: dict[str, list[int]] = {flood.vm_id: [], calm.vm_id: []}

    def sink(vm_id: str, report: dict, *_: object) -> None:
        taken[vm_id].append(report["seq"])
    sessions = [VMSession(g.vm_id, g.path, cache, config=cfg, on_report=sink)
                for g in (flood, calm)]
    for s in sessions:
        s.start()
    try:
        for s in sessions:
            await s.wait_state(Runstate.CONNECTED, timeout=5)
        line = json.loads(encode(sample_report(seq=0, processes=2, units=2)))
        burst = []
        for seq in range(1, 2001):  # as fast as the channel takes them
            line["seq"] = seq
            burst.append(json.dumps(line).encode())
        started = time.monotonic()
        await flood.write(b"\n".join(burst) + b"\n")
        await calm.send(sample_report(seq=1))
        counters = sessions[0].entry.counters
        await until(lambda: counters.reports + counters.drops["rate_limited"] == 2000,
                    timeout=30, what="the flood read")
        elapsed = time.monotonic() - started
        # the burst, plus one per 0.5 s while the flood was read
        assert 5 <= len(taken[flood.vm_id]) <= 5 + elapsed / 0.5 + 1
        assert counters.drops["rate_limited"] == 2000 - len(taken[flood.vm_id])
        # over its rate, its report lines were dropped unread: decoded are the ones taken and
        # those read in the same chunk as the one that found the bucket empty (not 2000)
        assert counters.messages <= 200, counters.messages
        assert taken[flood.vm_id][:5] == [1, 2, 3, 4, 5]
        await until(lambda: taken[calm.vm_id] == [1], what="the calm VM's report")
        assert sessions[1].entry.counters.dropped == 0  # its neighbour's flood cost it nothing
        await asyncio.sleep(0.6)  # the bucket refills: the flooder is heard again
        line["seq"] = 5000
        await flood.send(line)
        await until(lambda: taken[flood.vm_id][-1] == 5000, what="a report after the pause")
    finally:
        for s in sessions:
            await s.close()
        await flood.close()
        await calm.close()


async def test_a_guest_over_its_report_rate_is_read_slowly(tmp_path):
    g = await FakeGuest(str(tmp_path / "flood.sock")).start()
    cfg = SessionConfig(read_rate=64 << 20, read_burst=1 << 20, reconnect_min_backoff=0.05,
                        min_report_interval=60, report_burst=2, read_rate_over_limit=256 << 10)
    s = VMSession(g.vm_id, g.path, ReportCache(), config=cfg)
    s.start()
    try:
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        line = json.loads(encode(sample_report(seq=0, processes=2, units=2)))
        flood = []
        for seq in range(1, 1001):
            line["seq"] = seq
            flood.append(json.dumps(line).encode())
        data = b"\n".join(flood) + b"\n"
        assert len(data) > 2 << 20
        started = time.monotonic()
        writer = asyncio.ensure_future(g.write(data))
        counters = s.entry.counters
        await until(lambda: counters.reports + counters.drops["rate_limited"] == 1000,
                    timeout=60, what="the flood read")
        elapsed = time.monotonic() - started
        await writer
        # 1 MiB of burst at full speed, the rest at 256 KiB/s once over the report rate
        assert elapsed > (len(data) - (1 << 20)) / (256 << 10) * 0.7, elapsed
        assert counters.reports == 2 and counters.throttled > 0
    finally:
        await s.close()
        await g.close()
