"""``vmdiag-relay attach|detach`` against libvirt: the test driver for the refusals, and a real
system libvirtd with diskless QEMU domains (as test_libvirtd) for hot-plug and definitions."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.relay.system_libvirt import (
    CHANNELS,
    CONTROLLER,
    URI,
    WAIT_S,
    domain_xml,
    following_relay,
    libvirt,
)
from tests.relay.test_daemon import cli
from tests.relay.test_session import until
from vdsm_hooks.domxml import channel_xml
from vdsm_hooks.relay import attach

pytestmark = pytest.mark.libvirt

#: This file's domains; test_libvirtd's relay follows only its own prefix, never these.
PREFIX = "vmdiag-attach-t-"

def has_channel(xml: str) -> bool:
    return "org.vmdiag.agent.0" in xml


def test_channel_xml_is_the_hooks_channel():
    vm = str(uuid.uuid4())
    xml = channel_xml(vm)
    assert xml == ("<channel type=\"unix\">"
                   "<source mode=\"bind\" path=\"%s/%s.org.vmdiag.agent.0\"/>"
                   "<target type=\"virtio\" name=\"org.vmdiag.agent.0\"/></channel>"
                   % (CHANNELS, vm))


def test_vdsm_hosts_are_recognised(tmp_path):
    assert attach.vdsm_host(str(tmp_path)) is None
    (tmp_path / "etc" / "vdsm").mkdir(parents=True)
    (tmp_path / "etc" / "vdsm" / "vdsm.id").write_text("x\n")
    assert attach.vdsm_host(str(tmp_path)) == str(tmp_path / "etc/vdsm/vdsm.id")


def test_domains_without_virtio_serial_and_unknown_names_are_refused():
    outcomes = attach.run(libvirt, "test:///default", ["test", "nonesuch"], False, True, False,
                          CHANNELS)
    assert [o.done for o in outcomes] == [False, False]
    assert "'test' domain has no virtio-serial" in outcomes[0].message
    assert outcomes[1].message == "no such domain in test:///default"


async def test_attach_cli_needs_names_or_all():
    code, _, err = await cli("attach")
    assert code == 2 and "name the domains, or --all" in err


def virsh(*args: str) -> str:
    out = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                         timeout=WAIT_S)
    assert out.returncode == 0, "virsh %s: %s" % (" ".join(args), out.stderr or out.stdout)
    return out.stdout


@pytest.fixture(scope="module")
def domain(system_libvirt, tmp_path_factory):
    """One running domain for the whole module, persistent until a test makes it transient.

    The tests share it (by name, through virsh, so no libvirt connection of this module outlives
    an event loop the relay tests registered), and take its persistence away last.
    """
    vm_id = str(uuid.uuid4())
    name = PREFIX + vm_id[:8]
    xml = tmp_path_factory.mktemp("attach") / "domain.xml"
    xml.write_text(domain_xml(system_libvirt, name, vm_id, CONTROLLER))
    virsh("define", str(xml))
    try:
        virsh("start", name)
        yield name, vm_id
    finally:
        for args in (("destroy", name), ("undefine", name)):
            subprocess.run(["virsh", "-c", URI, *args], capture_output=True, timeout=WAIT_S)


def live_xml(name: str, inactive: bool = False) -> str:
    return virsh("dumpxml", *(["--inactive"] if inactive else []), name)


async def test_attach_and_detach_a_persistent_running_domain_through_the_cli(domain, tmp_path):
    name, vm_id = domain
    conf = tmp_path / "relay.conf"
    conf.write_text("[relay]\nhost_id = h\nlibvirt_uri = %s\n" % URI)
    code, out, err = await cli("attach", name, "--config", str(conf))
    assert code == 0, out + err
    assert "channel added to the running domain and the persistent definition" in out
    assert has_channel(live_xml(name))
    assert has_channel(live_xml(name, inactive=True))
    code, out, err = await cli("detach", vm_id, "--config", str(conf))
    assert code == 0 and "channel removed from the running domain and the persistent" in out
    assert not has_channel(live_xml(name))
    assert not has_channel(live_xml(name, inactive=True))


def test_hot_plug_into_a_transient_domain_only_with_live(domain):
    name, vm_id = domain
    virsh("undefine", name)  # still running: now a transient domain
    refused, = attach.run(libvirt, URI, [name], False, True, False, CHANNELS)
    assert not refused.done and "transient domain" in refused.message
    assert not has_channel(live_xml(name))
    done, = attach.run(libvirt, URI, [name], False, True, True, CHANNELS)
    assert done.done and done.message == "channel added to the running domain", done
    assert has_channel(live_xml(name))
    assert os.path.exists("%s/%s.org.vmdiag.agent.0" % (CHANNELS, vm_id))
    again, = attach.run(libvirt, URI, [vm_id], False, True, True, CHANNELS)
    assert again.done and again.message == "already has the channel"
    gone, = attach.run(libvirt, URI, [name], False, False, True, CHANNELS)
    assert gone.done and not has_channel(live_xml(name)), gone


@pytest.fixture
async def relay(tmp_path, system_libvirt):
    async with following_relay(str(tmp_path / "relay.sock"), "host-attach", PREFIX) as d:
        yield d


async def test_the_relay_follows_a_channel_hot_plugged_and_unplugged(domain, relay, tmp_path):
    name, vm_id = domain
    conf = tmp_path / "relay.conf"
    conf.write_text("[relay]\nhost_id = h\nlibvirt_uri = %s\n" % URI)
    code, out, err = await cli("detach", name, "--live", "--config", str(conf))
    assert code == 0, out + err  # (already without the channel after the test before)
    await until(lambda: relay.discovery.generation >= 1, timeout=WAIT_S, what="listed")
    assert vm_id not in relay.sessions
    code, out, err = await cli("attach", name, "--live", "--config", str(conf))
    assert code == 0, out + err
    # libvirt's device-added event, not a new listing, brings the VM to the relay
    await until(lambda: vm_id in relay.sessions, timeout=WAIT_S, what="a session for the VM")
    assert relay.discovery.events["device_added"] >= 1 and relay.discovery.generation == 1
    assert relay.sessions[vm_id].socket_path == "%s/%s.org.vmdiag.agent.0" % (CHANNELS, vm_id)
    code, out, err = await cli("detach", name, "--live", "--config", str(conf))
    assert code == 0, out + err
    await until(lambda: vm_id not in relay.sessions, timeout=WAIT_S, what="the session closed")
    assert relay.discovery.events["device_removed"] >= 1
