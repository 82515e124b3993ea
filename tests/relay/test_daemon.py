"""The daemon end to end on libvirt's test driver: events -> sessions -> cache -> control -> CLI.

``test:///default`` is libvirt's in-process test driver: real libvirt event plumbing
(libvirtaio, lifecycle callbacks, live XML) without a libvirtd. Its domains' channels point at
fake guests on real unix sockets, so everything from the event to the CLI's table is real.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid

import pytest

from lab.fake_guest import FakeGuest, hello, sample_report
from tests.real import require_module
from tests.relay.test_session import until
from vdsm_hooks.relay.control import ControlError, call
from vdsm_hooks.relay.daemon import DaemonSettings, RelayDaemon
from vdsm_hooks.relay.discovery import DomainInfo, channel_socket
from vdsm_hooks.relay.session import Runstate, SessionConfig

libvirt = require_module("libvirt", "pip install libvirt-python")

pytestmark = pytest.mark.libvirt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DOMAIN = """<domain type='test'>
  <name>{name}</name><uuid>{uuid}</uuid><memory>65536</memory>
  <os><type>hvm</type></os>
  <devices>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channels/{uuid}.com.redhat.rhevm.vdsm'/>
      <target type='virtio' name='com.redhat.rhevm.vdsm'/>
    </channel>
    {channel}
  </devices>
