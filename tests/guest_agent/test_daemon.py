"""The agent end to end: real collectors, real threads, a test host on a Unix socket or a pty.

The host reads with diag_protocol's LineDecoder, so every test also asserts that nothing the
agent sent would be dropped by the relay (``decoder.drops`` stays empty).
"""

from __future__ import annotations

import errno
import logging
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from diag_protocol import (
    ACK_CAPABILITY,
    ID_SHAPE,
    UNACKED_MAX_MESSAGES,
    LineDecoder,
    make_ack,
    make_request,
)
from guest_agent import daemon as daemon_mod
from guest_agent.config import AgentConfig, load_config
from guest_agent.daemon import Agent
from guest_agent.periodic import PeriodicOperation
from guest_agent.report import boot_id

from .hostside import HostSide

REPO = Path(__file__).resolve().parents[2]

# No gateway probe and no targets: tests send nothing off the machine.
BASE_CONF = """
[agent]
interval = {interval}
heartbeat_interval = {heartbeat}
queue_max_messages = {queue}
device = {device}
[probes]
gateway = no
timeout = 0.5
[collect]
top_n = 3
"""


def make_config(tmp_path: Path, device: str, interval: float = 0.2, heartbeat: float = 0.1,
                queue: int = 16, extra: str = "") -> AgentConfig:
    path = tmp_path / "agent.conf"
    path.write_text(BASE_CONF.format(interval=interval, heartbeat=heartbeat, queue=queue,
                                     device=device) + extra)
    return load_config(str(path))


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


