"""View model of the VM Diagnostics page: from the engine's VM document to what the template shows.

Why a separate layer: the document mirrors what the guest sent, so any field may be missing,
mistyped or hostile. Everything the template needs is picked, ordered and checked here (health
reasons worst first, failed units before healthy ones, the agent's state explained in words with
what to do next), which keeps the template free of logic and makes the choices testable without
a browser. Strings stay raw here: the template autoescapes them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple
from urllib.parse import urlencode

from diag_protocol.units import format_value, metric_unit
from diag_protocol.vocabulary import RANK, findings_of, status_of, worst_first

from .charts import Chart, clean_points, line_chart
from .formatting import as_number, human_age, human_duration

HEALTH_TEXT = {"ok": "Healthy", "warning": "Warning", "critical": "Critical", "unknown": "Unknown"}
CHECK_TEXT = {"ok": "OK", "warning": "Warning", "critical": "Critical", "unknown": "Unknown"}
MAX_FILESYSTEM_CHARTS = 8
MAX_ROWS = 200

AGENT_STATES = ("reporting", "silent", "not_installed", "vm_down")
PRESSURE_NAMES = {"cpu": "CPU", "memory": "Memory", "io": "I/O"}


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any, limit: int = MAX_ROWS) -> List[Dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value[:limit] if isinstance(item, dict)]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def health_status(value: Any) -> str:
    """Normalise a verdict; anything unexpected is 'unknown', never silently 'ok'."""
    return status_of(value)


def section(report: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """One report section as {data, errors, collected_at, present}; absent sections are empty."""
    sections = _dict(report.get("sections"))
    raw = _dict(sections.get(name))
    return {
        "present": bool(raw),
        "data": _dict(raw.get("data")),
        "errors": [e for e in _list(raw.get("errors")) if e.get("field") or e.get("error")],
        "collected_at": as_number(raw.get("collected_at")),
    }


def agent_banner(doc: Mapping[str, Any], now: float) -> Dict[str, Any] | None:
    """Explain a non-reporting agent in one sentence plus the next step; None while it reports."""
    agent = _dict(doc.get("agent"))
    state = agent.get("state")
    last = as_number(agent.get("last_report_at")) or as_number(doc.get("received_at"))
    if state == "not_installed":
        return {
            "state": "not_installed",
            "variant": "info",
            "title": "The vmdiag agent is not installed in this VM",
            "body": "No report has ever arrived from this guest. Install the vmdiag-agent package "
                    "in the guest and run 'systemctl enable --now vmdiag-agent'. If the VM was "
                    "started before the vmdiag hook was installed on its host, or its custom "
                    "property vmdiag is 'off', set vmdiag=on and restart the VM so it gets the "
                    "diagnostics channel.",
        }
    if state == "silent":
        silent_for = as_number(agent.get("silent_for_s"))
        if silent_for is None and last is not None:
            silent_for = now - last
        return {
            "state": "silent",
            "variant": "warning",
            "title": "The agent has been silent since",
            "since": last,
            "duration": human_duration(silent_for),
            "body": "The figures below are from its last report. In the guest, check "
                    "'systemctl status vmdiag-agent' and the journal of that service; on the host, "
                    "check that vmdiag-relay runs and that the VM has the org.vmdiag.agent.0 "
                    "channel.",
        }
    if state == "vm_down":
        return {
            "state": "vm_down",
            "variant": "info",
            "title": "The VM is down",
            "since": last,
            "age": human_age(last, now) if last is not None else "",
            "body": "Start the VM to get current diagnostics." if last is not None else
                    "No report was received while it ran. Start the VM to get diagnostics.",
        }
    return None


def health_view(doc: Mapping[str, Any], now: float) -> Dict[str, Any]:
    health = _dict(doc.get("health"))
    status = health_status(health.get("status"))
    findings = []
    for found in findings_of(health)[:MAX_ROWS]:
        findings.append({
            "status": found["status"],
            "status_text": HEALTH_TEXT[found["status"]],
            "code": _text(found.get("code")),
            "message": _text(found.get("message")) or _text(found.get("code")),
            "metric": _text(found.get("metric")),
        })
    since = as_number(health.get("since"))
    return {
        "status": status,
        "text": HEALTH_TEXT[status],
        "since": since,
        "since_age": human_age(since, now) if since is not None else "",
        "findings": worst_first(findings),
    }


#: how each forecast method reads on the page (engine_plugin/health/forecast.py)
FIT_METHOD_TEXT = {
    "linear": "the whole history, as one line",
    "recent": "only the latest rise",
    "after_reset": "the data since the last cleanup",
    "sawtooth": "the whole history, across its cleanups",
    "cleanup_cycle": "the level across its cleanups, their cycle's shape taken out",
    "seasonal": "the level across its cycle, the cycle's profile taken out",
    "insufficient": "too little data",
}


#: a fit whose data ended longer ago than this was kept from an earlier pass
KEPT_FIT_S = 600.0


def forecast_why(fc: Mapping[str, Any], unit: Any, now: float) -> str:
    """What was fitted and how sure it is, e.g. 'Fitted the last 2 h 40 min (only the latest
    rise): +1.2 GiB ± 80.0 MiB per day.'; for no forecast, why not."""
    fit = _dict(fc.get("fit"))
    start, end = as_number(fit.get("start")), as_number(fit.get("end"))
    slope, error = as_number(fit.get("slope")), as_number(fit.get("slope_error"))
    method = FIT_METHOD_TEXT.get(_text(fc.get("method")), _text(fc.get("method")) or "\u2014")
    parts = []
    if start is not None and end is not None and end > start:
        parts.append("Fitted the last %s (%s)" % (human_duration(now - start), method))
    else:
        parts.append("Fitted %s" % method)
    if slope is not None:
        text = "%s%s" % ("+" if slope >= 0 else "-", format_value(unit, abs(slope) * 86400.0))
        if error is not None and error > 0:
            text += " \u00b1 %s" % format_value(unit, error * 86400.0)
        parts[-1] += ": %s per day" % text
    if end is not None and now - end > KEPT_FIT_S:
        # a fit kept between passes: the samples since agreed with it (docs/engine.md)
        parts.append("fitted %s ago; the samples since agree with it" % human_duration(now - end))
    reason = _text(fit.get("reason"))
    if reason:
        parts.append("no forecast: %s" % reason)
    since = as_number(fc.get("since"))
    if since is not None and health_status(fc.get("status")) != "ok":
        # persistence, in the data's time: raised once the data supported it long enough
        parts.append("the data has supported it for %s" % human_duration(max(0.0, now - since)))
    if fc.get("held") is True:
        parts.append("held from an earlier pass while the evidence is thin")
    return ". ".join(parts) + "."


