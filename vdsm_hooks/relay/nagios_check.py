"""``vmdiag-relay check VM``: one VM's state as a Nagios/Icinga plugin sees it.

The verdict comes from the relay's cache (the control socket's ``show``), so a monitoring
server checks guests through the host (NRPE, Icinga agent, SSH) without logging into them:

* the status is the worst of the agent's own check results in the latest report;
* UNKNOWN (exit 3), with the reason, when the relay does not know the VM, is not running, has
  no report of it yet, or its latest report is older than ``stale`` agent intervals;
* exit codes are the vocabulary's (``EXIT_CODES``: 0 ok, 1 warning, 2 critical, 3 unknown).

Output follows the Nagios plugin guidelines: one status line, then one line per check that is
not ok (most severe first), and perfdata after ``|``: ``'label'=value[UOM];warn;crit;min;max``.
Perfdata: the report's age (crit = the staleness bound), CPU, memory and swap use, and each
filesystem's use and inode use (at most ``MAX_FILESYSTEMS``), and the channel's dropped
messages (a counter, ``c``). Everything the guest wrote (check ids and messages, mount points)
is untrusted: control characters, ``|`` and line breaks are replaced, lengths are capped, and
a label never carries ``'`` or ``=`` (which the perfdata grammar forbids).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from diag_protocol.units import as_number, fmt_seconds
from diag_protocol.vocabulary import EXIT_CODES, NOT_OK, OK, UNKNOWN, status_of, worst, worst_first

#: Filesystems with perfdata (a guest may list many more; the first ones are kept).
MAX_FILESYSTEMS = 20
#: Checks listed in the long output.
MAX_LISTED = 20
MAX_TEXT = 200
MAX_LABEL = 60
#: The agent's default ``[agent] interval`` (guest_agent config), in seconds.
DEFAULT_INTERVAL = 60.0
DEFAULT_STALE = 3.0

_WORD = {OK: "OK", "warning": "WARNING", "critical": "CRITICAL", UNKNOWN: "UNKNOWN"}
_BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f|\u2028\u2029\ud800-\udfff]")
_BAD_LABEL = re.compile("[\x00-\x1f\x7f-\x9f'=|\u2028\u2029\ud800-\udfff]")


class Result(NamedTuple):
    status: str
    summary: str
    details: List[str]
    perfdata: List[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def text(self) -> str:
        """The plugin's output: status line with perfdata, then the long lines."""
        line = "VMDIAG %s - %s" % (_WORD[self.status], self.summary)
        if self.perfdata:
            line += " | " + " ".join(self.perfdata)
        return "\n".join([line] + self.details)


