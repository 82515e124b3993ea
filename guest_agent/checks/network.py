"""Network checks, from the collector's probes: gateway, DNS and the configured TCP/HTTP targets.

The collector does the probing (with its own timeout); these functions only judge and word the
outcome, so a check run never touches the network itself.
"""

from __future__ import annotations

from typing import Any, List, Mapping

from .result import Result, field_error, result


def _latency(probe: Mapping[str, Any]) -> str:
    ms = probe.get("latency_ms")
    return (" in %.1f ms" % ms) if isinstance(ms, (int, float)) else ""


def _why(probe: Mapping[str, Any]) -> str:
    return str(probe.get("error") or "no answer")


def _gateway(data: Mapping[str, Any], probes: List[Mapping[str, Any]]) -> List[Result]:
    gw = data.get("default_gateway")
    probe = next((p for p in probes if p.get("kind") == "gateway"), None)
    if gw is None and probe is None:
        if "default_gateway" not in data:
            return []
        return [result("net.gateway", "Default gateway", "warning",
                       "There is no default route, so only directly attached networks are "
                       "reachable; configure a gateway, or ignore this on an isolated VM")]
    where = str(probe.get("target") if probe else gw.get("address"))  # type: ignore[union-attr]
    iface: str | None = gw.get("interface") if gw else None
    if iface:
        where += " (%s)" % iface
    if probe is None or probe.get("ok") is None:
        return [result("net.gateway", "Default gateway", "unknown",
                       "The default gateway %s was not probed" % where)]
    if probe["ok"]:
        return [result("net.gateway", "Default gateway", "ok",
                       "The default gateway %s answers%s" % (where, _latency(probe)),
                       probe.get("latency_ms"))]
    return [result("net.gateway", "Default gateway", "critical",
                   "The default gateway %s does not answer (%s); check the interface's link, "
                   "its VLAN and the host's bridge" % (where, _why(probe)))]


def _dns(data: Mapping[str, Any], probes: List[Mapping[str, Any]]) -> List[Result]:
    out: List[Result] = []
    dns = data.get("dns")
    servers = list((dns or {}).get("nameservers") or ())
    if dns is not None and not servers:
        out.append(result("net.dns", "DNS servers", "warning",
                          "No DNS name server is configured in /etc/resolv.conf, so host names "
                          "will not resolve; configure one"))
    via = (" via %s" % ", ".join(servers[:3])) if servers else ""
    for probe in probes:
        if probe.get("kind") != "dns":
            continue
        name = str(probe.get("target") or "?")
        cid = "net.dns:" + name
        if probe.get("ok"):
            out.append(result(cid, "DNS " + name, "ok",
                              "%s resolves%s%s" % (name, via, _latency(probe)),
                              probe.get("latency_ms")))
        else:
            out.append(result(cid, "DNS " + name, "critical",
                              "%s could not be resolved%s (%s); check that the name servers in "
                              "/etc/resolv.conf answer and know this name" % (name, via,
                                                                             _why(probe))))
    return out


def _targets(probes: List[Mapping[str, Any]]) -> List[Result]:
    out: List[Result] = []
    for probe in probes:
        kind = probe.get("kind")
        if kind not in ("tcp", "http"):
            continue
        target = str(probe.get("target") or "?")
        cid = "net.%s:%s" % (kind, target)
        title = "%s target %s" % (kind.upper(), target)
        if probe.get("ok"):
            text = ("%s accepts connections%s" if kind == "tcp" else "%s answers%s") % (
                target, _latency(probe))
            out.append(result(cid, title, "ok", text, probe.get("latency_ms")))
        elif kind == "tcp":
            out.append(result(cid, title, "critical",
                              "%s does not accept connections (%s); start the service there or "
                              "open the firewall between this VM and it" % (target, _why(probe))))
        else:
            out.append(result(cid, title, "critical",
                              "%s did not answer properly (%s); check the web service and "
                              "everything between this VM and it" % (target, _why(probe))))
    return out


def check(sections: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    network = sections.get("network") or {}
    data = network.get("data") or {}
    probes = list(data.get("probes") or ())
    if not data and field_error(network, "probes", "routes"):
        return [result("net.gateway", "Network", "unknown", "Could not read the network state "
                       "(%s)" % field_error(network, "probes", "routes"))]
    return _gateway(data, probes) + _dns(data, probes) + _targets(probes)