class Running:
    """An Agent running in a thread, stopped and joined at teardown."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.thread = threading.Thread(target=agent.run, name="agent-under-test")
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "agent did not stop within 10s"


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[str]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    short = Path("/tmp") / ("vmdiag-%d-%d" % (os.getpid(), time.monotonic_ns() % 10**9))
    short.mkdir()
    yield str(short / "port")
    for child in short.iterdir():
        child.unlink()
    short.rmdir()


@pytest.fixture
def started(tmp_path: Path, sock_path: str) -> Iterator[Callable[..., Tuple[Agent, HostSide]]]:
    running: List[Running] = []
    hosts: List[HostSide] = []

    def start(listen: bool = True, **conf: Any) -> Tuple[Agent, HostSide]:
        host = HostSide(sock_path)
        hosts.append(host)
        if listen:
            host.listen()
        agent = Agent(make_config(tmp_path, sock_path, **conf), backoff=(0.05, 0.2))
        running.append(Running(agent))
        return agent, host

    yield start
    for r in running:
        r.stop()
    for h in hosts:
        h.close()


def kinds(msgs: List[dict]) -> List[str]:
    return [m["type"] for m in msgs]


def test_hello_then_reports_and_heartbeats(started: Callable[..., Tuple[Agent, HostSide]]
                                           ) -> None:
    agent, host = started()
    host.accept()
    hello = host.next_message(10)
    assert hello is not None and hello["type"] == "hello"
    assert hello["boot_id"] == boot_id() == agent.boot_id
    assert hello["protocol_versions"] == [1]
    assert "method:report.now" in hello["capabilities"]
    msgs = host.read_until(lambda m: m["type"] == "report" and m["seq"] >= 2)
    reports = [m for m in msgs if m["type"] == "report"]
    assert [r["seq"] for r in reports] == [0, 1, 2]
    assert {r["run_id"] for r in reports} == {agent.run_id}
    assert set(reports[-1]["sections"]) == {"network", "resources", "applications", "settings",
                                            "checks"}
    # real data from this machine, checked by the real checks
    assert reports[-1]["sections"]["resources"]["data"]["cpu"]["count"] == os.cpu_count()
    assert any(r["id"] == "fs.fill:/"
               for r in reports[-1]["sections"]["checks"]["data"]["results"])
    beats = [m for m in msgs if m["type"] == "heartbeat"]
    assert beats and [b["seq"] for b in beats] == list(range(1, len(beats) + 1))
    assert host.decoder.drops == {}


def test_the_first_report_is_lean_and_at_once_the_full_one_follows(
        started: Callable[..., Tuple[Agent, HostSide]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_mod, "FOLLOW_UP_S", 1.5)
    agent, host = started(interval=3600)
    host.accept()
    began = time.monotonic()
    msgs = host.read_until(lambda m: m["type"] == "report", 30)
    first = msgs[-1]
    assert first["seq"] == 0 and kinds(msgs)[0] == "hello"
    apps = first["sections"]["applications"]["data"]
    net = first["sections"]["network"]["data"]
    settings = first["sections"]["settings"]["data"]
    # health first: units, processes, file systems, resources and checks are there ...
    assert {"units", "processes"} <= set(apps)  # failed_units too where systemd runs
    assert first["sections"]["resources"]["data"]["filesystems"]
    assert any(r["id"] == "fs.fill:/" for r in first["sections"]["checks"]["data"]["results"])
    # ... the slow parts are not (no cache folder here), nor rates (it is their baseline)
    assert "packages" not in apps and "listening" not in net and "time_sync" not in settings
    assert "users" not in settings
    assert first["sections"]["resources"]["data"]["cpu"]["percent"] is None
    # the first full report follows FOLLOW_UP_S later, not an interval (an hour) later
    full = host.read_until(lambda m: m["type"] == "report" and m["seq"] == 1,
                           daemon_mod.FOLLOW_UP_S + 30)[-1]
    assert time.monotonic() - began >= daemon_mod.FOLLOW_UP_S - 1
    assert "packages" in full["sections"]["applications"]["data"]
    assert "listening" in full["sections"]["network"]["data"]
    assert "users" in full["sections"]["settings"]["data"]
    assert full["sections"]["resources"]["data"]["cpu"]["percent"] is not None
    assert host.decoder.drops == {}


def test_requests_are_answered_and_unknown_methods_refused(
        started: Callable[..., Tuple[Agent, HostSide]]) -> None:
    agent, host = started(interval=30)
    host.accept()
    host.read_until(lambda m: m["type"] == "hello")

    def ask(method: str, rid: str) -> dict:
        if method in ("ping", "report.now", "checks.run", "config.get"):
            host.send(make_request(rid, method))
        else:
            host.send_raw({"type": "request", "v": 1, "id": rid, "method": method, "params": {}})
        return host.read_until(lambda m: m["type"] == "reply" and m["id"] == rid)[-1]

    pong = ask("ping", "r1")
    assert pong["ok"] is True and pong["result"]["pong"] is True
    assert abs(pong["result"]["time"] - time.time()) < 5

    cfg = ask("config.get", "r2")
    assert cfg["ok"] is True
    assert cfg["result"]["options"]["agent"]["interval"] == 30.0
    assert cfg["result"]["options"]["probes"]["gateway"] is False
    assert cfg["result"]["status"]["run_id"] == agent.run_id

    refused = ask("shell.exec", "r3")
    assert refused["ok"] is False
    assert refused["error"]["code"] == "unknown_method"
    assert "shell.exec" in refused["error"]["message"]

    now = ask("report.now", "r4")
    assert now["ok"] is True and now["result"]["run_id"] == agent.run_id
    seq = now["result"]["seq"]
    # the report itself was queued before the reply: it has already arrived
    assert any(m["type"] == "report" and m["seq"] == seq for m in host.received)

    checks = ask("checks.run", "r5")
    assert checks["ok"] is True
    ids = {r["id"] for r in checks["result"]["data"]["results"]}
    assert "fs.fill:/" in ids and "mem.oom" in ids
    assert host.decoder.drops == {}


def test_every_request_whose_id_can_be_echoed_is_answered(
        started: Callable[..., Tuple[Agent, HostSide]]) -> None:
    """A JSON-RPC or QMP style client numbers its requests: it gets bad_request back, with its
    own id, saying what an id must be, instead of waiting forever (issue 12)."""
    agent, host = started(interval=30)
    host.accept()
    host.read_until(lambda m: m["type"] == "hello")

    def ask(rid: object, method: str = "ping", **extra: object) -> dict:
        host.send_raw({"type": "request", "v": 1, "id": rid, "method": method, **extra})
        return host.read_until(lambda m: m["type"] == "reply" and m["id"] == rid)[-1]

    for rid in (7, 0, -3, 2**53 - 1):
        numbered = ask(rid)
        assert numbered["ok"] is False and numbered["id"] == rid
        assert numbered["error"]["code"] == "bad_request"
        assert ID_SHAPE in numbered["error"]["message"]
    # an id of the right shape with a method outside the list, or params of the wrong shape
    assert ask("r1", "shell.exec")["error"]["code"] == "unknown_method"
    bad = ask("r2", "ping", params=[1, 2])
    assert bad["error"]["code"] == "bad_request" and "params: an object" in \
        bad["error"]["message"]
    # ids no reply can carry back (a float, an object, beyond 2**53, a bad string) are dropped;
    # the agent goes on answering
    for rid in (1.5, {"n": 1}, 2**60, "white space", "x" * 200, True):
        host.send_raw({"type": "request", "v": 1, "id": rid, "method": "ping"})
    assert ask("r3")["ok"] is True
    assert not [m for m in host.received if m["type"] == "reply"
                and m["id"] not in (7, 0, -3, 2**53 - 1, "r1", "r2", "r3")]
    assert host.decoder.drops == {}


def test_host_reconnect_gets_a_new_hello_and_the_run_goes_on(
        started: Callable[..., Tuple[Agent, HostSide]]) -> None:
    agent, host = started(interval=0.1)
    host.accept()
    first = host.read_until(lambda m: m["type"] == "report")
    assert kinds(first)[0] == "hello"
    assert ACK_CAPABILITY in first[0]["capabilities"]
    seq_before = first[-1]["seq"]
    host.disconnect()
    time.sleep(0.3)  # reports made meanwhile wait in the queue
    host.accept()
    again = host.read_until(lambda m: m["type"] == "report" and m["seq"] > seq_before)
    assert again[0]["type"] == "hello"
    assert again[-1]["run_id"] == agent.run_id
    assert agent.channel.stats.connects == 2
    assert host.decoder.drops == {}


def test_reports_the_host_did_not_acknowledge_are_written_again_first(
        started: Callable[..., Tuple[Agent, HostSide]]) -> None:
    """A relay killed with reports read but not yet safe: the agent writes them again."""
    agent, host = started(interval=0.1)
    host.accept()
    first = host.read_until(lambda m: m["type"] == "report" and m["seq"] >= 3)
    for seq in (0, 1):
        host.send(make_ack(agent.run_id, seq))
    wait_for(lambda: agent.channel.unacked.counts["acked"] == 2, what="acks taken")
    written = max(m["seq"] for m in first if m["type"] == "report")
    host.disconnect()  # the relay dies: 2.. were never acknowledged
    time.sleep(0.3)
    host.accept()
    again = host.read_until(lambda m: m["type"] == "report" and m["seq"] > written + 2)
    assert again[0]["type"] == "hello"
    seqs = [m["seq"] for m in again if m["type"] == "report"]
    # the unacknowledged ones, oldest first, then the newer ones: nothing missing, in order
    assert seqs == list(range(2, seqs[-1] + 1)), seqs
    for seq in seqs:
        host.send(make_ack(agent.run_id, seq))
    wait_for(lambda: agent.channel.unacked.counts["acked"] == 2 + len(seqs), what="acks")
    assert agent.channel.stats.as_dict()["unacked"]["unknown_ack"] == 0


def test_a_host_that_never_acknowledges_costs_a_few_reports_of_memory(
        started: Callable[..., Tuple[Agent, HostSide]]) -> None:
    """A relay older than acknowledgements: the agent keeps at most UNACKED_MAX_MESSAGES."""
    agent, host = started(interval=0.05)
    host.accept()
    host.read_until(lambda m: m["type"] == "report" and m["seq"] >= UNACKED_MAX_MESSAGES + 4)
    assert len(agent.channel.unacked) <= UNACKED_MAX_MESSAGES
    assert agent.channel.unacked.counts["forgotten_full"] >= 4


def test_missing_port_is_retried_and_logged_once(
        started: Callable[..., Tuple[Agent, HostSide]], caplog: pytest.LogCaptureFixture
                                                 ) -> None:
    caplog.set_level(logging.INFO, logger="guest_agent")
    agent, host = started(listen=False)
    wait_for(lambda: agent.channel.stats.open_failures >= 3, what="three open attempts")
    host.listen()
    host.accept()
    assert host.next_message(10)["type"] == "hello"  # type: ignore[index]
    missing = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(missing) == 1 and missing[0].levelno == logging.WARNING


def test_stalled_host_costs_old_reports_not_collection(
        started: Callable[..., Tuple[Agent, HostSide]]) -> None:
    agent, host = started(interval=0.01, heartbeat=0.05, queue=4)
    host.accept()  # ...and never read: the socket buffer fills, then the queue
    wait_for(lambda: agent.channel.stats.dropped["report"] >= 5, timeout=60,
             what="reports dropped while the host stalls")
    built_while_stalled = agent.reports_built
    wait_for(lambda: agent.reports_built >= built_while_stalled + 5, timeout=30,
             what="collection to go on while the host stalls")
    assert agent.channel.queued <= 4 + 1  # the cap, plus the one partly written
    msgs = host.drain(2.0)
    seqs = [m["seq"] for m in msgs if m["type"] == "report"]
    assert seqs == sorted(seqs)
    assert max(seqs) - min(seqs) + 1 > len(seqs), "the oldest reports were dropped"
    assert max(seqs) >= built_while_stalled
    assert host.decoder.drops == {}


def test_pty_port_works_and_a_gone_host_does_not_make_it_spin(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    device = os.ttyname(slave)
    os.close(slave)
    agent = Agent(make_config(tmp_path, device, interval=0.2, heartbeat=0.2), backoff=(0.05, 0.5))
    run = Running(agent)
    try:
        dec = LineDecoder()
        got: List[dict] = []
        deadline = time.monotonic() + 10
        while not any(m["type"] == "report" for m in got) and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    got += dec.feed(os.read(master, 1 << 20))
                except OSError as err:  # EIO until the agent has opened the slave side
                    assert err.errno == errno.EIO
                    time.sleep(0.05)
        assert kinds(got)[0] == "hello" and "report" in kinds(got)
        assert dec.drops == {}  # raw mode: no \r\n translation, no echo
        os.close(master)
        master = -1
        wait_for(lambda: agent.channel.state != "connected", what="the hang-up to be seen")
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        # reports (every 0.2 s) go on; polling the dead port must not add a busy loop
        assert cpu < 0.5, "agent used %.2fs CPU in 1s with the host gone" % cpu
    finally:
        if master >= 0:
            os.close(master)
        run.stop()


def test_periodic_operation_survives_and_rate_limits_logging(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    calls: List[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise OSError("disk on fire")

    op = PeriodicOperation("flaky", flaky, 10.0, clock=lambda: now[0], log_every=3600.0)
    caplog.set_level(logging.INFO, logger="guest_agent.periodic")
    results = []
    for _ in range(4):
        results.append(op.run())
        now[0] += 10.0
    assert results == [False, False, False, True]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "disk on fire" in warnings[0].getMessage()
    assert op.suppressed == 2
    assert any("works again after 3 failures" in r.getMessage() for r in caplog.records)


def test_python_m_guest_agent_run_stops_cleanly_on_sigterm(tmp_path: Path, sock_path: str
                                                          ) -> None:
    make_config(tmp_path, "/nonexistent", interval=0.2)
    host = HostSide(sock_path)
    host.listen()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "guest_agent", "--config",
                             str(tmp_path / "agent.conf"), "run", "--device", sock_path],
                            env=env, cwd=str(tmp_path), stderr=subprocess.PIPE, text=True)
    try:
        host.accept(timeout=20)
        msgs = host.read_until(lambda m: m["type"] == "report", timeout=20)
        assert msgs[0]["type"] == "hello"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "vmdiag-agent stopped" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        host.close()


def test_a_watched_process_dying_is_reported_before_the_interval(
        started: Callable[..., Tuple[Agent, HostSide]], tmp_path: Path) -> None:
    exe = tmp_path / "vmdiagevtd"
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    exe.chmod(0o755)
    child = subprocess.Popen([str(exe), "60"])
    try:
        (tmp_path / "agent.conf.d").mkdir()
        (tmp_path / "agent.conf.d" / "events.conf").write_text(
            "[agent]\nevent_poll_interval = 0.1\n")
        agent, host = started(interval=60, heartbeat=30,
                              extra="[watch]\nprocesses = vmdiagevtd\n")
        host.accept()
        first = next_of(host, "report")  # the first report, 2 s after start
        assert first["sections"]["applications"]["data"]["processes"][0]["present"] is True
        child.kill()
        child.wait()
        report = next_of(host, "report", timeout=10)  # the interval is 60 s
        assert report["seq"] == first["seq"] + 1
        procs = report["sections"]["applications"]["data"]["processes"]
        assert procs == [{"name": "vmdiagevtd", "present": False, "count": 0}]
        checks = {r["id"]: r["status"] for r in report["sections"]["checks"]["data"]["results"]}
        assert checks["process.present:vmdiagevtd"] == "critical"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def next_of(host: HostSide, kind: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = host.next_message(max(0.1, deadline - time.monotonic()))
        if msg is not None and msg.get("type") == kind:
            return msg
    raise AssertionError("no %s message within %.0fs" % (kind, timeout))
