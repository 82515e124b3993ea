"""Application checks: failed systemd units, watched units not active, watched processes gone."""

from __future__ import annotations

from typing import Any, List, Mapping

from .result import Result, field_error, names, plural, result


def _failed_units(apps: Mapping[str, Any]) -> List[Result]:
    failed = (apps.get("data") or {}).get("failed_units")
    if failed is None:
        err = field_error(apps, "failed_units")
        if err is None:
            return []
        return [result("units.failed", "Failed units", "unknown",
                       "Could not list failed systemd units (%s)" % err)]
    if not failed:
        return [result("units.failed", "Failed units", "ok", "No systemd unit has failed", 0, 1)]
    unit_names = [str(u.get("name") or "?") for u in failed]
    text = ("%s failed (%s); see why with `systemctl status %s` and clear them with "
            "`systemctl reset-failed` once fixed"
            % (plural(len(unit_names), "systemd unit has", "systemd units have"),
               names(unit_names), unit_names[0]))
    return [result("units.failed", "Failed units", "warning", text, len(unit_names), 1)]


def _watched_units(apps: Mapping[str, Any]) -> List[Result]:
    out: List[Result] = []
    for unit in (apps.get("data") or {}).get("units") or ():
        name = str(unit.get("name") or "?")
        state = unit.get("active_state")
        expected = unit.get("expected") or "active"
        sub = unit.get("sub_state")
        shown = "%s (%s)" % (state, sub) if sub and sub != state else str(state)
        if state is None:
            out.append(result("unit.active:" + name, "Watched unit " + name, "unknown",
                              "Could not read the state of watched unit %s" % name))
        elif state == expected:
            out.append(result("unit.active:" + name, "Watched unit " + name, "ok",
                              "Watched unit %s is %s" % (name, shown)))
        else:
            out.append(result(
                "unit.active:" + name, "Watched unit " + name, "critical",
                "Watched unit %s is %s instead of %s; start it with `systemctl start %s` and "
                "read `journalctl -u %s` for why it stopped" % (name, shown, expected, name,
                                                                 name)))
    return out


def _watched_processes(apps: Mapping[str, Any]) -> List[Result]:
    out: List[Result] = []
    for proc in (apps.get("data") or {}).get("processes") or ():
        name = str(proc.get("name") or "?")
        present, count = proc.get("present"), proc.get("count")
        cid, title = "process.present:" + name, "Watched process " + name
        if present is None:
            out.append(result(cid, title, "unknown",
                              "Could not tell whether a process named %s runs" % name))
        elif present:
            n = int(count) if isinstance(count, int) else 1
            out.append(result(cid, title, "ok", "%s named %s %s running"
                              % (plural(n, "process", "processes"), name,
                                 "is" if n == 1 else "are"), n, 1))
        else:
            out.append(result(cid, title, "critical",
                              "No process named %s is running; start the service that runs it, "
                              "or remove it from [watch] processes in agent.conf if it is no "
                              "longer needed" % name, 0, 1))
    return out


def check(sections: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    apps = sections.get("applications") or {}
    return _failed_units(apps) + _watched_units(apps) + _watched_processes(apps)
