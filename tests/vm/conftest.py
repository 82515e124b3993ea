"""Fixtures of the real-guest tests: one image, one libvirtd, one booted guest per session.

Booting under TCG takes a while, so the guest is session-scoped and shared by every ``vm``
test. Progress of the image build and the boot is printed live (pytest's capture is paused
for it), so a CI log shows what the first test is waiting for.

The tests skip, saying why, only when this machine cannot run them at all (not root, tools not
installed); under $VMDIAG_REQUIRE_REAL=1 (scripts/test, CI) those skips are failures
(``tests/real.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

import pytest

from lab.prometheus import free_port
from lab.vm import image as image_mod
from lab.vm.feeds import ChannelFeed
from lab.vm.libvirt_env import Guest, ensure_daemons
from lab.vm.progress import log
from lab.vm.relay_feed import RelayFeed, relay_available
from tests.real import unavailable

TOOLS = ("debootstrap", "chroot", "mkfs.ext4", "qemu-img", "qemu-system-x86_64", "libvirtd",
         "virtlogd")
ARTIFACTS = os.path.join(image_mod.SOURCE_ROOT, "tests", "artifacts", "vm")


def _cannot_run(reason: str) -> None:
    unavailable(reason)


def _live(request: pytest.FixtureRequest) -> contextlib.AbstractContextManager:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()


@pytest.fixture(scope="session")
def vm_host() -> None:
    """Check that this machine can build and boot the guest at all."""
    if os.geteuid() != 0:
        _cannot_run("the VM tests need root (debootstrap, chroot, libvirtd)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        _cannot_run("missing %s: apt-get install debootstrap e2fsprogs qemu-utils "
                    "qemu-system-x86 libvirt-daemon-system" % ", ".join(missing))


@pytest.fixture(scope="session")
def guest_image(vm_host: None, request: pytest.FixtureRequest) -> image_mod.GuestImage:
    """The cached guest image, built first if needed (about two minutes the first time)."""
    with _live(request):
        return image_mod.ensure_image()


@pytest.fixture(scope="session")
def libvirt_conn(vm_host: None, request: pytest.FixtureRequest):
    with _live(request):
        conn = ensure_daemons()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def guest(guest_image: image_mod.GuestImage, libvirt_conn,
          request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A booted guest, created through libvirtd with the VDSM hook applied to its XML."""
    runs = os.path.join(image_mod.cache_dir(), "runs")
    os.makedirs(runs, exist_ok=True)
    with _live(request):
        vm = Guest(libvirt_conn, guest_image, run_dir=tempfile.mkdtemp(prefix="guest-", dir=runs))
    try:
        with _live(request):
            vm.start()
            vm.wait_for_boot()
        yield vm
    finally:
        os.makedirs(ARTIFACTS, exist_ok=True)
        for name in ("console.log", "domain.xml"):
            path = os.path.join(vm.run_dir, name)
            if os.path.exists(path):
                shutil.copy(path, os.path.join(ARTIFACTS, name))
        with _live(request):
            log("guest console log kept at %s" % os.path.join(ARTIFACTS, "console.log"))
        vm.destroy()
        shutil.rmtree(vm.run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def report_feed(guest: Guest, request: pytest.FixtureRequest):
    """Reports of the guest as the host receives them: through the real relay daemon when it is
    in the tree (its log is kept in tests/artifacts/vm/relay.log; it serves /metrics at
    ``feed.metrics_address``), else straight off the channel socket."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    with _live(request):
        if relay_available():  # with /metrics, for the Prometheus test
            feed = RelayFeed(guest.vm_id, os.path.join(ARTIFACTS, "relay.log"),
                             metrics_port=free_port())
        else:
            log("vdsm_hooks/relay/cli.py is not in the tree: reading the channel directly")
            feed = ChannelFeed(guest.channel_path)
    yield feed
    feed.close()
