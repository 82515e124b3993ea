"""Pure functions on a libvirt domain XML document (``xml.dom.minidom``, as VDSM hands it over).

VDSM's ``hooking.read_domxml()`` returns a minidom ``Document``, so these functions take one.
minidom keeps every prefix, namespace declaration, comment and attribute order as it found them
(ElementTree would rename ``ovirt-vm:`` to ``ns0:``), which is why the hook uses it: the only
change it ever makes is the one ``<channel>`` element, indented like its neighbours.

Nothing here touches files or the environment; ``hook_runner`` does that.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping
from xml.dom import minidom

from diag_protocol import CHANNEL_NAME, HOST_CHANNELS_DIR, host_socket_path

#: The VM custom property that switches the channel on or off for one VM.
PROPERTY = "vmdiag"

#: Hook points that may add the channel: the domain is being defined from scratch.
START_POINTS = ("before_vm_start",)
#: Hook points where the guest ABI is frozen: libvirt refuses a migration or a restore whose
#: device list differs from the source ("Target domain channel count ... does not match
#: source"), so there the hook may only correct the host-side socket path, never add or remove.
FROZEN_ABI_POINTS = ("before_vm_migrate_destination", "before_vm_dehibernate")


class DomainXMLError(ValueError):
    """The document is not a domain definition this hook can change; the VM starts untouched."""


class PropertyError(ValueError):
    """The ``vmdiag`` custom property has a value other than on/off."""


def wants_channel(env: Mapping[str, str], default_on: bool) -> bool:
    """Whether this VM should get the channel, from the ``vmdiag`` custom property.

    VDSM passes each custom property as an environment variable of the same name; an absent or
    empty one means "use the host default" (``[hook] default`` in relay.conf).
    """
    raw = env.get(PROPERTY)
    if raw is None or not raw.strip():
        return default_on
    value = raw.strip().lower()
    if value == "on":
        return True
    if value == "off":
        return False
    raise PropertyError(
        "custom property %s=%r is neither 'on' nor 'off'; fix the VM's custom properties "
        "(engine-config -s UserDefinedVMProperties='%s=^(on|off)$' restricts it)"
        % (PROPERTY, raw[:64], PROPERTY))


def canonical_uuid(vm_uuid: str) -> str:
    """The lower-case, hyphenated form libvirt reports, or DomainXMLError for anything else.

    The UUID becomes part of a file path, so a value like ``../../x`` must never get through.
    """
    try:
        return str(uuid.UUID(vm_uuid.strip()))
    except (ValueError, AttributeError) as err:
        raise DomainXMLError("VM id %r is not a UUID" % (str(vm_uuid)[:80],)) from err


def domain_uuid(dom: minidom.Document) -> str | None:
    """The ``<uuid>`` of the domain, or None when it has none."""
    node = _child(_domain(dom), "uuid")
    if node is None:
        return None
    return "".join(t.data for t in node.childNodes if t.nodeType == t.TEXT_NODE).strip() or None


def find_channels(dom: minidom.Document) -> list[minidom.Element]:
    """Every ``<channel>`` under ``<devices>`` whose target is the vmdiag port."""
    devices = _child(_domain(dom), "devices")
    if devices is None:
        return []
    found = []
    for channel in _children(devices, "channel"):
        target = _child(channel, "target")
        if target is not None and target.getAttribute("name") == CHANNEL_NAME:
            found.append(channel)
    return found


def add_channel(dom: minidom.Document, vm_uuid: str,
                channels_dir: str = HOST_CHANNELS_DIR) -> bool:
    """Add the vmdiag virtio-serial channel; return False when the domain already has one.

    The new element goes right after the last existing ``<channel>`` (or at the end of
    ``<devices>``), with the same indentation, so the document reads as if the engine wrote it.
    libvirt adds a virtio-serial controller itself when the domain has none.
    """
    if find_channels(dom):
        return False
    devices = _child(_domain(dom), "devices")
    if devices is None:
        raise DomainXMLError("the domain has no <devices> element")
    path = host_socket_path(canonical_uuid(vm_uuid), channels_dir)

    channels = _children(devices, "channel")
    anchor = channels[-1] if channels else _last_element(devices)
    indent = _indent_before(anchor) if anchor is not None else None
    channel = _build_channel(dom, path, indent, _inner_indent(anchor, indent))
    if anchor is None:
        devices.appendChild(channel)
        return True
    ref: Any = anchor.nextSibling  # any node kind; minidom's stubs are narrower
    if indent is not None:
        devices.insertBefore(dom.createTextNode(indent), ref)
    devices.insertBefore(channel, ref)
    return True


def channel_xml(vm_uuid: str, channels_dir: str = HOST_CHANNELS_DIR) -> str:
    """The vmdiag ``<channel>`` element alone, as ``add_channel`` adds it (the device XML that
    ``vmdiag-relay attach`` hot-plugs)."""
    doc = minidom.Document()
    path = host_socket_path(canonical_uuid(vm_uuid), channels_dir)
    return str(_build_channel(doc, path, None, None).toxml())


def remove_channel(dom: minidom.Document) -> int:
    """Remove every vmdiag channel (and the indentation before it); return how many."""
    removed = 0
    for channel in find_channels(dom):
        parent: Any = channel.parentNode
        before: Any = channel.previousSibling
        if before is not None and before.nodeType == before.TEXT_NODE and not before.data.strip():
            parent.removeChild(before)
        parent.removeChild(channel)
        channel.unlink()
        removed += 1
    return removed


def fix_channel_path(dom: minidom.Document, vm_uuid: str,
                     channels_dir: str = HOST_CHANNELS_DIR) -> bool:
    """Point an existing vmdiag channel at this host's socket path; never add or remove one.

    Used where the guest ABI is frozen (incoming migration, restore): the socket path is a
    host-side detail that may change, the device list may not. Returns whether it changed.
    """
    path = host_socket_path(canonical_uuid(vm_uuid), channels_dir)
    changed = False
    for channel in find_channels(dom):
        source = _child(channel, "source")
        if source is None:
            source = dom.createElement("source")
            channel.insertBefore(source, channel.firstChild)
        if source.getAttribute("mode") != "bind" or source.getAttribute("path") != path:
            source.setAttribute("mode", "bind")
            source.setAttribute("path", path)
            changed = True
    return changed


def apply(hook_point: str, dom: minidom.Document, env: Mapping[str, str], default_on: bool,
          channels_dir: str = HOST_CHANNELS_DIR) -> bool:
    """Do what ``hook_point`` calls for on ``dom``; return whether the document changed.

    ``vmId`` from the environment names the VM, falling back to the domain's own ``<uuid>``.
    Raises DomainXMLError or PropertyError when it cannot decide safely.
    """
    _domain(dom)
    vm_uuid = env.get("vmId") or domain_uuid(dom)
    if not vm_uuid:
        raise DomainXMLError("neither the vmId environment variable nor <uuid> names the VM")
    if hook_point in FROZEN_ABI_POINTS:
        return fix_channel_path(dom, vm_uuid, channels_dir)
    if hook_point not in START_POINTS:
        raise DomainXMLError("hook point %r does not edit the domain XML" % (hook_point,))
    if not wants_channel(env, default_on):
        # A fresh start may still drop a channel left in the XML (the ABI is not fixed yet).
        return remove_channel(dom) > 0
    return add_channel(dom, vm_uuid, channels_dir)


def _domain(dom: minidom.Document) -> minidom.Element:
    root = dom.documentElement
    if root is None or root.tagName != "domain":
        raise DomainXMLError("the document is not a libvirt <domain> (root element %r)"
                             % (getattr(root, "tagName", None),))
    return root


def _children(parent: minidom.Element, tag: str) -> list[minidom.Element]:
    return [n for n in parent.childNodes if n.nodeType == n.ELEMENT_NODE and n.tagName == tag]


def _child(parent: minidom.Element, tag: str) -> minidom.Element | None:
    found = _children(parent, tag)
    return found[0] if found else None


def _last_element(parent: minidom.Element) -> minidom.Element | None:
    elements = [n for n in parent.childNodes if n.nodeType == n.ELEMENT_NODE]
    return elements[-1] if elements else None


def _indent_before(node: minidom.Node) -> str | None:
    """The whitespace text right before ``node`` (its indentation), if the document has any."""
    before = node.previousSibling
    if before is not None and before.nodeType == before.TEXT_NODE and not before.data.strip():
        return before.data
    return None


def _inner_indent(anchor: minidom.Element | None, indent: str | None) -> str | None:
    """The indentation of the anchor's first child, so nesting uses the document's own step."""
    if indent is None:
        return None
    if anchor is not None:
        first = next((n for n in anchor.childNodes if n.nodeType == n.ELEMENT_NODE), None)
        inner = _indent_before(first) if first is not None else None
        if inner is not None and len(inner) > len(indent):
            return inner
    return indent + "  "


def _build_channel(dom: minidom.Document, path: str, indent: str | None,
                   inner: str | None) -> minidom.Element:
    channel = dom.createElement("channel")
    channel.setAttribute("type", "unix")
    source = dom.createElement("source")
    source.setAttribute("mode", "bind")
    source.setAttribute("path", path)
    target = dom.createElement("target")
    target.setAttribute("type", "virtio")
    target.setAttribute("name", CHANNEL_NAME)
    for element in (source, target):
        if inner is not None:
            channel.appendChild(dom.createTextNode(inner))
        channel.appendChild(element)
    if indent is not None:
        channel.appendChild(dom.createTextNode(indent))
    return channel