</domain>"""
CHANNEL = """<channel type='unix'><source mode='bind' path='{path}'/>
      <target type='virtio' name='org.vmdiag.agent.0'/></channel>"""


def domain_xml(name: str, vm_id: str, path: str | None) -> str:
    return DOMAIN.format(name=name, uuid=vm_id,
                         channel=CHANNEL.format(path=path) if path else "")


def test_channel_socket_is_read_from_the_domain_xml():
    vm = str(uuid.uuid4())
    assert channel_socket(domain_xml("a", vm, "/x/y.sock")) == "/x/y.sock"
    assert channel_socket(domain_xml("a", vm, None)) is None  # only oVirt's own channel
    assert channel_socket("<domain><devices><channel type='unix'><target type='virtio' "
                          "name='org.vmdiag.agent.0'/></channel></devices></domain>") is None
    assert channel_socket("not xml <") is None


@pytest.fixture
async def conn():
    c = libvirt.open("test:///default")
    yield c
    for dom in c.listAllDomains():
        if dom.name().startswith("vmdiag-t-") and dom.isActive():
            dom.destroy()
    c.close()


@pytest.fixture
async def daemon(tmp_path):
    settings = DaemonSettings(host_id="host-t", libvirt_uri="test:///default",
                              control_socket=str(tmp_path / "run" / "relay.sock"), max_vms=3)
    d = RelayDaemon(settings, session_config=SessionConfig(reconnect_min_backoff=0.05,
                                                           reconnect_max_backoff=0.2))
    await d.start()
    await d.discovery.wait_listed(1, timeout=10)
    yield d
    await d.stop()


async def ctl(daemon: RelayDaemon, request: dict) -> dict:
    """The synchronous client, in a thread, as the CLI and the hook use it."""
    return await asyncio.to_thread(call, daemon.settings.control_socket, request, 10)


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vdsm_hooks.relay.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


async def test_started_domain_is_followed_shown_and_closed_when_destroyed(daemon, conn, tmp_path):
    guest = await FakeGuest(str(tmp_path / "g1.sock"), auto_reply=True).start()
    try:
        dom = conn.createXML(domain_xml("vmdiag-t-web", guest.vm_id, guest.path), 0)
        await until(lambda: guest.vm_id in daemon.sessions, what="session for the new domain")
        session = daemon.sessions[guest.vm_id]
        await session.wait_state(Runstate.CONNECTED, timeout=5)
        await guest.send(hello("3.0"), sample_report(seq=4, worst="critical"))
        await until(lambda: session.entry.summary is not None, what="report")

        status = await ctl(daemon, {"cmd": "status"})
        row = next(r for r in status["vms"] if r["vm_id"] == guest.vm_id)
        assert row["name"] == "vmdiag-t-web" and row["agent_version"] == "3.0"
        assert row["state"] == "connected" and row["worst_check"]["status"] == "critical"
        assert status["libvirt"]["connected"] and status["upload"] is None

        shown = await ctl(daemon, {"cmd": "show", "vm": "vmdiag-t-web"})
        assert shown["vm"]["report"]["seq"] == 4
        assert shown["vm"]["hello"]["agent_version"] == "3.0"

        answer = await ctl(daemon, {"cmd": "request", "vm": guest.vm_id, "method": "report.now"})
        assert answer["result"] == {"method": "report.now"}
        assert guest.requests[-1]["method"] == "report.now"

        code, out, err = await cli("status", "--socket", daemon.settings.control_socket)
        assert code == 0, err
        assert "vmdiag-t-web" in out and "CRIT mem.available" in out and "3.0" in out
        code, out, err = await cli("show", "vmdiag-t-web", "--socket",
                                   daemon.settings.control_socket)
        assert code == 0, err
        assert "CRIT mem.available: Only 12% of memory" in out
        assert "report seq 4 of run run-1" in out
        code, out, _ = await cli("show", guest.vm_id, "--json", "--socket",
                                 daemon.settings.control_socket)
        assert json.loads(out)["report"]["seq"] == 4

        dom.suspend()
        await until(lambda: session.entry.vm_state == "paused", what="paused")
        assert session.paused
        dom.resume()
        await until(lambda: session.entry.vm_state == "running", what="resumed")

        dom.destroy()
        await until(lambda: guest.vm_id not in daemon.sessions, what="session closed")
        await session.wait_state(Runstate.CLOSED, timeout=5)
        assert not any(r["vm_id"] == guest.vm_id
                       for r in (await ctl(daemon, {"cmd": "status"}))["vms"])
        code, _, err = await cli("show", "vmdiag-t-web", "--socket",
                                 daemon.settings.control_socket)
        assert code == 1 and "no VM 'vmdiag-t-web'" in err
    finally:
        await guest.close()


async def test_domains_without_the_channel_are_ignored(daemon, conn):
    conn.createXML(domain_xml("vmdiag-t-plain", str(uuid.uuid4()), None), 0)
    await asyncio.sleep(0.3)
    assert not daemon.sessions
    assert daemon.discovery.events["up"] >= 1


async def test_relay_started_late_lists_running_domains(conn, tmp_path):
    guest = await FakeGuest(str(tmp_path / "early.sock")).start()
    conn.createXML(domain_xml("vmdiag-t-early", guest.vm_id, guest.path), 0)
    settings = DaemonSettings(host_id="h", libvirt_uri="test:///default",
                              control_socket=str(tmp_path / "c.sock"))
    d = RelayDaemon(settings)
    await d.start()
    try:
        await d.discovery.wait_listed(1, timeout=10)
        assert guest.vm_id in d.sessions
        await guest.connected()
    finally:
        await d.stop()
        await guest.close()


async def test_vm_destroyed_from_the_hook_closes_the_session_at_once(daemon, tmp_path):
    guest = await FakeGuest(str(tmp_path / "h.sock")).start()
    try:
        daemon.domain_up(DomainInfo(guest.vm_id, "vmdiag-t-hook", guest.path))
        await guest.connected()
        # exactly what vdsm_hooks.hook_runner.notify_relay does: send, do not read
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(daemon.settings.control_socket)
            s.sendall(json.dumps({"cmd": "vm_destroyed", "vm_id": guest.vm_id.upper()}
                                 ).encode() + b"\n")
        await until(lambda: guest.vm_id not in daemon.sessions, what="hook closes the session")
        assert (await ctl(daemon, {"cmd": "vm_destroyed", "vm_id": guest.vm_id})) == {
            "ok": True, "closed": False}
    finally:
        await guest.close()


async def test_reconcile_after_relisting_and_the_max_vms_cap(daemon, tmp_path):
    infos = [DomainInfo(str(uuid.uuid4()), "vmdiag-t-%d" % i, str(tmp_path / ("%d.s" % i)))
             for i in range(4)]
    for info in infos:
        daemon.domain_up(info)
    assert len(daemon.sessions) == 3 and daemon.refused_vms == 1  # max_vms = 3
    daemon.domain_up(infos[0])  # told again: the same session is kept
    assert len(daemon.sessions) == 3
    daemon.domains_listed([infos[1]], complete=False)  # partial listing closes nothing
    assert len(daemon.sessions) == 3
    daemon.domains_listed([infos[1]], complete=True)
    assert list(daemon.sessions) == [infos[1].vm_id]
    moved = DomainInfo(infos[1].vm_id, infos[1].name, str(tmp_path / "moved.s"))
    daemon.domain_up(moved)
    assert daemon.sessions[moved.vm_id].socket_path == moved.socket_path


async def test_recheck_closes_unreachable_vms_that_libvirt_no_longer_runs(daemon, conn,
                                                                         tmp_path):
    ghost = DomainInfo(str(uuid.uuid4()), "vmdiag-t-ghost", str(tmp_path / "ghost.s"))
    alive_id = str(uuid.uuid4())
    conn.createXML(domain_xml("vmdiag-t-alive", alive_id, str(tmp_path / "alive.s")), 0)
    await until(lambda: alive_id in daemon.sessions, what="alive session")
    daemon.domain_up(ghost)  # e.g. died while libvirtd was down: no event will come
    for vm in (ghost.vm_id, alive_id):
        await daemon.sessions[vm].wait_state(Runstate.BACKOFF, timeout=5)
    await daemon.recheck()
    assert ghost.vm_id not in daemon.sessions
    assert alive_id in daemon.sessions  # libvirt runs it: its socket may yet appear


async def test_control_refuses_bad_requests_with_advice(daemon):
    with pytest.raises(ControlError, match="unknown command"):
        await ctl(daemon, {"cmd": "rm -rf"})
    with pytest.raises(ControlError, match="say which VM"):
        await ctl(daemon, {"cmd": "show"})
    with pytest.raises(ControlError, match="method must be one of"):
        await ctl(daemon, {"cmd": "request", "vm": "nope", "method": "exec"})
    with pytest.raises(ControlError, match="'vmdiag-relay status' lists them"):
        await ctl(daemon, {"cmd": "request", "vm": "nope", "method": "ping"})
    mode = os.stat(daemon.settings.control_socket).st_mode & 0o777
    assert mode == 0o660
    reader, writer = await asyncio.open_unix_connection(daemon.settings.control_socket)
    writer.write(b"\xff not json\n")
    answer = json.loads(await reader.readline())
    writer.close()
    assert answer["ok"] is False and "one JSON object per line" in answer["error"]


async def test_a_second_relay_on_the_same_socket_is_refused(daemon):
    other = RelayDaemon(daemon.settings)
    with pytest.raises(ControlError, match="another vmdiag-relay"):
        await other.control.start()


async def test_vmdiag_relay_run_starts_serves_and_stops_on_sigterm(tmp_path):
    sock = tmp_path / "r.sock"
    conf = tmp_path / "relay.conf"
    conf.write_text("[relay]\nhost_id = host-cli\nlibvirt_uri = test:///default\n"
                    "control_socket = %s\n" % sock)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vdsm_hooks.relay.cli", "run", "--config", str(conf),
        "--foreground", cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    try:
        await until(lambda: sock.exists(), timeout=20, what="control socket")
        status = await asyncio.to_thread(call, str(sock), {"cmd": "status"})
        assert status["host_id"] == "host-cli" and status["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "vmdiag-relay stopped" in err.decode()
    assert not sock.exists()
