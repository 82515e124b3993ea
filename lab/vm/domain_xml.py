"""The libvirt domain XML of the test guest, as a pure function of its inputs.

Kept apart from the code that talks to libvirtd so that the XML can be checked without a
daemon, and so the VDSM hook sees a domain shaped like the ones it gets from VDSM: q35, a
virtio disk, a virtio-serial controller, and qemu-guest-agent's own channel.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .accel import libvirt_domain_type

QGA_CHANNEL = "org.qemu.guest_agent.0"


@dataclass
class DomainSpec:
    """Everything that varies between test guests."""

    name: str
    uuid: str
    kernel: str
    initrd: str
    cmdline: str
    disk: str  # the qcow2 overlay, never the cached base image
    console_log: str
    accel: str = "tcg"  # "kvm" or "tcg"
    memory_mib: int = 1024
    vcpus: int = 2


def _sub(parent: ET.Element, tag: str, text: str = "", **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text:
        element.text = text
    return element


def domain_xml(spec: DomainSpec) -> str:
    """Return the domain XML for ``spec``.

    KVM runs the host CPU model; TCG runs QEMU's ``max`` model (libvirt's ``maximum`` mode)
    in a ``type='qemu'`` domain. The network is QEMU user-mode networking: the guest gets an
    interface with an address without any host bridge, firewall or DHCP server.
    """
    if spec.accel not in ("kvm", "tcg"):
        raise ValueError("accel must be 'kvm' or 'tcg', not %r" % spec.accel)
    domain = ET.Element("domain", type=libvirt_domain_type(spec.accel))
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus))
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    _sub(os_el, "kernel", spec.kernel)
    _sub(os_el, "initrd", spec.initrd)
    _sub(os_el, "cmdline", spec.cmdline)
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.accel == "kvm":
        _sub(domain, "cpu", mode="host-passthrough")
    else:
        _sub(domain, "cpu", mode="maximum")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache="unsafe")
    _sub(disk, "source", file=spec.disk)
    _sub(disk, "target", dev="vda", bus="virtio")
    _sub(devices, "controller", type="virtio-serial", index="0")
    qga = _sub(devices, "channel", type="unix")
    _sub(qga, "target", type="virtio", name=QGA_CHANNEL)
    iface = _sub(devices, "interface", type="user")
    _sub(iface, "model", type="virtio")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=spec.console_log, append="on")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def channel_paths(xml: str) -> dict:
    """Map each virtio channel's target name to its host socket path ("" if libvirt picks)."""
    paths = {}
    for channel in ET.fromstring(xml).iter("channel"):
        target = channel.find("target")
        source = channel.find("source")
        if target is not None and target.get("type") == "virtio":
            paths[target.get("name", "")] = source.get("path", "") if source is not None else ""
    return paths
