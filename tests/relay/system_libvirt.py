"""What the relay's tests against the real system libvirtd share: the daemon, diskless domains
and a relay that follows only one test file's domains.

The domains are tiny and transient (or defined, for ``attach``), with no disk: they sit in their
firmware, so nobody in the guest ever speaks on the vmdiag channel, which QEMU still binds. Each
test file names its domains with its own prefix and its relay follows only that prefix, so VMs
that other tests run on the same libvirtd are left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Dict

from lab.vm.accel import choose_accel, libvirt_domain_type
from tests.real import require_module, unavailable
from vdsm_hooks.relay.daemon import DaemonSettings, RelayDaemon
from vdsm_hooks.relay.session import SessionConfig

libvirt = require_module("libvirt", "pip install libvirt-python")

URI = "qemu:///system"
CHANNELS = "/var/lib/libvirt/qemu/channels"
PIDFILE = "/run/libvirtd.pid"
#: The prefixes of the test files' domains; a run interrupted earlier may have left them running.
PREFIXES = ("vmdiag-relay-t-", "vmdiag-attach-t-")
#: Upper bound of every wait; each returns as soon as its condition holds. libvirtd takes tens of
#: seconds to stop on a loaded machine with other domains running.
WAIT_S = 120

DOMAIN = """<domain type='{virt}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <devices>
    <emulator>{emulator}</emulator>
    {devices}
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>"""

#: The channel as the VDSM hook adds it (a virtio-serial controller comes with it).
CHANNEL = """<channel type='unix'>
      <source mode='bind' path='{channels}/{uuid}.org.vmdiag.agent.0'/>
      <target type='virtio' name='org.vmdiag.agent.0'/>
    </channel>"""

#: No channel yet, but a virtio-serial controller to hot-plug one into.
CONTROLLER = "<controller type='virtio-serial' index='0'/>"


def domain_xml(libvirt_env: Dict[str, str], name: str, vm_id: str, devices: str) -> str:
    """A diskless domain; ``devices`` is :data:`CHANNEL` or :data:`CONTROLLER`."""
    return DOMAIN.format(name=name, uuid=vm_id,
                         devices=devices.format(channels=CHANNELS, uuid=vm_id), **libvirt_env)


def _socket_up() -> bool:
    try:
        libvirt.openReadOnly(URI).close()
        return True
    except libvirt.libvirtError:
        return False


def start_libvirtd() -> None:
    """Start virtlogd and libvirtd (no systemd in CI) unless they run; wait for the socket."""
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
            subprocess.run([daemon, "-d"], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while not _socket_up():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not come up within 30 s")
        time.sleep(0.2)


def _destroy_leftovers() -> None:
    """Destroy the test files' transient domains left running by an interrupted earlier run: the
    relays under test would follow them too."""
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIXES) and dom.isActive():
                dom.destroy()
    finally:
        conn.close()


def prepare_system_libvirt() -> Dict[str, str]:
    """A running system libvirtd with QEMU, the channel folder, no leftovers; returns the
    ``emulator`` and ``virt`` (domain type, the project's one choice in lab/vm/accel.py) that
    :func:`domain_xml` needs."""
    emulator = shutil.which("qemu-system-x86_64")
    if emulator is None or shutil.which("libvirtd") is None:
        unavailable("needs libvirtd and qemu-system-x86_64 (apt-get install "
                    "libvirt-daemon-system qemu-system-x86)")
    if os.geteuid() != 0:
        unavailable("starting domains on qemu:///system needs root here")
    start_libvirtd()
    if not os.path.isdir(CHANNELS):
        os.makedirs(CHANNELS, mode=0o775)
        owner = "libvirt-qemu" if shutil.which("dpkg") else "qemu"
        shutil.chown(CHANNELS, owner, owner)
    _destroy_leftovers()
    return {"emulator": emulator, "virt": libvirt_domain_type(choose_accel())}


@asynccontextmanager
async def following_relay(control_socket: str, host_id: str,
                          prefix: str) -> AsyncIterator[RelayDaemon]:
    """A relay on the system libvirtd that follows only the domains named ``prefix``..., with
    short timeouts, once it has listed the domains for the first time."""
    settings = DaemonSettings(host_id=host_id, libvirt_uri=URI, control_socket=control_socket,
                              reconnect_max_backoff=1.0, recheck_interval=1.0)
    daemon = RelayDaemon(settings, session_config=SessionConfig(
        silence_timeout=1.0, reconnect_min_backoff=0.1, reconnect_max_backoff=1.0),
        accept=lambda info: info.name.startswith(prefix))
    await daemon.start()
    try:
        await daemon.discovery.wait_listed(1, timeout=WAIT_S)
        yield daemon
    finally:
        await daemon.stop()
