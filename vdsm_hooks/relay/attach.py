"""``vmdiag-relay attach|detach``: give running and defined domains the vmdiag channel, or take
it away, without a reboot, on plain libvirt hosts.

The channel is the hook's (``domxml.channel_xml``, one definition). ``attach`` adds it to the
domain's persistent definition and hot-plugs it into the running domain
(``virDomainAttachDeviceFlags`` with ``CONFIG | LIVE``); libvirt adds a virtio-serial
controller to the definition when there is none. The guest's agent sees the new port through
udev and starts reporting; the relay follows the domain at libvirt's device-added event or at
its next listing.

Refused, with the reason, per domain: domains that are not QEMU/KVM or not ``hvm`` (no
virtio-serial), transient domains unless ``--live`` (there is no persistent definition to add
to; ``--live`` hot-plugs until the domain stops), and whatever libvirt itself refuses (a
running domain without a virtio-serial controller to plug into, for one). On an oVirt host
every domain is refused: VDSM owns the domain definitions and rewrites them at each start (the
before_vm_start hook adds the channel there); ``--force`` overrides this, unsupported.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, List, NamedTuple, Optional
from xml.dom import minidom
from xml.etree import ElementTree

from ..domxml import channel_xml, find_channels

#: Files that say VDSM manages this host.
VDSM_MARKERS = ("etc/vdsm/vdsm.conf", "etc/vdsm/vdsm.id", "usr/share/vdsm")


class Outcome(NamedTuple):
    name: str
    vm_id: str
    done: bool
    message: str


def vdsm_host(root: str = "/") -> Optional[str]:
    """The file that shows VDSM manages this host, or None."""
    for rel in VDSM_MARKERS:
        path = os.path.join(root, rel)
        if os.path.exists(path):
            return path
    return None


def _channels(xml: str) -> List[Any]:
    return list(find_channels(minidom.parseString(xml)))


def _refusal(xml: str) -> Optional[str]:
    root = ElementTree.fromstring(xml)
    kind = root.get("type")
    if kind not in ("kvm", "qemu"):
        return "a %r domain has no virtio-serial (only QEMU/KVM domains)" % kind
    os_type = (root.findtext("os/type") or "").strip()
    if os_type and os_type != "hvm":
        return "an %r guest has no virtio-serial (only hvm guests)" % os_type
    return None


def change(libvirt: Any, dom: Any, attach: bool, live_only: bool, channels_dir: str) -> Outcome:
    """Attach or detach the channel of one domain; never raises for the domain's own reasons."""
    name, vm_id = dom.name(), dom.UUIDString()
    verb = "attach" if attach else "detach"

    def out(done: bool, message: str) -> Outcome:
        return Outcome(name, vm_id, done, message)

    try:
        active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
        live_xml = dom.XMLDesc(0)
        refusal = _refusal(live_xml)
        if refusal:
            return out(False, refusal)
        if not persistent and not live_only:
            return out(False, "transient domain: there is no persistent definition to %s the "
                              "channel %s; --live changes the running domain only, until it "
                              "stops" % (verb, "to" if attach else "from"))
        if live_only and not active:
            return out(False, "not running: --live changes only a running domain")
        flags, where = 0, []
        if active and bool(_channels(live_xml)) != attach:
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            where.append("running domain")
        if persistent and not live_only:
            config_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            if bool(_channels(config_xml)) != attach:
                flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
                where.append("persistent definition")
        if not flags:
            return out(True, "already %s" % ("has the channel" if attach else
                                             "without the channel"))
        if attach:
            dom.attachDeviceFlags(channel_xml(vm_id, channels_dir), flags)
        else:
            found = _channels(live_xml) or _channels(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            dom.detachDeviceFlags(found[0].toxml(), flags)
    except libvirt.libvirtError as err:
        return out(False, "libvirt refused: %s" % err.get_error_message())
    return out(True, "%s the %s" % ("channel added to" if attach else "channel removed from",
                                   " and the ".join(where)))


def run(libvirt: Any, uri: str, names: Iterable[str], all_domains: bool, attach: bool,
        live_only: bool, channels_dir: str) -> List[Outcome]:
    """Open ``uri`` read-write and change the named domains (or all of them)."""
    conn = libvirt.open(uri)
    try:
        if all_domains:
            domains = conn.listAllDomains(0)
        else:
            domains = []
            for key in names:
                found: Any = key
                for lookup in (conn.lookupByName, conn.lookupByUUIDString):
                    try:
                        found = lookup(key)
                        break
                    except libvirt.libvirtError:
                        continue
                domains.append(found)
        outcomes = []
        for dom in domains:
            if isinstance(dom, str):
                outcomes.append(Outcome(dom, "-", False, "no such domain in %s" % uri))
            else:
                outcomes.append(change(libvirt, dom, attach, live_only, channels_dir))
        return outcomes
    finally:
        conn.close()
