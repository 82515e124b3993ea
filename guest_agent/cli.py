"""``vmdiag-agent``: look at this guest by hand, check it like a Nagios plugin, or run the daemon.

    vmdiag-agent report [--json]     what the agent would send, as tables (or the JSON document)
    vmdiag-agent check               the checks; exit 0 ok, 1 warning, 2 critical, 3 unknown
    vmdiag-agent run [--device P]    the daemon (what the systemd unit starts)
    vmdiag-agent config              the effective configuration and where each value came from

``--config PATH`` (or $VMDIAG_AGENT_CONFIG) replaces /etc/vmdiag/agent.conf in all of them.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import types
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Sequence, TextIO

import guest_agent
from diag_protocol.units import format_field
from diag_protocol.vocabulary import STATUSES, worst, worst_first

from .checks import exit_code
from .config import CONFIG_ENV, DEFAULT_CONFIG_PATH, ConfigError, describe_options, load_config

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("guest_agent")

#: Exit code when the agent cannot even start (bad config): Nagios' "unknown" as well.
EXIT_CONFIG = 3


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "  ") -> str:
    """Plain aligned columns; None shows as '-'."""
    text_rows = [[("-" if v is None else str(v)) for v in row] for row in rows]
    if not text_rows:
        return indent + "(none)"
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in text_rows:
        lines.append(indent + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


_IF = "network.interfaces[]."
_MEM = "resources.memory."
_FS = "resources.filesystems[]."
_DISK = "resources.disks[]."


def _f(path: str, value: Any) -> str | None:
    """A report field in its own unit (diag_protocol.units); None when it is missing."""
    return format_field(path, value, missing="") or None


def _pairs(items: Iterable[Any]) -> str:
    return "\n".join("  %-18s %s" % (k + ":", "-" if v is None else v) for k, v in items)


def render_network(d: Mapping[str, Any]) -> List[str]:
    out = [table(("INTERFACE", "UP", "MTU", "ADDRESSES", "RX", "TX", "ERR%", "DROP%"),
                 ([i.get("name"), {True: "yes", False: "no"}.get(i.get("up")), i.get("mtu"),
                   " ".join("%s/%s" % (a.get("address"), a.get("prefixlen"))
                            for a in i.get("addresses") or ()) or None,
                   _f(_IF + "rx_bps", i.get("rx_bps")), _f(_IF + "tx_bps", i.get("tx_bps")),
                   _f(_IF + "error_rate", i.get("error_rate")),
                   _f(_IF + "drop_rate", i.get("drop_rate"))] for i in d.get("interfaces") or ()))]
    gw = d.get("default_gateway") or {}
    dns = d.get("dns") or {}
    out.append(_pairs([("default gateway", " ".join(filter(None, (gw.get("address"),
                                                                  gw.get("interface")))) or None),
                       ("name servers", ", ".join(dns.get("nameservers") or ()) or None),
                       ("search", ", ".join(dns.get("search") or ()) or None)]))
    if d.get("probes"):
        out.append(table(("PROBE", "TARGET", "OK", "LATENCY", "ERROR"),
                         ([p.get("kind"), p.get("target"), p.get("ok"),
                           _f("network.probes[].latency_ms", p.get("latency_ms")),
                           p.get("error")] for p in d["probes"])))
    if d.get("listening"):
        out.append(table(("LISTEN", "ADDRESS", "PORT", "PROCESS"),
                         ([s.get("proto"), s.get("address"), s.get("port"), s.get("process")]
                          for s in d["listening"])))
    return out


def render_resources(d: Mapping[str, Any]) -> List[str]:
    cpu, mem = d.get("cpu") or {}, d.get("memory") or {}
    load = d.get("load") or cpu.get("load") or ()
    out = [_pairs([
        ("cpus", cpu.get("count")),
        ("cpu busy", _f("resources.cpu.percent", cpu.get("percent"))),
        ("iowait / steal", "%s / %s" % (_f("resources.cpu.iowait", cpu.get("iowait")) or "-",
                                        _f("resources.cpu.steal", cpu.get("steal")) or "-")),
        ("load", " ".join(_f("resources.cpu.load[]", x) or "-" for x in load) or None),
        ("memory", "%s used of %s (%s available)" % (
            _f(_MEM + "used", mem.get("used")) or "-", _f(_MEM + "total", mem.get("total")) or "-",
            _f(_MEM + "available", mem.get("available")) or "-")),
        ("swap", "%s used of %s" % (_f(_MEM + "swap_used", mem.get("swap_used")) or "-",
                                    _f(_MEM + "swap_total", mem.get("swap_total")) or "-")),
        ("open files", "%s of %s" % (_f("resources.fds.open", (d.get("fds") or {}).get("open")),
                                     _f("resources.fds.max", (d.get("fds") or {}).get("max")))),
        ("uptime", _f("resources.uptime_s", d.get("uptime_s"))),
        ("oom kills", d.get("oom_kills")),
    ])]
    out.append(table(("MOUNT", "TYPE", "SIZE", "FREE", "USED", "INODES", "RO"),
                     ([f.get("mountpoint"), f.get("fstype"), _f(_FS + "total", f.get("total")),
                       _f(_FS + "free", f.get("free")), _f(_FS + "percent", f.get("percent")),
                       _f(_FS + "inodes_percent", f.get("inodes_percent")),
                       "ro" if f.get("readonly") else ""] for f in d.get("filesystems") or ())))
    if d.get("disks"):
        out.append(table(("DISK", "READ", "WRITE", "IOPS R/W", "AWAIT", "UTIL"),
                         ([k.get("name"), _f(_DISK + "read_bps", k.get("read_bps")),
                           _f(_DISK + "write_bps", k.get("write_bps")),
                           "%s / %s" % (_f(_DISK + "read_iops", k.get("read_iops")) or "-",
                                        _f(_DISK + "write_iops", k.get("write_iops")) or "-"),
                           _f(_DISK + "await_ms", k.get("await_ms")),
                           _f(_DISK + "util_percent", k.get("util_percent"))] for k in d["disks"])))
    for key, title in (("top_cpu", "TOP CPU"), ("top_memory", "TOP MEMORY")):
        if d.get(key):
            out.append(table((title, "PID", "USER", "CPU", "RSS"),
                             ([p.get("name"), p.get("pid"), p.get("user"),
                               _f("resources.%s[].cpu_percent" % key, p.get("cpu_percent")),
                               _f("resources.%s[].rss" % key, p.get("rss"))] for p in d[key])))
    return out


UNITS_VIA = {"dbus": "systemd's D-Bus API",
             "systemctl": "systemctl (no D-Bus client or no bus: install python3-dbus to save "
                          "a process start per report)"}


def render_applications(d: Mapping[str, Any]) -> List[str]:
    via = d.get("units_via")
    out = [_pairs([("unit states via", UNITS_VIA.get(str(via), via))])] if via else []
    out += [table(("FAILED UNIT", "STATE", "DESCRIPTION"),
                 ([u.get("name"), "%s/%s" % (u.get("active_state"), u.get("sub_state")),
                   u.get("description")] for u in d.get("failed_units") or ()))]
    if d.get("units"):
        out.append(table(("WATCHED UNIT", "STATE", "EXPECTED"),
                         ([u.get("name"), "%s/%s" % (u.get("active_state"), u.get("sub_state")),
                           u.get("expected")] for u in d["units"])))
    if d.get("processes"):
        out.append(table(("WATCHED PROCESS", "RUNNING", "COUNT"),
                         ([p.get("name"), p.get("present"), p.get("count")]
                          for p in d["processes"])))
    pk = d.get("packages") or {}
    if pk:
        out.append(_pairs([("packages", "%s (%s), digest %s" % (
            pk.get("count"), pk.get("manager"), str(pk.get("digest") or "-")[:16]))]))
    return out


def render_settings(d: Mapping[str, Any]) -> List[str]:
    osd, ts, sec = d.get("os") or {}, d.get("time_sync") or {}, d.get("security") or {}
    out = [_pairs([
        ("hostname", d.get("fqdn") or d.get("hostname")),
        ("os", osd.get("pretty") or osd.get("name")),
        ("kernel", "%s (%s)" % (d.get("kernel"), d.get("arch"))),
        ("timezone", d.get("timezone")),
        ("time sync", "%s, synchronised: %s, offset %s (read via %s)" % (
            ts.get("service"), ts.get("synchronized"),
            _f("settings.time_sync.offset_ms", ts.get("offset_ms")), ts.get("read_via") or "-")),
        ("selinux/apparmor", "%s / %s" % (sec.get("selinux"), sec.get("apparmor"))),
        ("reboot required", "%s%s" % (d.get("reboot_required"), (" (%s)" % d["reboot_reason"])
                                      if d.get("reboot_reason") else "")),
    ])]
    if d.get("sysctls"):
        out.append(table(("SYSCTL", "VALUE"), sorted(d["sysctls"].items())))
    if d.get("users"):
        out.append(table(("USER", "TERMINAL", "FROM"),
                         ([u.get("name"), u.get("terminal"), u.get("host")] for u in d["users"])))
    return out


def render_checks(d: Mapping[str, Any]) -> List[str]:
    return [table(("STATUS", "CHECK", "MESSAGE"),
                  ([r.get("status", "unknown").upper(), r.get("id"), r.get("message")]
                   for r in d.get("results") or ()))]


RENDERERS = {"network": render_network, "resources": render_resources,
             "applications": render_applications, "settings": render_settings,
             "checks": render_checks}


def render_report(sections: Mapping[str, Any]) -> str:
    """Readable tables per section; a renderer failing shows the raw data instead."""
    blocks: List[str] = []
    for name, render in RENDERERS.items():
        sec = sections.get(name)
        if sec is None:
            continue
        head = "== %s (%.0f ms) ==" % (name, sec.get("duration_ms") or 0.0)
        try:
            body = render(sec.get("data") or {})
        except Exception as err:  # noqa: BLE001 - show the data rather than nothing
            body = ["  (cannot format: %s)" % err, json.dumps(sec.get("data"), indent=2)]
        errs = ["  ! %s: %s" % (e.get("field"), e.get("error")) for e in sec.get("errors") or ()]
        blocks.append("\n\n".join([head] + body + (["\n".join(errs)] if errs else [])))
    return "\n\n".join(blocks) + "\n"


def render_checks_plain(results: Sequence[Mapping[str, Any]]) -> str:
    status = worst(r.get("status") for r in results)
    counts = {s: sum(1 for r in results if r.get("status") == s) for s in STATUSES}
    head = "VMDIAG %s - %d critical, %d warning, %d unknown, %d ok" % (
        status.upper(), counts["critical"], counts["warning"], counts["unknown"], counts["ok"])
    lines = ["%-8s %s: %s" % (r.get("status", "unknown").upper(), r.get("id"), r.get("message"))
             for r in worst_first(results)]
    return "\n".join([head] + lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    import argparse  # not for the unit's plain ``run`` (see main): it loads gettext

    parser = argparse.ArgumentParser(
        prog="vmdiag-agent",
        description="vmdiag guest agent: report on this guest, check it, or run the daemon.")
    parser.add_argument("--version", action="version", version=guest_agent.__version__)
    parser.add_argument("--config", metavar="PATH",
                        help="agent configuration (default $%s or %s); drop-ins are read from "
                             "PATH.d/*.conf" % (CONFIG_ENV, DEFAULT_CONFIG_PATH))
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    rep = sub.add_parser("report", help="collect once and show what would be sent")
    rep.add_argument("--json", action="store_true", help="print the report document as JSON")
    rep.add_argument("--sample", type=float, default=1.0, metavar="S",
                     help="seconds between the two samples rates need (default 1, 0 for none)")
    chk = sub.add_parser("check", help="run the checks; exit 0/1/2/3 like a Nagios plugin")
    chk.add_argument("--json", action="store_true", help="print the results as JSON")
    chk.add_argument("--sample", type=float, default=1.0, metavar="S",
                     help="seconds between the two samples rates need (default 1, 0 for none)")
    run = sub.add_parser("run", help="run the agent daemon")
    run.add_argument("--device", metavar="PATH",
                     help="the virtio-serial port (or a Unix socket / pty standing in for it)")
    cfg = sub.add_parser("config", help="show the effective configuration")
    cfg.add_argument("--defaults", action="store_true",
                     help="print an annotated agent.conf with every option and its default")
    return parser


def _setup_logging(level: str, stream: TextIO) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=stream,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run_daemon(config: Any, device: str | None) -> int:
    from .daemon import Agent

    if device:
        config = config.with_overrides({("agent", "device"): device})
    agent = Agent(config)

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run()
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``vmdiag-agent``; returns the exit code."""
    out = sys.stdout if out is None else out
    argv = sys.argv[1:] if argv is None else list(argv)
    args: Any
    if argv == ["run"]:  # what the unit starts: the start path does without argparse
        args = types.SimpleNamespace(command="run", config=None, verbose=False, device=None)
    else:
        args = build_parser().parse_args(argv)
    if args.command == "config" and args.defaults:
        describe_options(lambda line: out.write(line + "\n"))
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as err:
        sys.stderr.write("vmdiag-agent: configuration error: %s\n" % err)
        return EXIT_CONFIG
    _setup_logging("DEBUG" if args.verbose else config.get("agent", "log_level"), sys.stderr)
    if args.command == "run":
        return _run_daemon(config, args.device)
    if args.command == "config":
        for warning in config.warnings:
            sys.stderr.write("vmdiag-agent: %s\n" % warning)
        json.dump(config.effective(), out, indent=2, sort_keys=True)
        out.write("\n")
        return 0
    from .report import collect_once, report_document

    sections = collect_once(config, warmup_s=max(0.0, args.sample))
    if args.command == "report":
        if args.json:
            json.dump(report_document(config, sections), out, indent=2, sort_keys=True)
            out.write("\n")
        else:
            out.write(render_report(sections))
        return 0
    results: List[Dict[str, Any]] = sections["checks"]["data"]["results"]
    if args.json:
        json.dump(sections["checks"], out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        out.write(render_checks_plain(results))
    return exit_code(results)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
