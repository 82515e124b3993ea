"""VMSession against fake guests on real unix sockets (the test binds the socket, as QEMU does)."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diag_protocol import LineDecoder, make_heartbeat, make_reply
from diag_protocol import encode as encode_line
from lab.fake_guest import FakeGuest, hello, sample_report
from vdsm_hooks.relay.cache import ReportCache
from vdsm_hooks.relay.session import (
    NotConnected,
    RemoteError,
    RequestError,
    RequestTimeout,
    Runstate,
    SessionConfig,
    StateError,
    VMSession,
)

FAST = SessionConfig(reconnect_min_backoff=0.05, reconnect_max_backoff=0.2,
                     silence_timeout=60, request_timeout=2)


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.01)


@pytest.fixture
async def guest(tmp_path):
    g = await FakeGuest(str(tmp_path / "vm.org.vmdiag.agent.0")).start()
    yield g
    await g.close()


@pytest.fixture
def cache():
    return ReportCache()


def session_for(g: FakeGuest, cache: ReportCache, config: SessionConfig = FAST, **kw):
    s = VMSession(g.vm_id, g.path, cache, name="vm-" + g.vm_id[:4], config=config, **kw)
    s.start()
    return s


async def test_hello_and_reports_are_cached_and_handed_on(guest, cache):
    handed = []
    s = session_for(guest, cache, on_report=lambda *item: handed.append(item))
    try:
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        await guest.send(hello("2.1.0"), sample_report(seq=0), sample_report(seq=1),
                         make_heartbeat("boot-1", "run-1", 2))
        await until(lambda: s.entry.counters.heartbeats == 1, what="heartbeat")
        entry = cache.get(guest.vm_id)
        assert entry is s.entry
        assert entry.agent_version == "2.1.0"
        assert entry.responsive is True
        assert entry.summary.seq == 1 and entry.summary.run_id == "run-1"
        assert entry.summary.worst["status"] == "warning"
        assert entry.report()["seq"] == 1
        assert entry.counters.messages == 4 and entry.counters.reports == 2
        assert entry.counters.dropped == 0
        # what Uploader.submit_report takes: the uploader wraps it in this host's envelope
        assert [report["seq"] for _, report, _, _, _, _ in handed] == [0, 1]
        for vm_id, report, received_at, version, on_safe, encoded in handed:
            assert json.loads(encoded) == report  # the cache's encoding, sent as it is
            assert vm_id == guest.vm_id and report["run_id"] == "run-1"
            assert abs(received_at - time.time()) < 30
            assert version == "2.1.0"  # from the hello, for the engine's pages
            assert on_safe is None  # that hello does not ask for acknowledgements
        row = entry.status_row()
        assert row["state"] == "connected" and row["last_report_age"] < 5
    finally:
        await s.close()
    assert s.state is Runstate.CLOSED
    assert entry.session_state == "closed"


async def test_replayed_or_older_report_never_replaces_the_latest(guest, cache):
    s = session_for(guest, cache)
    try:
        await guest.send(sample_report(seq=5), sample_report(seq=3), sample_report(seq=5))
        await until(lambda: s.entry.counters.drops["stale_seq"] == 2, what="stale drops")
        assert s.entry.summary.seq == 5
        # a new agent run starts again at seq 0 and is accepted
        await guest.send(sample_report(seq=0, run_id="run-2"))
        await until(lambda: s.entry.summary.run_id == "run-2", what="new run")
        assert s.entry.counters.reports == 2
    finally:
        await s.close()


async def test_reconnects_after_qemu_closes_the_channel_and_agent_restarts(guest, cache):
    s = session_for(guest, cache)
    try:
        await guest.send(hello(boot_id="boot-1"), sample_report(seq=7))
        await until(lambda: s.entry.summary is not None, what="first report")
        await guest.drop()
        await s.wait_state(Runstate.BACKOFF, timeout=5)
        assert "closed" in s.entry.last_error
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        # the guest rebooted: new boot id, new run, seq starts over
        await guest.send(hello(boot_id="boot-2"), sample_report(seq=0, run_id="run-9",
                                                               boot_id="boot-2"))
        await until(lambda: s.entry.summary.run_id == "run-9", what="report after restart")
        assert s.entry.hello["boot_id"] == "boot-2"
        assert s.entry.counters.connects == 2 and s.entry.counters.disconnects == 1
        assert guest.connections == 2
    finally:
        await s.close()


async def test_waits_in_backoff_until_the_socket_appears(tmp_path, cache):
    path = str(tmp_path / "late.sock")
    g = FakeGuest(path)
    s = session_for(g, cache)
    try:
        await s.wait_state(Runstate.BACKOFF, timeout=5)
        assert "cannot open channel socket" in s.entry.last_error
        with pytest.raises(NotConnected):
            await s.request("ping")
        await g.start()
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        await g.send(sample_report(seq=1))
        await until(lambda: s.entry.summary is not None, what="report")
    finally:
        await s.close()
        await g.close()


async def test_silence_marks_the_agent_unresponsive_and_speech_revives_it(guest, cache):
    cfg = SessionConfig(silence_timeout=0.3, reconnect_min_backoff=0.05)
    s = session_for(guest, cache, config=cfg)
    try:
        await guest.send(hello())
        await until(lambda: s.entry.responsive is True, what="hello")
        await until(lambda: s.entry.responsive is False, timeout=3, what="unresponsive")
        assert s.state is Runstate.CONNECTED  # the channel itself is fine
        await guest.send(make_heartbeat("boot-1", "run-1", 1))
        await until(lambda: s.entry.responsive is True, what="responsive again")
    finally:
        await s.close()


async def test_a_channel_that_never_speaks_is_tolerated(guest, cache):
    s = session_for(guest, cache, config=SessionConfig(silence_timeout=0.2))
    try:
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        assert s.entry.responsive is None
        await until(lambda: s.entry.responsive is False, timeout=3, what="unresponsive")
        with pytest.raises(RequestTimeout, match="is the agent running"):
            await s.request("ping", timeout=0.2)
        assert s.state is Runstate.CONNECTED
    finally:
        await s.close()


async def test_requests_are_matched_by_id(tmp_path, cache):
    g = await FakeGuest(str(tmp_path / "r.sock"), auto_reply=True).start()
    s = session_for(g, cache)
    try:
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        results = await asyncio.gather(s.request("ping"), s.request("report.now"),
                                       s.request("checks.run"))
        assert [r["method"] for r in results] == ["ping", "report.now", "checks.run"]
        ids = [m["id"] for m in g.requests]
        assert len(set(ids)) == 3
        with pytest.raises(RequestError, match="not one of"):
            await s.request("shell.exec")
    finally:
        await s.close()
        await g.close()


async def test_error_replies_and_unmatched_replies(guest, cache):
    s = session_for(guest, cache)
    try:
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        task = asyncio.ensure_future(s.request("config.get"))
        await until(lambda: guest.requests, what="request at the guest")
        req = guest.requests[0]
        await guest.send(make_reply("nobody-asked", True, 1),
                         make_reply(req["id"], False, code="denied", message="not today"))
        with pytest.raises(RemoteError) as info:
            await task
        assert info.value.code == "denied"
        assert s.entry.counters.drops["unmatched_reply"] == 1
    finally:
        await s.close()


async def test_pending_request_fails_when_the_channel_drops(guest, cache):
    s = session_for(guest, cache)
    try:
        await s.wait_state(Runstate.CONNECTED, timeout=5)
        task = asyncio.ensure_future(s.request("ping", timeout=5))
        await until(lambda: guest.requests, what="request")
        await guest.drop()
        with pytest.raises(NotConnected):
            await task
    finally:
        await s.close()


async def test_state_machine_guards(guest, cache):
    s = session_for(guest, cache)
    with pytest.raises(StateError):
        s.start()
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StateError):
        s.start()
    assert s.state is Runstate.CLOSED
    assert not os.path.exists(guest.path) or guest.connections <= 1


MIXED = (b"garbage\n" + b'{"type":"hello","v":1}\n'
         + b"".join(encode_line(m) for m in (hello("9.9"), make_heartbeat("b", "r", 1)))
         + b"y" * 20000 + b"\n"  # oversize for max_line=16384
         + b"\xff\xfe\n" + b"[" * 3000 + b"\n"
         + encode_line(sample_report(seq=3, processes=2, units=2))
         + encode_line(sample_report(seq=2, processes=2, units=2))
         + encode_line(make_reply("nobody", True)))


def feed_session(chunks) -> dict:
    """Feed a CONNECTED-state session directly (no socket) and return what it recorded."""
    async def run() -> dict:
        cache = ReportCache()
        s = VMSession("00000000-0000-4000-8000-000000000001", "/nonexistent", cache,
                      config=SessionConfig(max_line=16384, read_rate=1 << 40, read_burst=1 << 40))
        s._state = Runstate.CONNECTED
        s._decoder = LineDecoder(max_line=16384)
        for chunk in chunks:
            s._on_data(chunk)
        e = s.entry
        return {"drops": dict(e.counters.drops), "messages": e.counters.messages,
                "bytes": e.counters.bytes, "seq": e.summary.seq if e.summary else None,
                "agent": e.agent_version, "beats": e.counters.heartbeats}
    return asyncio.run(run())


WHOLE = None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(MIXED)), max_size=40))
def test_any_chunking_of_a_hostile_stream_gives_the_same_state(cuts):
    global WHOLE
    if WHOLE is None:
        WHOLE = feed_session([MIXED])
        assert WHOLE["seq"] == 3 and WHOLE["agent"] == "9.9" and WHOLE["beats"] == 1
        assert WHOLE["drops"] == {"bad_json": 1, "invalid": 1, "oversize": 1, "too_deep": 1,
                                  "bad_utf8": 1, "stale_seq": 1, "unmatched_reply": 1}
    points = sorted(set(cuts))
    chunks = [MIXED[a:b] for a, b in zip([0] + points, points + [len(MIXED)]) if b > a]
    assert feed_session(chunks) == WHOLE


async def test_reports_are_acknowledged_once_safe_and_only_to_an_agent_that_asks(
        tmp_path, cache):
    """The relay's half of diag_protocol.acks: an ``ack`` goes back when the sink says the
    report is safe (the uploader: delivered or spooled), on whatever connection is current;
    the guest, which keeps unacknowledged reports, then forgets them."""
    asks = await FakeGuest(str(tmp_path / "a.org.vmdiag.agent.0"),
                           greeting=hello(acks=True)).start()
    plain = await FakeGuest(str(tmp_path / "b.org.vmdiag.agent.0")).start()
    handed = {}
    sessions = [session_for(g, cache, on_report=lambda vm, r, t, v, on_safe, *_:
                            handed.setdefault(vm, []).append(on_safe))
                for g in (asks, plain)]
    try:
        await asyncio.gather(asks.connected(), plain.connected())
        for seq in range(3):
            await asks.send_report(sample_report(seq=seq))
        await plain.send(hello(), sample_report(seq=0))
        await until(lambda: len(handed.get(asks.vm_id, ())) == 3
                    and len(handed.get(plain.vm_id, ())) == 1, what="reports handed on")
        assert handed[plain.vm_id] == [None]  # an older agent: nothing is ever written back
        assert len(asks.unacked) == 3
        handed[asks.vm_id][1]()
        await until(lambda: asks.unacked.counts["acked"] == 1, what="the first ack")
        await asks.drop()  # the connection goes; the relay reconnects, the guest writes again
        await until(lambda: asks.connections == 2, what="reconnected")
        await until(lambda: sessions[0].entry.counters.drops["stale_seq"] == 2,
                    what="the copies dropped: the relay still has them")
        handed[asks.vm_id][0]()
        handed[asks.vm_id][2]()  # acknowledged on the new connection, matched by run and seq
        await until(lambda: len(asks.unacked) == 0, what="all acknowledged")
        assert sessions[0].entry.counters.acks == 3 and asks.unacked.counts["unknown_ack"] == 0
        assert sessions[1].entry.counters.acks == 0 and plain.requests == []
    finally:
        for s in sessions:
            await s.close()
        await asks.close()
        await plain.close()


async def test_without_an_uploader_a_report_is_acknowledged_on_receipt(guest, cache):
    guest.greeting = hello(acks=True)
    guest.acks = True
    s = session_for(guest, cache)
    try:
        await guest.connected()
        await guest.send_report(sample_report(seq=0))
        await until(lambda: guest.unacked.counts["acked"] == 1, what="the ack")
    finally:
        await s.close()