def clean_text(value: Any, limit: int = MAX_TEXT) -> str:
    """Guest text on one plugin line: no control characters, no ``|``, at most ``limit``."""
    text = _BAD_TEXT.sub(" ", str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def perf_label(value: Any) -> str:
    """A quoted perfdata label (without ``'`` or ``=``, which it may not contain)."""
    text = _BAD_LABEL.sub("_", str(value))[:MAX_LABEL]
    return "'%s'" % text


def perf(label: Any, value: float, uom: str = "", warn: Optional[float] = None,
         crit: Optional[float] = None, low: Optional[float] = None,
         high: Optional[float] = None) -> str:
    def num(x: Optional[float]) -> str:
        return "" if x is None else ("%d" % x if float(x).is_integer() else "%.6g" % x)

    text = "%s=%s%s;%s;%s;%s;%s" % (perf_label(label), num(value), uom, num(warn), num(crit),
                                    num(low), num(high))
    return text.rstrip(";")


def unknown(reason: str) -> Result:
    return Result(UNKNOWN, clean_text(reason, 300), [], [])


def evaluate(vm: Mapping[str, Any], interval: float = DEFAULT_INTERVAL,
             stale: float = DEFAULT_STALE) -> Result:
    """The verdict on one VM from the relay's ``show`` answer (``VMEntry.detail()``)."""
    name = clean_text(vm.get("name") or vm.get("vm_id") or "?", 80)
    report = vm.get("report")
    age = as_number(vm.get("last_report_age"))
    limit = interval * stale
    perfdata: List[str] = []
    if age is not None:
        perfdata.append(perf("report_age", round(age, 1), "s", crit=limit, low=0))
    dropped = as_number((vm.get("counters") or {}).get("dropped"))
    if not isinstance(report, Mapping) or age is None:
        return Result(UNKNOWN, "%s: no report from its agent yet (channel %s)"
                      % (name, clean_text(_state(vm), 60)), [], perfdata)
    if age > limit:
        return Result(UNKNOWN, "%s: the latest report is %s old, more than %g intervals of "
                      "%s (agent silent; channel %s)" % (
                          name, fmt_seconds(age), stale, fmt_seconds(interval),
                          clean_text(_state(vm), 60)), [], perfdata)
    sections = report.get("sections") or {}
    perfdata.extend(resource_perfdata(sections.get("resources")))
    if dropped is not None:
        perfdata.append(perf("dropped", dropped, "c", low=0))
    checks = [c for c in _checks(sections) if isinstance(c, Mapping)]
    status = worst(c.get("status") for c in checks)
    bad = [c for c in worst_first(checks) if status_of(c.get("status")) in NOT_OK]
    counts = {s: sum(1 for c in bad if status_of(c.get("status")) == s) for s in NOT_OK}
    if not checks:
        summary = "%s: report %s old, no checks in it" % (name, fmt_seconds(age))
    elif not bad:
        summary = "%s: %d checks ok" % (name, len(checks))
    else:
        first = bad[0]
        summary = "%s: %s: %s" % (name, clean_text(first.get("id"), 80),
                                  clean_text(first.get("message") or "", 150))
        more = ["%d %s" % (counts[s], s) for s in NOT_OK if counts[s]]
        summary += " (%s of %d checks)" % (", ".join(more), len(checks))
    details = ["%s %s: %s" % (_WORD[status_of(c.get("status"))], clean_text(c.get("id"), 80),
                              clean_text(c.get("message") or "")) for c in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        details.append("... and %d more" % (len(bad) - MAX_LISTED))
    return Result(status, summary, details, perfdata)


def resource_perfdata(section: Any) -> List[str]:
    data = section.get("data") if isinstance(section, Mapping) else None
    if not isinstance(data, Mapping):
        return []
    out: List[str] = []

    def add(label: str, value: Any) -> None:
        number = as_number(value)
        if number is not None:
            out.append(perf(label, round(number, 2), "%", low=0, high=100))

    add("cpu", (data.get("cpu") or {}).get("percent"))
    memory = data.get("memory") or {}
    add("memory", memory.get("percent"))
    add("swap", memory.get("swap_percent"))
    filesystems: Sequence[Any] = data.get("filesystems") or ()
    for fs in list(filesystems)[:MAX_FILESYSTEMS]:
        if isinstance(fs, Mapping):
            mount = fs.get("mountpoint")
            add("fs %s" % mount, fs.get("percent"))
            add("inodes %s" % mount, fs.get("inodes_percent"))
    return out


def _checks(sections: Mapping[str, Any]) -> List[Any]:
    checks = sections.get("checks") if isinstance(sections, Mapping) else None
    data = checks.get("data") if isinstance(checks, Mapping) else None
    results = data.get("results") if isinstance(data, Mapping) else None
    return list(results) if isinstance(results, list) else []


def _state(vm: Mapping[str, Any]) -> str:
    state = str(vm.get("state") or "unknown")
    if state == "connected" and vm.get("responsive") is not True:
        state = "connected, agent silent"
    vm_state = vm.get("vm_state")
    if vm_state not in (None, "running", "unknown"):
        state += ", VM %s" % vm_state
    return state


def run(call: Any, socket_path: str, vm: str, interval: float, stale: float,
        timeout: float) -> Result:
    """Ask the relay at ``socket_path`` (``call`` is ``control.call``) and judge ``vm``."""
    from .control import ControlError

    try:
        response: Dict[str, Any] = call(socket_path, {"cmd": "show", "vm": vm}, timeout=timeout)
    except ControlError as err:
        return unknown(str(err))
    shown = response.get("vm")
    if not isinstance(shown, Mapping):
        return unknown("the relay's answer has no VM in it")
    return evaluate(shown, interval, stale)