def forecasts_view(doc: Mapping[str, Any], now: float) -> List[Dict[str, Any]]:
    """Forecasts worst first, each with its time-to-full in words."""
    out: List[Dict[str, Any]] = []
    for fc in _list(doc.get("forecasts")):
        status = health_status(fc.get("status"))
        eta_s = as_number(fc.get("eta_s"))
        eta_at = as_number(fc.get("eta_at"))
        if eta_s is None and eta_at is not None:
            eta_s = eta_at - now
        confidence = as_number(fc.get("confidence"))
        capacity = as_number(fc.get("capacity"))
        current = as_number(fc.get("current"))
        kind = _text(fc.get("kind"))
        unit = "count" if kind == "filesystem_inodes" else "bytes"
        trend = as_number(fc.get("trend_per_day"))
        out.append({
            "metric": _text(fc.get("metric")),
            "label": _text(fc.get("label")) or _text(fc.get("metric")),
            "kind": kind,
            "status": status,
            "status_text": HEALTH_TEXT[status],
            "eta_s": eta_s,
            "eta_at": eta_at,
            "eta_text": ("full in %s" % human_duration(eta_s)) if eta_s is not None and eta_s > 0
                        else ("full now" if eta_s is not None else "not filling up"),
            "confidence": confidence,
            "confidence_text": format_value("ratio", confidence),
            "trend_text": ("%s%s per day" % ("+" if trend >= 0 else "-",
                                              format_value(unit, abs(trend))))
                          if trend is not None else "\u2014",
            "current_text": format_value(unit, current),
            "capacity_text": format_value(unit, capacity),
            "why_text": forecast_why(fc, unit, now),
            "raw": fc,
        })
    out.sort(key=lambda f: (-RANK[f["status"]],
                            f["eta_s"] if f["eta_s"] is not None else float("inf")))
    return out


def history_metrics(doc: Mapping[str, Any]) -> List[str]:
    """The history series the page charts: CPU, memory and the used bytes of each filesystem."""
    metrics = ["cpu.percent", "memory.percent"]
    report = _dict(doc.get("report"))
    fs = _list(section(report, "resources")["data"].get("filesystems"))
    for entry in fs[:MAX_FILESYSTEM_CHARTS]:
        mount = _text(entry.get("mountpoint"))
        if mount:
            metrics.append("fs.used:" + mount)
    return metrics


