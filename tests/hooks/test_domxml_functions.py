"""The pure domain-XML functions, on minidom documents as VDSM's read_domxml returns them."""

from __future__ import annotations

from xml.dom import minidom

import pytest

from vdsm_hooks.domxml import (
    DomainXMLError,
    PropertyError,
    add_channel,
    apply,
    canonical_uuid,
    find_channels,
    remove_channel,
    wants_channel,
)

from .helpers import DATA, SAMPLES, canonical


def load(name):
    return minidom.parseString((DATA / name).read_bytes().decode("utf-8"))


@pytest.mark.parametrize("env, default, expected", [
    ({}, True, True), ({}, False, False), ({"vmdiag": ""}, False, False),
    ({"vmdiag": "on"}, False, True), ({"vmdiag": "off"}, True, False),
    ({"vmdiag": " ON\n"}, False, True), ({"other": "off"}, True, True),
])
def test_wants_channel(env, default, expected):
    assert wants_channel(env, default) is expected


@pytest.mark.parametrize("value", ["yes", "1", "true", "onn", "of"])
def test_wants_channel_rejects_anything_but_on_off(value):
    with pytest.raises(PropertyError, match="UserDefinedVMProperties"):
        wants_channel({"vmdiag": value}, True)


def test_add_then_remove_gives_back_the_same_document():
    for name in SAMPLES:
        dom = load(name)
        original = canonical(dom.toxml(encoding="utf-8"))
        remove_channel(dom)  # the migration sample has one already
        without = canonical(dom.toxml(encoding="utf-8"))
        assert add_channel(dom, SAMPLES[name]) is True
        assert len(find_channels(dom)) == 1
        assert add_channel(dom, SAMPLES[name]) is False
        assert len(find_channels(dom)) == 1
        assert remove_channel(dom) == 1
        assert canonical(dom.toxml(encoding="utf-8")) == without
        if name != "migration_incoming_ns0.xml":
            assert without == original


def test_channel_path_uses_canonical_uuid_and_channels_dir():
    dom = load("compact_no_virtio_serial.xml")
    add_channel(dom, "0A9B8C7D-6E5F-4A3B-8C2D-1E0F9A8B7C6D", "/srv/ch/")
    [channel] = find_channels(dom)
    source = channel.getElementsByTagName("source")[0]
    assert source.getAttribute("path") == (
        "/srv/ch/0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d.org.vmdiag.agent.0")


@pytest.mark.parametrize("bad", ["", "../../x", "0a9b8c7d/../../etc", "not-a-uuid"])
def test_canonical_uuid_refuses_anything_that_is_not_a_uuid(bad):
    with pytest.raises(DomainXMLError):
        canonical_uuid(bad)


def test_apply_refuses_unknown_hook_points():
    dom = load("compact_no_virtio_serial.xml")
    with pytest.raises(DomainXMLError, match="does not edit"):
        apply("after_vm_start", dom, {}, True)


def test_apply_frozen_point_does_not_remove_even_when_off():
    dom = load("migration_incoming_ns0.xml")
    apply("before_vm_migrate_destination", dom, {"vmdiag": "off"}, False,
          "/var/lib/libvirt/qemu/channels")
    assert len(find_channels(dom)) == 1


def test_domain_without_devices_is_refused():
    dom = minidom.parseString("<domain type='kvm'><name>x</name></domain>")
    with pytest.raises(DomainXMLError, match="no <devices>"):
        add_channel(dom, "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d")


def test_empty_devices_gets_the_channel():
    dom = minidom.parseString("<domain type='kvm'><name>x</name><devices/></domain>")
    assert add_channel(dom, "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d")
    assert dom.documentElement.toxml() == (
        '<domain type="kvm"><name>x</name><devices><channel type="unix"><source mode="bind" '
        'path="/var/lib/libvirt/qemu/channels/0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d.'
        'org.vmdiag.agent.0"/><target type="virtio" name="org.vmdiag.agent.0"/></channel>'
        '</devices></domain>')
