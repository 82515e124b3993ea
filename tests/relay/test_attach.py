"""``vmdiag-relay attach|detach`` against libvirt: the test driver for the refusals, and a real
system libvirtd with diskless QEMU domains (as test_libvirtd) for hot-plug and definitions."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.real import require_module
from tests.relay.test_daemon import cli
from tests.relay.test_libvirtd import CHANNELS, URI, system_libvirt  # noqa: F401
from vdsm_hooks.domxml import channel_xml
from vdsm_hooks.relay import attach

libvirt = require_module("libvirt", "pip install libvirt-python")

pytestmark = pytest.mark.libvirt

BARE = """<domain type='{virt}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <devices>
    <emulator>{emulator}</emulator>
    <controller type='virtio-serial' index='0'/>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>"""


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


@pytest.fixture
def real_conn(system_libvirt):  # noqa: F811
    conn = libvirt.open(URI)
    made = []

    def make(persistent: bool):
        vm_id = str(uuid.uuid4())
        xml = BARE.format(name="vmdiag-attach-t-" + vm_id[:8], uuid=vm_id, **system_libvirt)
        if persistent:
            dom = conn.defineXML(xml)
            dom.create()
        else:
            dom = conn.createXML(xml, 0)
        made.append(dom)
        return dom

    yield make
    for dom in made:
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError:
            pass
    conn.close()


def test_hot_plug_into_a_transient_domain_only_with_live(real_conn):
    dom = real_conn(persistent=False)
    name = dom.name()
    refused, = attach.run(libvirt, URI, [name], False, True, False, CHANNELS)
    assert not refused.done and "transient domain" in refused.message
    assert not has_channel(dom.XMLDesc(0))
    done, = attach.run(libvirt, URI, [name], False, True, True, CHANNELS)
    assert done.done and done.message == "channel added to the running domain", done
    assert has_channel(dom.XMLDesc(0))
    assert os.path.exists("%s/%s.org.vmdiag.agent.0" % (CHANNELS, dom.UUIDString()))
    again, = attach.run(libvirt, URI, [dom.UUIDString()], False, True, True, CHANNELS)
    assert again.done and again.message == "already has the channel"
    gone, = attach.run(libvirt, URI, [name], False, False, True, CHANNELS)
    assert gone.done and not has_channel(dom.XMLDesc(0)), gone


async def test_attach_and_detach_a_persistent_running_domain_through_the_cli(real_conn,
                                                                              tmp_path):
    dom = real_conn(persistent=True)
    conf = tmp_path / "relay.conf"
    conf.write_text("[relay]\nhost_id = h\nlibvirt_uri = %s\n" % URI)
    code, out, err = await cli("attach", dom.name(), "--config", str(conf))
    assert code == 0, out + err
    assert "channel added to the running domain and the persistent definition" in out
    assert has_channel(dom.XMLDesc(0))
    assert has_channel(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    code, out, err = await cli("detach", dom.UUIDString(), "--config", str(conf))
    assert code == 0 and "channel removed from the running domain and the persistent" in out
    assert not has_channel(dom.XMLDesc(0))
    assert not has_channel(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