def _chart_for(
    metric: str,
    histories: Mapping[str, Mapping[str, Any] | None],
    *,
    title: str,
    description: str,
    since: float,
    until: float,
    capacity: float | None = None,
    forecast: Mapping[str, Any] | None = None,
) -> Chart:
    unit = metric_unit(metric) or "number"
    history = histories.get(metric) or {}
    points = clean_points(_dict(history).get("points"))
    if forecast is None and isinstance(_dict(history).get("forecast"), dict):
        forecast = history["forecast"]
    return line_chart(points, title=title, description=description, since=since, until=until,
                      unit=unit, capacity=capacity, forecast=forecast)


def resources_view(
    report: Mapping[str, Any],
    forecasts: Sequence[Mapping[str, Any]],
    histories: Mapping[str, Mapping[str, Any] | None],
    since: float,
    until: float,
) -> Dict[str, Any]:
    sec = section(report, "resources")
    data = sec["data"]
    cpu = _dict(data.get("cpu"))
    memory = _dict(data.get("memory"))
    by_metric = {f["metric"]: f for f in forecasts}
    filesystems: List[Dict[str, Any]] = []
    for entry in _list(data.get("filesystems")):
        mount = _text(entry.get("mountpoint"))
        metric = "fs.used:" + mount
        forecast = by_metric.get(metric)
        chart: Chart | None = None
        if mount and len(filesystems) < MAX_FILESYSTEM_CHARTS:
            total = as_number(entry.get("total"))
            chart = _chart_for(
                metric, histories, title="Used space on %s" % mount,
                description="Used bytes of %s over time, with capacity%s." % (
                    mount, " and forecast (%s)" % forecast["eta_text"] if forecast else ""),
                since=since, until=until, capacity=total,
                forecast=forecast["raw"] if forecast else None)
        filesystems.append({**entry, "mountpoint": mount, "forecast": forecast, "chart": chart,
                            "percent_value": as_number(entry.get("percent"))})
    load = cpu.get("load")
    load = load if isinstance(load, list) else []
    return {
        **sec,
        "cpu": cpu,
        "load": [as_number(v) for v in load[:3]],
        "memory": memory,
        "pressure": [(PRESSURE_NAMES.get(k, k), v) for k, v in
                     sorted(_dict(data.get("pressure")).items())[:3] if isinstance(v, dict)],
        "filesystems": filesystems,
        "disks": _list(data.get("disks")),
        "top_cpu": _list(data.get("top_cpu"), 10),
        "top_memory": _list(data.get("top_memory"), 10),
        "fds": _dict(data.get("fds")),
        "uptime_s": as_number(data.get("uptime_s")),
        "oom_kills": as_number(data.get("oom_kills")),
        "cpu_chart": _chart_for("cpu.percent", histories, title="CPU usage",
                                description="CPU usage in percent over time.",
                                since=since, until=until),
        "memory_chart": _chart_for("memory.percent", histories, title="Memory usage",
                                   description="Memory usage in percent over time.",
                                   since=since, until=until,
                                   forecast=_dict(by_metric.get("memory.percent")).get("raw")),
    }


def network_view(report: Mapping[str, Any]) -> Dict[str, Any]:
    sec = section(report, "network")
    data = sec["data"]
    probes = _list(data.get("probes"))
    probes.sort(key=lambda p: (p.get("ok") is True, _text(p.get("kind"))))
    interfaces = []
    for iface in _list(data.get("interfaces")):
        addresses = [a for a in _list(iface.get("addresses"), 32)]
        interfaces.append({**iface, "addresses": addresses})
    dns = _dict(data.get("dns"))
    return {
        **sec,
        "probes": probes,
        "interfaces": interfaces,
        "routes": _list(data.get("routes"), 50),
        "default_gateway": _dict(data.get("default_gateway")),
        "nameservers": [s for s in (dns.get("nameservers") or []) if isinstance(s, str)][:10],
        "search": [s for s in (dns.get("search") or []) if isinstance(s, str)][:10],
    }


