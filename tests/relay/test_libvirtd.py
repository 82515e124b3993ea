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
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from lab.vm.accel import choose_accel, libvirt_domain_type
from tests.real import require_module, unavailable
from tests.relay.test_session import until
from vdsm_hooks.relay.daemon import DaemonSettings, RelayDaemon
from vdsm_hooks.relay.session import Runstate, SessionConfig

libvirt = require_module("libvirt", "pip install libvirt-python")

pytestmark = pytest.mark.libvirt

URI = "qemu:///system"
CHANNELS = "/var/lib/libvirt/qemu/channels"
PIDFILE = "/run/libvirtd.pid"
PREFIX = "vmdiag-relay-t-"
#: Upper bound of every wait below; each returns as soon as its condition holds. libvirtd takes
#: tens of seconds to stop on a loaded machine with other domains running.
WAIT_S = 120

DOMAIN = """<domain type='{virt}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <devices>
    <emulator>{emulator}</emulator>
    <channel type='unix'>
      <source mode='bind' path='{channels}/{uuid}.org.vmdiag.agent.0'/>
      <target type='virtio' name='org.vmdiag.agent.0'/>
    </channel>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>"""


def _socket_up() -> bool:
    try:
        libvirt.openReadOnly(URI).close()
        return True
    except libvirt.libvirtError:
        return False


def _start_libvirtd() -> None:
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
            subprocess.run([daemon, "-d"], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while not _socket_up():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not come up within 30 s")
        time.sleep(0.2)


def _destroy_leftovers() -> None:
    """Destroy this file's transient domains left running by an interrupted earlier run: the
    relay under test would follow them too."""
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX) and dom.isActive():
                dom.destroy()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def system_libvirt():
    """A running system libvirtd with QEMU; started here (no systemd in CI) if needed."""
    emulator = shutil.which("qemu-system-x86_64")
    if emulator is None or shutil.which("libvirtd") is None:
        unavailable("needs libvirtd and qemu-system-x86_64 (apt-get install "
                    "libvirt-daemon-system qemu-system-x86)")
    if os.geteuid() != 0:
        unavailable("starting domains on qemu:///system needs root here")
    _start_libvirtd()
    if not os.path.isdir(CHANNELS):
        os.makedirs(CHANNELS, mode=0o775)
        owner = "libvirt-qemu" if shutil.which("dpkg") else "qemu"
        shutil.chown(CHANNELS, owner, owner)
    _destroy_leftovers()
    virt = libvirt_domain_type(choose_accel())  # the project's one choice (lab/vm/accel.py)
    return {"emulator": emulator, "virt": virt}


@pytest.fixture
async def make_domain(system_libvirt):
    """Creates transient test domains; async so that its libvirt connections (which register
    handles with the loop's libvirt event adapter) are closed while the loop still runs."""
    conn = libvirt.open(URI)
    made = []

    def make() -> libvirt.virDomain:
        vm_id = str(uuid.uuid4())
        xml = DOMAIN.format(name=PREFIX + vm_id[:8], uuid=vm_id, channels=CHANNELS,
                            **system_libvirt)
        dom = conn.createXML(xml, 0)
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
    settings = DaemonSettings(host_id="host-libvirtd", libvirt_uri=URI,
                              control_socket=str(tmp_path / "relay.sock"),
                              reconnect_max_backoff=1.0, recheck_interval=1.0)
    d = RelayDaemon(settings, session_config=SessionConfig(
        silence_timeout=1.0, reconnect_min_backoff=0.1, reconnect_max_backoff=1.0),
        accept=lambda info: info.name.startswith(PREFIX))
    await d.start()
    await d.discovery.wait_listed(1, timeout=WAIT_S)
    yield d
    await d.stop()


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
    await asyncio.to_thread(_start_libvirtd)

    await relay.discovery.wait_listed(generation + 1, timeout=60)
    await until(lambda: lose_id not in relay.sessions, timeout=WAIT_S, what="dead VM closed")
    assert relay.sessions.get(keep_id) is kept  # the live VM's session was never restarted
    assert kept.state is Runstate.CONNECTED
    assert relay.discovery.events["connection_closed"] >= 1
