"""The generated domain XML: what libvirt and the VDSM hook get, checked without booting."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from diag_protocol import CHANNEL_NAME, host_socket_path
from lab.vm import vdsm_hook
from lab.vm.domain_xml import QGA_CHANNEL, DomainSpec, channel_paths, domain_xml
from lab.vm.libvirt_env import add_channel
from tests.real import unavailable

UUID = "6f1c7d0e-4b8a-4b9e-9a59-0d4b0c2f6a11"


def spec(accel: str) -> DomainSpec:
    return DomainSpec(name="t", uuid=UUID, kernel="/k", initrd="/i", cmdline="root=/dev/vda",
                      disk="/run/overlay.qcow2", console_log="/run/console.log", accel=accel)


def test_tcg_and_kvm_domains_differ_only_where_they_must() -> None:
    tcg, kvm = ET.fromstring(domain_xml(spec("tcg"))), ET.fromstring(domain_xml(spec("kvm")))
    assert (tcg.get("type"), tcg.find("cpu").get("mode")) == ("qemu", "maximum")
    assert (kvm.get("type"), kvm.find("cpu").get("mode")) == ("kvm", "host-passthrough")
    for dom in (tcg, kvm):
        assert dom.find("os/type").get("machine") == "q35"
        disk = dom.find("devices/disk")
        assert disk.find("source").get("file") == "/run/overlay.qcow2"
        assert disk.find("driver").get("type") == "qcow2"
        assert dom.find("devices/controller").get("type") == "virtio-serial"
        assert dom.find("devices/interface").get("type") == "user"
    with pytest.raises(ValueError):
        domain_xml(spec("xen"))


def test_only_qga_channel_until_the_hook_runs() -> None:
    assert channel_paths(domain_xml(spec("tcg"))) == {QGA_CHANNEL: ""}
    added = channel_paths(add_channel(domain_xml(spec("tcg")), host_socket_path(UUID)))
    assert added[CHANNEL_NAME] == host_socket_path(UUID)


@pytest.mark.libvirt
def test_xml_is_valid_for_libvirt_before_and_after_the_hook(tmp_path) -> None:
    if shutil.which("virt-xml-validate") is None:
        unavailable("virt-xml-validate missing: apt-get install libvirt-clients")
    xml = domain_xml(spec("tcg"))
    hooked = vdsm_hook.run_hook(vdsm_hook.hook_path("before_vm_start"), xml, UUID,
                                {"vmdiag": "on"})
    assert channel_paths(hooked)[CHANNEL_NAME] == host_socket_path(UUID)
    for name, text in (("plain.xml", xml), ("hooked.xml", hooked)):
        path = os.path.join(str(tmp_path), name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        result = subprocess.run(["virt-xml-validate", path, "domain"], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr + result.stdout