def applications_view(report: Mapping[str, Any]) -> Dict[str, Any]:
    sec = section(report, "applications")
    data = sec["data"]
    units = _list(data.get("units"))
    units.sort(key=lambda u: (_text(u.get("active_state")) == _text(u.get("expected"))
                              or not u.get("expected"), _text(u.get("name"))))
    processes = _list(data.get("processes"))
    processes.sort(key=lambda p: (p.get("present") is True, _text(p.get("name"))))
    listening = _list(section(report, "network")["data"].get("listening"))
    listening.sort(key=lambda s: (as_number(s.get("port")) or 0, _text(s.get("proto"))))
    return {
        **sec,
        "failed_units": _list(data.get("failed_units")),
        "units": units,
        "processes": processes,
        "listening": listening,
        "packages": _dict(data.get("packages")),
    }


def settings_view(report: Mapping[str, Any]) -> Dict[str, Any]:
    sec = section(report, "settings")
    data = sec["data"]
    os_info = _dict(data.get("os"))
    time_sync = _dict(data.get("time_sync"))
    security = _dict(data.get("security"))
    sync = time_sync.get("synchronized")
    facts: List[Tuple[str, Any]] = [
        ("Hostname", data.get("hostname")),
        ("FQDN", data.get("fqdn")),
        ("Operating system", os_info.get("pretty") or " ".join(
            str(v) for v in (os_info.get("name"), os_info.get("version")) if v)),
        ("Kernel", data.get("kernel")),
        ("Architecture", data.get("arch")),
        ("Time zone", data.get("timezone")),
        ("Time synchronised", "yes" if sync is True else "no" if sync is False else None),
        ("Time service", time_sync.get("service")),
        ("Time source", time_sync.get("source")),
        ("Clock offset", ("%.1f ms" % time_sync["offset_ms"])
         if as_number(time_sync.get("offset_ms")) is not None else None),
        ("SELinux", security.get("selinux")),
        ("AppArmor", security.get("apparmor")),
    ]
    sysctls = _dict(data.get("sysctls"))
    return {
        **sec,
        "facts": [(k, v) for k, v in facts if isinstance(v, (str, int, float)) and v != ""],
        "sysctls": sorted((str(k), str(v)) for k, v in list(sysctls.items())[:MAX_ROWS]),
        "users": _list(data.get("users"), 50),
        "reboot_required": data.get("reboot_required") is True,
        "reboot_reason": _text(data.get("reboot_reason")),
    }


def checks_view(report: Mapping[str, Any]) -> Dict[str, Any]:
    sec = section(report, "checks")
    results = []
    for item in _list(sec["data"].get("results")):
        status = health_status(item.get("status"))
        results.append({**item, "status": status, "status_text": CHECK_TEXT[status]})
    results.sort(key=lambda r: (-RANK[r["status"]], _text(r.get("id"))))
    return {**sec, "results": results}


def shared_view(doc: Mapping[str, Any]) -> List[Dict[str, str]]:
    """Fleet patterns this VM's findings belong to, each with the fleet list it links to."""
    out = []
    for p in doc.get("patterns") or []:
        if isinstance(p, dict) and p.get("scope") in ("host", "cluster"):
            out.append({"scope": p["scope"], "name": str(p.get("name") or p.get("id") or ""),
                        "code": str(p.get("code") or ""),
                        "query": urlencode({"q": str(p.get("code") or ""),
                                            p["scope"]: str(p.get("id") or "")})})
    return out


def build_vm_view(
    doc: Mapping[str, Any],
    histories: Mapping[str, Mapping[str, Any] | None],
    now: float,
    window_s: float,
) -> Dict[str, Any]:
    """Everything ``vm_fragment.html`` renders, for one VM document."""
    vm = _dict(doc.get("vm"))
    agent = _dict(doc.get("agent"))
    report = _dict(doc.get("report"))
    received_at = as_number(doc.get("received_at")) or as_number(agent.get("last_report_at"))
    forecasts = forecasts_view(doc, now)
    state = agent.get("state") if agent.get("state") in AGENT_STATES else (
        "reporting" if report else "not_installed")
    since = now - window_s
    return {
        "vm": vm,
        "agent": {**agent, "state": state},
        "banner": agent_banner({**doc, "agent": {**agent, "state": state}}, now),
        "health": health_view(doc, now),
        "patterns": shared_view(doc),
        "forecasts": forecasts,
        "has_report": bool(report),
        "report_time": as_number(report.get("time")),
        "received_at": received_at,
        "received_age": human_age(received_at, now) if received_at is not None else "",
        "network": network_view(report),
        "resources": resources_view(report, forecasts, histories, since, now),
        "applications": applications_view(report),
        "settings": settings_view(report),
        "checks": checks_view(report),
        "window_text": human_duration(window_s),
    }
