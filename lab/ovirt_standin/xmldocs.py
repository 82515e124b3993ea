"""XML documents in the shapes the oVirt engine's REST API v4 returns (and ovirtsdk4 parses).

Shapes follow the engine's answers: entities carry ``href`` and ``id`` attributes, links to
other entities are empty elements with ``href`` and ``id`` unless ``follow`` inlined them, and
errors are ``<fault><reason/><detail/></fault>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Iterable, Mapping

API = "/ovirt-engine/api"


def _text(parent: ET.Element, tag: str, value: Any) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(value)
    return child


def _link(parent: ET.Element, tag: str, collection: str, entity_id: str) -> ET.Element:
    return ET.SubElement(parent, tag, {"href": "%s/%s/%s" % (API, collection, entity_id),
                                       "id": entity_id})


def to_bytes(element: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(element)


def fault(reason: str, detail: str) -> bytes:
    root = ET.Element("fault")
    _text(root, "reason", reason)
    _text(root, "detail", detail)
    return to_bytes(root)


def fault_text(reason: str, detail: str) -> str:
    return fault(reason, detail).decode("utf-8")


def api_root(user_id: str, version: str = "4.5.5") -> bytes:
    root = ET.Element("api")
    for rel in ("clusters", "events", "hosts", "vms"):
        ET.SubElement(root, "link", {"href": "%s/%s" % (API, rel), "rel": rel})
    info = ET.SubElement(root, "product_info")
    _text(info, "instance_id", "7c2a3f04-0000-4000-8000-00000000cafe")
    _text(info, "name", "oVirt Engine")
    _text(info, "vendor", "ovirt.org")
    ver = ET.SubElement(info, "version")
    major, minor, build = (version.split(".") + ["0", "0"])[:3]
    _text(ver, "build", build)
    _text(ver, "full_version", version + "-1.el8")
    _text(ver, "major", major)
    _text(ver, "minor", minor)
    _text(ver, "revision", "0")
    _link(root, "authenticated_user", "users", user_id)
    _link(root, "effective_user", "users", user_id)
    return to_bytes(root)


def cluster_element(tag: str, cluster: Mapping[str, Any]) -> ET.Element:
    element = ET.Element(tag, {"href": "%s/clusters/%s" % (API, cluster["id"]),
                               "id": cluster["id"]})
    _text(element, "name", cluster["name"])
    ver = ET.SubElement(element, "version")
    _text(ver, "major", 4)
    _text(ver, "minor", 7)
    return element


def host_element(tag: str, host: Mapping[str, Any]) -> ET.Element:
    element = ET.Element(tag, {"href": "%s/hosts/%s" % (API, host["id"]), "id": host["id"]})
    _text(element, "name", host["name"])
    _text(element, "address", host["address"])
    _text(element, "status", host.get("status", "up"))
    _link(element, "cluster", "clusters", host["cluster_id"])
    return element


def vm_element(vm: Mapping[str, Any], inline: Mapping[str, ET.Element]) -> ET.Element:
    """A ``<vm>``; ``inline`` maps "host"/"cluster" to followed elements replacing the links."""
    element = ET.Element("vm", {"href": "%s/vms/%s" % (API, vm["id"]), "id": vm["id"]})
    actions = ET.SubElement(element, "actions")
    for rel in ("start", "stop", "shutdown"):
        ET.SubElement(actions, "link", {"href": "%s/vms/%s/%s" % (API, vm["id"], rel),
                                        "rel": rel})
    _text(element, "name", vm["name"])
    _text(element, "description", vm.get("description", ""))
    for rel in ("diskattachments", "nics", "statistics"):
        ET.SubElement(element, "link", {"href": "%s/vms/%s/%s" % (API, vm["id"], rel),
                                        "rel": rel})
    _text(element, "status", vm["status"])
    _text(element, "type", "server")
    if "cluster" in inline:
        element.append(inline["cluster"])
    else:
        _link(element, "cluster", "clusters", vm["cluster_id"])
    if vm.get("host_id") and vm["status"] not in ("down", "suspended"):
        if "host" in inline:
            element.append(inline["host"])
        else:
            _link(element, "host", "hosts", vm["host_id"])
    return element


def permission_element(permission_id: str, role_id: str, user_id: str) -> ET.Element:
    """A permission on the system object: no vm/cluster/data_center/... link (the engine's
    PermissionMapper sets none for the System object type)."""
    element = ET.Element("permission", {"href": "%s/permissions/%s" % (API, permission_id),
                                        "id": permission_id})
    _link(element, "role", "roles", role_id)
    _link(element, "user", "users", user_id)
    return element


def collection(tag: str, elements: Iterable[ET.Element]) -> bytes:
    root = ET.Element(tag)
    root.extend(elements)
    return to_bytes(root)


def collection_bytes(tag: str, serialized: Iterable[bytes]) -> bytes:
    """``collection`` of elements already serialized (the same bytes)."""
    return b"".join([b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<%s>'
                     % tag.encode(), *serialized, b"</%s>" % tag.encode()])


def event_element(event: Mapping[str, Any]) -> bytes:
    element = ET.Element("event", {"href": "%s/events/%s" % (API, event["id"]),
                                   "id": str(event["id"])})
    _text(element, "description", event["description"])
    _text(element, "code", 12000)  # EXTERNAL_EVENT_{NORMAL,WARNING,ERROR} share this range
    _text(element, "custom_id", event["custom_id"])
    _text(element, "flood_rate", 30)
    _text(element, "origin", event["origin"])
    _text(element, "severity", event["severity"])
    _text(element, "time", event["time_iso"])
    for kind, collection_name in (("vm", "vms"), ("host", "hosts"), ("cluster", "clusters")):
        if event.get(kind + "_id"):
            _link(element, kind, collection_name, event[kind + "_id"])
    return to_bytes(element)
