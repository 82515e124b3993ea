"""The hook scripts run as VDSM runs them, on engine-generated domain XMLs.

Every output the hook writes is validated with libvirt's own schema (virt-xml-validate); every
failure path must exit 0 and leave the file byte for byte as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .helpers import (
    DATA,
    SAMPLES,
    canonical,
    canonical_without_vmdiag,
    run_hook,
    virt_xml_validate,
    vmdiag_channels,
    write_conf,
)

NEW_SAMPLES = [name for name in SAMPLES if name != "migration_incoming_ns0.xml"]


@pytest.fixture
def channels_dir(tmp_path):
    path = tmp_path / "channels"
    path.mkdir()
    return path


@pytest.fixture
def conf(tmp_path, channels_dir):
    return write_conf(tmp_path, "[hook]\ndefault = on\n[relay]\nchannels_dir = %s\n"
                      % channels_dir)


def copy_sample(tmp_path, name):
    target = tmp_path / name
    shutil.copyfile(DATA / name, target)
    return target


@pytest.mark.libvirt
@pytest.mark.parametrize("name", NEW_SAMPLES)
def test_start_adds_exactly_one_channel_and_nothing_else(tmp_path, conf, channels_dir, name):
    domxml = copy_sample(tmp_path, name)
    original = domxml.read_bytes()
    result = run_hook("before_vm_start", domxml, conf, SAMPLES[name], {"vmdiag": "on"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    out = domxml.read_bytes()
    channels = vmdiag_channels(out)
    assert len(channels) == 1
    source = channels[0].find("source")
    assert source.get("mode") == "bind"
    assert source.get("path") == "%s/%s.org.vmdiag.agent.0" % (channels_dir, SAMPLES[name])
    assert channels[0].find("target").get("type") == "virtio"
    assert canonical_without_vmdiag(out) == canonical(original)
    virt_xml_validate(domxml)


@pytest.mark.libvirt
def test_channel_sits_after_the_other_channels_with_their_indentation(tmp_path, conf):
    domxml = copy_sample(tmp_path, "el9_server_before_start.xml")
    run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name])
    text = domxml.read_text(encoding="utf-8")
    assert re.search(r'name="com\.redhat\.spice\.0" ?/>\n        </channel>\n'
                     r'        <channel type="unix">\n'
                     r'            <source mode="bind" path="[^"]+"/>\n'
                     r'            <target type="virtio" name="org\.vmdiag\.agent\.0"/>\n'
                     r'        </channel>\n        <controller', text), text
    virt_xml_validate(domxml)


def test_non_ascii_names_and_ovirt_namespaces_survive(tmp_path, conf):
    domxml = copy_sample(tmp_path, "windows2019_hyperv.xml")
    run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name], {"vmdiag": "on"})
    out = domxml.read_bytes()
    root = ET.fromstring(out)
    assert root.findtext("name") == "Сервер-бухгалтерии-Ω"
    assert root.findtext("title") == "Müller & Söhne — 会計サーバー"
    assert root.findtext("description") == "Buchhaltung (Jahresabschluss) · «не перезагружать» · 🧾"
    assert "Сервер-бухгалтерии-Ω".encode() in out  # written as UTF-8, not as character refs
    assert b"<ovirt-vm:vm>" in out and b'xmlns:ovirt-vm="http://ovirt.org/vm/1.0"' in out
    assert b'<hyperv>' in out and b'<spinlocks state="on" retries="8191"/>' in out
    assert len(vmdiag_channels(out)) == 1


@pytest.mark.libvirt
def test_ns0_prefixes_of_a_libvirt_dump_are_kept(tmp_path, conf):
    text = (DATA / "migration_incoming_ns0.xml").read_text(encoding="utf-8")
    without = re.sub(r"\n    <channel type=\"unix\">\n      <source mode=\"bind\" "
                     r"path=\"[^\"]+vmdiag\.agent\.0\"/>.*?</channel>", "", text, flags=re.S)
    assert "vmdiag" not in without
    domxml = tmp_path / "dump.xml"
    domxml.write_text(without, encoding="utf-8")
    result = run_hook("before_vm_start", domxml, conf, SAMPLES["migration_incoming_ns0.xml"])
    assert result.returncode == 0
    out = domxml.read_bytes()
    assert b'<ns0:qos xmlns:ns0="http://ovirt.org/vm/tune/1.0"/>' in out
    assert b'<ns1:vm xmlns:ns1="http://ovirt.org/vm/1.0">' in out
    assert len(vmdiag_channels(out)) == 1
    assert canonical_without_vmdiag(out) == canonical(without.encode())
    virt_xml_validate(domxml)


@pytest.mark.parametrize("default, prop", [("on", "off"), ("off", None), ("off", ""),
                                           ("on", " OFF ")])
def test_off_leaves_the_file_byte_for_byte(tmp_path, channels_dir, default, prop):
    conf = write_conf(tmp_path, "[hook]\ndefault = %s\n[relay]\nchannels_dir = %s\n"
                      % (default, channels_dir))
    domxml = copy_sample(tmp_path, "el9_server_before_start.xml")
    before = domxml.read_bytes()
    props = {} if prop is None else {"vmdiag": prop}
    result = run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name], props)
    assert result.returncode == 0
    assert domxml.read_bytes() == before


@pytest.mark.libvirt
def test_off_at_start_removes_a_channel_left_in_the_xml(tmp_path, conf):
    domxml = copy_sample(tmp_path, "migration_incoming_ns0.xml")
    before = domxml.read_bytes()
    result = run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name], {"vmdiag": "off"})
    assert result.returncode == 0, result.stderr
    out = domxml.read_bytes()
    assert vmdiag_channels(out) == []
    assert len(ET.fromstring(out).findall("devices/channel")) == 2
    expected = re.sub(rb"\n    <channel type=\"unix\">\n      <source mode=\"bind\" "
                      rb"path=\"[^\"]+vmdiag\.agent\.0\"/>.*?</channel>", b"", before, flags=re.S)
    assert canonical(out) == canonical(expected)
    virt_xml_validate(domxml)


@pytest.mark.parametrize("default, prop", [("off", "on"), ("on", None), ("on", "On")])
def test_on_by_property_or_host_default(tmp_path, channels_dir, default, prop):
    conf = write_conf(tmp_path, "[hook]\ndefault = %s\n[relay]\nchannels_dir = %s\n"
                      % (default, channels_dir))
    domxml = copy_sample(tmp_path, "compact_no_virtio_serial.xml")
    props = {} if prop is None else {"vmdiag": prop}
    assert run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name], props).returncode == 0
    assert len(vmdiag_channels(domxml.read_bytes())) == 1


def test_missing_main_config_means_default_on(tmp_path):
    domxml = copy_sample(tmp_path, "compact_no_virtio_serial.xml")
    result = run_hook("before_vm_start", domxml, tmp_path / "absent.conf", SAMPLES[domxml.name])
    assert result.returncode == 0, result.stderr
    [channel] = vmdiag_channels(domxml.read_bytes())
    assert channel.find("source").get("path") == (
        "/var/lib/libvirt/qemu/channels/%s.org.vmdiag.agent.0" % SAMPLES[domxml.name])


@pytest.mark.libvirt
def test_running_twice_gives_one_channel_and_the_same_bytes(tmp_path, conf):
    domxml = copy_sample(tmp_path, "windows2019_hyperv.xml")
    run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name])
    first = domxml.read_bytes()
    result = run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name])
    assert result.returncode == 0
    assert domxml.read_bytes() == first
    assert len(vmdiag_channels(first)) == 1
    virt_xml_validate(domxml)


def test_vm_id_falls_back_to_the_domain_uuid(tmp_path, conf, channels_dir):
    domxml = copy_sample(tmp_path, "compact_no_virtio_serial.xml")
    assert run_hook("before_vm_start", domxml, conf, None).returncode == 0
    [channel] = vmdiag_channels(domxml.read_bytes())
    assert channel.find("source").get("path") == "%s/%s.org.vmdiag.agent.0" % (
        channels_dir, SAMPLES[domxml.name])


@pytest.mark.parametrize("content, expect", [
    (b"<domain type='kvm'><devices><disk", "cannot read the domain XML"),
    (b"\xff\xfe not utf-8 at all", "cannot read the domain XML"),
    (b"", "cannot read the domain XML"),
    (b"<network><name>default</name></network>", "not a libvirt <domain>"),
    (b"<domain type='kvm'><name>x</name></domain>", "no <devices>"),
])
def test_unusable_xml_exits_0_untouched_and_says_why(tmp_path, conf, content, expect):
    domxml = tmp_path / "domxml"
    domxml.write_bytes(content)
    result = run_hook("before_vm_start", domxml, conf, "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d")
    assert result.returncode == 0
    assert domxml.read_bytes() == content
    stderr = result.stderr.decode()
    assert stderr.startswith("vmdiag hook: before_vm_start for VM 0a9b8c7d"), stderr
    assert expect in stderr


@pytest.mark.parametrize("props, vm_id, expect", [
    ({"vmdiag": "maybe"}, "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d", "neither 'on' nor 'off'"),
    ({}, "../../../etc/passwd", "is not a UUID"),
])
def test_bad_property_or_vm_id_exits_0_untouched(tmp_path, conf, props, vm_id, expect):
    domxml = copy_sample(tmp_path, "compact_no_virtio_serial.xml")
    before = domxml.read_bytes()
    result = run_hook("before_vm_start", domxml, conf, vm_id, props)
    assert result.returncode == 0
    assert domxml.read_bytes() == before
    assert expect in result.stderr.decode()


def test_missing_env_exits_0_with_a_message(tmp_path, conf):
    result = run_hook("before_vm_start", None, conf, "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d")
    assert result.returncode == 0
    assert "$_hook_domxml is not set" in result.stderr.decode()


def test_broken_config_exits_0_untouched_naming_the_file(tmp_path):
    conf = write_conf(tmp_path, "[hook]\ndefault = perhaps\n")
    domxml = copy_sample(tmp_path, "compact_no_virtio_serial.xml")
    before = domxml.read_bytes()
    result = run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name])
    assert result.returncode == 0
    assert domxml.read_bytes() == before
    stderr = result.stderr.decode()
    assert str(conf) in stderr and "[hook] default" in stderr and "on or off" in stderr


@pytest.fixture
def world_readable_dir():
    """A directory another user can read (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="vmdiag-hook-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_unwritable_file_exits_0_untouched(world_readable_dir):
    """VDSM runs hooks as the vdsm user; here an unprivileged user cannot write the file."""
    conf = write_conf(world_readable_dir, "[relay]\nchannels_dir = /run/vmdiag-test\n")
    domxml = copy_sample(world_readable_dir, "compact_no_virtio_serial.xml")
    domxml.chmod(0o444)
    conf.chmod(0o644)
    before = domxml.read_bytes()
    user = "nobody" if os.geteuid() == 0 else None
    result = run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name], user=user)
    assert result.returncode == 0
    assert domxml.read_bytes() == before
    assert "cannot write the domain XML back" in result.stderr.decode()


