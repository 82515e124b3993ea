"""The relay against a real system libvirtd and real QEMU guests.

Each guest is a tiny transient domain with no disk that sits in its firmware: its vmdiag
channel socket still exists (QEMU binds it), nobody in the guest ever speaks on it, and the
relay must connect, tolerate the silence, close when the domain goes, and survive a libvirtd
restart by listing again. Only the domains these tests create are followed (``accept``), so
VMs that other tests run on the same libvirtd are left alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest

from tests.relay.system_libvirt import (
    CHANNEL,
    CHANNELS,
    PIDFILE,
    URI,
    WAIT_S,
    domain_xml,
    following_relay,
    libvirt,
    start_libvirtd,
)
from tests.relay.test_session import until
from vdsm_hooks.relay.session import Runstate

pytestmark = pytest.mark.libvirt

PREFIX = "vmdiag-relay-t-"


@pytest.fixture
async def make_domain(system_libvirt):
    """Creates transient test domains; async so that its libvirt connections (which register
    handles with the loop's libvirt event adapter) are closed while the loop still runs."""
    conn = libvirt.open(URI)
    made = []

    def make() -> libvirt.virDomain:
        vm_id = str(uuid.uuid4())
        dom = conn.createXML(domain_xml(system_libvirt, PREFIX + vm_id[:8], vm_id, CHANNEL), 0)
        made.append(vm_id)
        return dom

    yield make
    try:
        conn.close()  # it may have died with a libvirtd restart
    except libvirt.libvirtError:
        pass
    live = libvirt.open(URI)
    for vm_id in made:
        try:
            live.lookupByUUIDString(vm_id).destroy()
        except libvirt.libvirtError:
            pass  # already gone
    live.close()


@pytest.fixture
async def relay(tmp_path, system_libvirt):
    async with following_relay(str(tmp_path / "relay.sock"), "host-libvirtd", PREFIX) as d:
        yield d


async def test_a_started_domain_is_connected_and_a_destroyed_one_closed(relay, make_domain):
    dom = make_domain()
    vm_id = dom.UUIDString()
    await until(lambda: vm_id in relay.sessions, timeout=WAIT_S, what="session for the domain")
    session = relay.sessions[vm_id]
    assert session.socket_path == "%s/%s.org.vmdiag.agent.0" % (CHANNELS, vm_id)
    await session.wait_state(Runstate.CONNECTED, timeout=WAIT_S)
    # the firmware never speaks: the channel stays connected, the agent is unresponsive
    await until(lambda: session.entry.responsive is False, timeout=10, what="unresponsive")
    assert session.state is Runstate.CONNECTED
    assert [vm["vm_id"] for vm in relay.status()["vms"]] == [vm_id]

    dom.suspend()
    await until(lambda: session.entry.vm_state == "paused", timeout=10, what="paused")
    dom.resume()
    await until(lambda: session.entry.vm_state == "running", timeout=10, what="running")

    dom.destroy()
    await until(lambda: vm_id not in relay.sessions, timeout=WAIT_S, what="session closed")
    await session.wait_state(Runstate.CLOSED, timeout=10)
    assert relay.cache.get(vm_id) is None


async def test_libvirtd_restart_relists_keeps_live_vms_and_drops_dead_ones(relay, make_domain):
    keep, lose = make_domain(), make_domain()
    keep_id, lose_id = keep.UUIDString(), lose.UUIDString()
    await until(lambda: keep_id in relay.sessions and lose_id in relay.sessions, timeout=WAIT_S,
                what="both sessions")
    kept = relay.sessions[keep_id]
    await kept.wait_state(Runstate.CONNECTED, timeout=WAIT_S)
    generation = relay.discovery.generation
    with open("/run/libvirt/qemu/%s.pid" % lose.name()) as f:
        qemu_pid = int(f.read())

    with open(PIDFILE) as f:
        libvirtd_pid = int(f.read())
    os.kill(libvirtd_pid, signal.SIGTERM)
    await until(lambda: not os.path.exists("/proc/%d" % libvirtd_pid), timeout=WAIT_S,
                what="libvirtd to exit")
    await until(lambda: not relay.discovery.connected, timeout=WAIT_S, what="relay to notice")
    os.kill(qemu_pid, signal.SIGKILL)  # this VM dies while nobody watches
    await asyncio.to_thread(start_libvirtd)

    await relay.discovery.wait_listed(generation + 1, timeout=60)
    await until(lambda: lose_id not in relay.sessions, timeout=WAIT_S, what="dead VM closed")
    assert relay.sessions.get(keep_id) is kept  # the live VM's session was never restarted
    assert kept.state is Runstate.CONNECTED
    assert relay.discovery.events["connection_closed"] >= 1