def test_script_runs_from_the_source_tree_without_pythonpath(tmp_path, conf):
    domxml = copy_sample(tmp_path, "compact_no_virtio_serial.xml")
    result = run_hook("before_vm_start", domxml, conf, SAMPLES[domxml.name],
                      source_tree_only=True)
    assert result.returncode == 0, result.stderr
    assert len(vmdiag_channels(domxml.read_bytes())) == 1


@pytest.mark.libvirt
@pytest.mark.parametrize("point", ["before_vm_migrate_destination", "before_vm_dehibernate"])
def test_frozen_abi_points_only_fix_the_socket_path(tmp_path, conf, channels_dir, point):
    domxml = copy_sample(tmp_path, "migration_incoming_ns0.xml")
    before = domxml.read_bytes()
    result = run_hook(point, domxml, conf, SAMPLES[domxml.name], {"vmdiag": "off"})
    assert result.returncode == 0, result.stderr
    out = domxml.read_bytes()
    [channel] = vmdiag_channels(out)
    assert channel.find("source").get("path") == "%s/%s.org.vmdiag.agent.0" % (
        channels_dir, SAMPLES[domxml.name])
    assert channel.find("address").get("port") == "3"
    assert len(ET.fromstring(out).findall("devices/channel")) == 3
    expected = before.replace(b"/srv/vmdiag-old/channels", str(channels_dir).encode())
    assert canonical(out) == canonical(expected)
    virt_xml_validate(domxml)


@pytest.mark.parametrize("point", ["before_vm_migrate_destination", "before_vm_dehibernate"])
def test_frozen_abi_points_never_add_a_device(tmp_path, conf, point):
    domxml = copy_sample(tmp_path, "el9_server_before_start.xml")
    before = domxml.read_bytes()
    result = run_hook(point, domxml, conf, SAMPLES[domxml.name], {"vmdiag": "on"})
    assert result.returncode == 0
    assert domxml.read_bytes() == before
