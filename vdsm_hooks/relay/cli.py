"""``vmdiag-relay``: run the host relay, or ask the running one what it sees.

Usage::

    vmdiag-relay run [--config /etc/vmdiag/relay.conf] [--foreground] [--debug]
    vmdiag-relay status [--json]                 one line per VM on this host
    vmdiag-relay show VM [--json]                latest diagnostics of a VM (uuid or name)
    vmdiag-relay request VM METHOD [--timeout S] ask the guest agent (ping, report.now, ...)
    vmdiag-relay check VM [--interval S] [--stale N]   Nagios/Icinga plugin (exit 0/1/2/3)
    vmdiag-relay attach|detach (VM... | --all) [--live] [--force]   add/remove the channel
    vmdiag-relay setup [--engine FQDN | --standalone] [--check] [--root DIR]   set the host up

Which user runs the relay, and why
----------------------------------
The relay runs as a dedicated unprivileged user (``vmdiag``, primary group ``kvm``,
supplementary group ``qemu``; on Debian the group is ``libvirt-qemu``), not as root:

- It parses bytes from every guest, which are hostile by assumption, so it should hold as
  little privilege as possible: root would turn any parser bug into a host compromise.
- It needs no more. QEMU (user ``qemu``) creates each channel socket mode 0775 in
  ``/var/lib/libvirt/qemu/channels`` (owner ``qemu:qemu``, 0775), and connecting to a unix
  socket needs write permission on it, which the ``qemu`` group has. That is the same
  arrangement oVirt's own vdsm relies on: it runs as ``vdsm`` in group ``qemu`` to reach the
  ovirt-guest-agent and qemu-ga channels. libvirt is used read-only (``openReadOnly``: list
  domains, read live XML, receive events), which libvirt's read-only socket allows without
  polkit or SASL.
- Group ``kvm`` lets it read the host's client key for uploads
  (``/etc/pki/vdsm/keys/vdsmkey.pem``, ``vdsm:kvm`` 0440 on oVirt hosts), and makes the control
  socket (mode 0660) ``vmdiag:kvm``, so the after_vm_destroy hook (run by ``vdsm``, group
  ``kvm``) can notify it and nobody outside the group can.
- The systemd unit gives it ``RuntimeDirectory=vmdiag`` (``/run/vmdiag``) and
  ``StateDirectory=vmdiag`` (the spool). On SELinux hosts channel sockets carry the VM's
  svirt label; the relay's domain must be allowed to connect to them, as vdsm's is.

Running it as root works too (tests do), but is not recommended.

Exit codes: 0 ok, 1 the relay reported an error or is not running (``status``: or the engine
refuses its uploads, "UPLOAD BLOCKED"), 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import os
import sys
import time
from typing import Any, Dict, List, Sequence

from diag_protocol import ALLOWED_METHODS
from diag_protocol.units import format_field
from diag_protocol.vocabulary import worst_first

from .control import ControlError, call

DEFAULT_SOCKET = "/run/vmdiag/relay.sock"

_MARK = {"ok": "OK", "warning": "WARN", "critical": "CRIT", "unknown": "UNKN"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.func(args)
        return code
    except ControlError as err:
        print("vmdiag-relay: %s" % err, file=sys.stderr)
        return 1
    except _ConfigProblem as err:
        print("vmdiag-relay: %s" % err, file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmdiag-relay",
                                     description="vmdiag host relay: guest channels to engine")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="relay.conf path (default: $VMDIAG_RELAY_CONF or "
                                         "/etc/vmdiag/relay.conf)")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", parents=[common], help="run the relay daemon")
    run.add_argument("--foreground", action="store_true",
                     help="log to stderr with timestamps instead of syslog/journal")
    run.add_argument("--debug", action="store_true", help="debug logging")
    run.set_defaults(func=_cmd_run)

    def client(name: str, helptext: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("--socket", help="control socket (default: from relay.conf)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait")
        return p

    client("status", "one line per VM on this host").set_defaults(func=_cmd_status)
    show = client("show", "latest diagnostics of one VM")
    show.add_argument("vm", help="VM uuid or name")
    show.set_defaults(func=_cmd_show)
    req = client("request", "send a request to a VM's agent")
    req.add_argument("vm", help="VM uuid or name")
    req.add_argument("method", choices=ALLOWED_METHODS)
    req.set_defaults(func=_cmd_request)
    check = client("check", "one VM as a Nagios/Icinga plugin: exit 0 ok, 1 warning, "
                            "2 critical, 3 unknown, with perfdata")
    check.add_argument("vm", help="VM uuid or name")
    check.add_argument("--interval", type=float, default=60.0,
                       help="the agents' [agent] interval in seconds (default 60)")
    check.add_argument("--stale", type=float, default=3.0,
                       help="a report older than this many intervals is UNKNOWN (default 3)")
    check.set_defaults(func=_cmd_check)

    for verb, text in (("attach", "add the vmdiag channel to domains' definitions and "
                                   "hot-plug it (plain libvirt hosts)"),
                       ("detach", "remove the vmdiag channel from domains, live and defined")):
        p = sub.add_parser(verb, parents=[common], help=text, description=text + ". Refused "
                           "on oVirt hosts: VDSM owns the domains (the hook adds the channel).")
        p.add_argument("vm", nargs="*", help="domain names or uuids")
        p.add_argument("--all", action="store_true", help="every domain libvirt knows")
        p.add_argument("--live", action="store_true",
                       help="change only the running domain (needed for transient domains)")
        p.add_argument("--force", action="store_true",
                       help="go ahead on an oVirt host (unsupported: VDSM rewrites the "
                            "domains it starts)")
        p.set_defaults(func=_cmd_attach, attach=verb == "attach")

    from ..setup import add_arguments as setup_arguments

    setup = sub.add_parser(
        "setup", help="point this host's relay at the engine (idempotent; --check: doctor)",
        description="Check the host's vdsm certificate and the engine's ingest listener, write "
                    "the relay's drop-in and enable the unit; change nothing unless every step "
                    "can be done.")
    setup_arguments(setup)
    setup.set_defaults(func=_cmd_setup)
    return parser


def _cmd_setup(args: argparse.Namespace) -> int:
    from ..setup import main as setup_main

    return setup_main(args)


class _ConfigProblem(Exception):
    pass


def _load_config(path: str | None, resolve_host_id: bool = True) -> Any:
    from ..config import ConfigError, load_config
    try:
        return load_config(path, resolve_host_id=resolve_host_id)
    except ConfigError as err:
        raise _ConfigProblem(str(err)) from err


def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    return str(_load_config(args.config, resolve_host_id=False).relay.control_socket)


# -- run -----------------------------------------------------------------------------------

def _cmd_run(args: argparse.Namespace) -> int:
    _setup_logging(args.foreground, args.debug)
    cfg = _load_config(args.config)
    from .daemon import DaemonSettings, RelayDaemon
    settings = DaemonSettings.from_config(cfg)

    async def _main() -> None:
        uploader = None
        if cfg.upload.enabled:
            from .upload import Uploader
            uploader = Uploader(cfg.upload, settings.host_id)
        daemon = RelayDaemon(settings, uploader=uploader)
        metrics = None
        if cfg.metrics.listen:
            from .metrics import MetricsServer
            metrics = MetricsServer(daemon.cache, cfg.metrics.listen, cfg.metrics.max_vms,
                                    status=lambda: daemon.discovery.connected)
            try:
                await metrics.start()
            except OSError as err:
                raise ControlError(str(err)) from err
        try:
            await daemon.run()
        finally:
            if metrics is not None:
                await metrics.close()

    try:
        asyncio.run(_main())
    except ControlError as err:  # the control socket could not be set up
        logging.getLogger("vmdiag.relay").error("%s", err)
        return 1
    return 0


def _setup_logging(foreground: bool, debug: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    handler: logging.Handler
    if foreground or not os.path.exists("/dev/log"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("vmdiag-relay[%(process)d]: %(levelname)s "
                                               "%(name)s: %(message)s"))
    root.addHandler(handler)


# -- status --------------------------------------------------------------------------------

def _cmd_status(args: argparse.Namespace) -> int:
    response = call(_socket(args), {"cmd": "status"}, timeout=args.timeout)
    if args.json:
        _print_json(response)
        return 0
    print(format_status(response))
    # a blocked upload is an error an operator must fix: say so in the exit code too
    return 1 if (response.get("upload") or {}).get("blocked") else 0


def format_status(status: Dict[str, Any]) -> str:
    """The ``status`` answer as a table a person reads at a glance."""
    rows = [["VM", "NAME", "AGENT", "STATE", "LAST REPORT", "WORST CHECK", "DROPS"]]
    for vm in status.get("vms", []):
        worst = vm.get("worst_check")
        rows.append([
            vm["vm_id"], vm.get("name") or "-", vm.get("agent_version") or "-",
            _state(vm), _age(vm.get("last_report_age")),
            "%s %s" % (_MARK.get(worst["status"], worst["status"]), worst["id"]) if worst
            else "-",
            str(vm.get("dropped", 0)),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    libvirt = status.get("libvirt") or {}
    foot = "%d VM(s); libvirt %s %s" % (len(rows) - 1, libvirt.get("uri"),
                                        "connected" if libvirt.get("connected")
                                        else "NOT connected: %s" % libvirt.get("last_error"))
    upload = status.get("upload")
    if upload is None:
        foot += "; upload off"
    else:
        foot += "; upload: %s sent, %s queued, %s spooled, %s refused by the engine%s" % (
            upload.get("sent"), upload.get("queued"), upload.get("spool_pending"),
            upload.get("rejected", 0),
            ", last error: %s" % upload["last_error"] if upload.get("last_error") else "")
    out = lines + ["", foot]
    if upload and upload.get("blocked"):
        out.append("UPLOAD BLOCKED: %s" % upload["blocked"])
    return "\n".join(out)


def _state(vm: Dict[str, Any]) -> str:
    state = str(vm.get("state"))
    if state == "connected":
        if vm.get("responsive") is False:
            state = "unresponsive"
        elif vm.get("responsive") is None:
            state = "silent"
    if vm.get("vm_state") not in (None, "running", "unknown"):
        state += " (%s)" % vm["vm_state"]
    return state


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return "%ds ago" % seconds
    if seconds < 7200:
        return "%dm ago" % (seconds // 60)
    return "%dh ago" % (seconds // 3600)


# -- show ----------------------------------------------------------------------------------

def _cmd_show(args: argparse.Namespace) -> int:
    response = call(_socket(args), {"cmd": "show", "vm": args.vm}, timeout=args.timeout)
    if args.json:
        _print_json(response["vm"])
        return 0
    print(format_show(response["vm"]))
    return 0


def format_show(vm: Dict[str, Any]) -> str:
    """One VM's latest diagnostics, readable; ``--json`` has everything."""
    out: List[str] = []
    hello = vm.get("hello") or {}
    os_info = hello.get("os") or {}
    out.append("VM %s (%s): %s, %s" % (vm.get("name") or "-", vm["vm_id"], vm.get("vm_state"),
                                       _state(vm)))
    if hello:
        out.append("agent %s on %s, %s %s, kernel %s" % (
            hello.get("agent_version"), hello.get("hostname"), os_info.get("name"),
            os_info.get("version"), os_info.get("kernel")))
    counters = vm.get("counters") or {}
    drops = counters.get("drops") or {}
    out.append("channel: %s messages, %s bytes, %s dropped%s" % (
        counters.get("messages"), counters.get("bytes"), counters.get("dropped"),
        " (%s)" % ", ".join("%s %d" % kv for kv in drops.items()) if drops else ""))
    if vm.get("last_error"):
        out.append("last error: %s" % vm["last_error"])
    report = vm.get("report")
    if not report:
        out.append("no report yet")
        return "\n".join(out)
    out.append("report seq %s of run %s, taken %s, received %s" % (
        report["seq"], report["run_id"], _when(report["time"]), _age(vm.get("last_report_age"))))
    sections = report.get("sections") or {}
    checks = ((sections.get("checks") or {}).get("data") or {}).get("results") or []
    if checks:
        out.append("")
        out.append("checks:")
        for check in worst_first(checks):
            out.append("  %-4s %s: %s" % (_MARK.get(check["status"], "?"), check["id"],
                                          check.get("message") or ""))
    out.extend(_resources(sections.get("resources")))
    out.extend(_network(sections.get("network")))
    out.extend(_applications(sections.get("applications")))
    errors = [(name, e) for name, sec in sections.items() for e in sec.get("errors") or ()]
    if errors:
        out.append("")
        out.append("collector errors:")
        out.extend("  %s.%s: %s" % (name, e.get("field"), e.get("error")) for name, e in errors)
    return "\n".join(out)


def _resources(section: Dict[str, Any] | None) -> List[str]:
    data = (section or {}).get("data") or {}
    if not data:
        return []
    cpu, mem = data.get("cpu") or {}, data.get("memory") or {}
    out = ["", "resources: cpu %s of %s, load %s; memory %s used, swap %s" % (
        _f("resources.cpu.percent", cpu.get("percent")), cpu.get("count"), cpu.get("load"),
        _f("resources.memory.percent", mem.get("percent")),
        _f("resources.memory.swap_percent", mem.get("swap_percent")))]
    for fs in data.get("filesystems") or ():
        out.append("  %-20s %5s used, inodes %s%s" % (
            fs.get("mountpoint"), _f("resources.filesystems[].percent", fs.get("percent")),
            _f("resources.filesystems[].inodes_percent", fs.get("inodes_percent")),
            " READ-ONLY" if fs.get("readonly") else ""))
    return out


def _network(section: Dict[str, Any] | None) -> List[str]:
    data = (section or {}).get("data") or {}
    if not data:
        return []
    gateway = data.get("default_gateway") or {}
    out = ["", "network: default gateway %s" % (gateway.get("address") or "none")]
    for nic in data.get("interfaces") or ():
        addresses = ", ".join("%s/%s" % (a.get("address"), a.get("prefixlen"))
                              for a in nic.get("addresses") or ())
        out.append("  %-10s %-4s %s" % (nic.get("name"), "up" if nic.get("up") else "DOWN",
                                        addresses))
    for probe in data.get("probes") or ():
        out.append("  probe %s %s: %s" % (probe.get("kind"), probe.get("target"),
                                          "ok " + _f("network.probes[].latency_ms",
                                                     probe["latency_ms"])
                                          if probe.get("ok") and probe.get("latency_ms")
                                          is not None else "FAILED %s" % probe.get("error")))
    return out


def _applications(section: Dict[str, Any] | None) -> List[str]:
    data = (section or {}).get("data") or {}
    failed = data.get("failed_units") or ()
    if not failed:
        return []
    return ["", "failed units:"] + ["  %s (%s)" % (u.get("name"), u.get("description") or "")
                                    for u in failed]


def _f(path: str, value: Any) -> str:
    """A report field in its own unit (diag_protocol.units); "?" when it is missing."""
    return format_field(path, value, missing="?")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# -- request -------------------------------------------------------------------------------

def _cmd_request(args: argparse.Namespace) -> int:
    response = call(_socket(args), {"cmd": "request", "vm": args.vm, "method": args.method,
                                    "timeout": max(0.1, args.timeout - 1)},
                    timeout=args.timeout)
    _print_json(response.get("result"))
    return 0


# -- attach / detach -----------------------------------------------------------------------

def _cmd_attach(args: argparse.Namespace) -> int:
    from . import attach

    if bool(args.vm) == bool(args.all):
        print("vmdiag-relay: name the domains, or --all", file=sys.stderr)
        return 2
    marker = attach.vdsm_host()
    if marker and not args.force:
        print("vmdiag-relay: this is an oVirt host (%s): VDSM owns its domains and the "
              "before_vm_start hook adds the channel at each start; set the VM's 'vmdiag' "
              "custom property instead (--force: unsupported)" % marker, file=sys.stderr)
        return 2
    cfg = _load_config(args.config, resolve_host_id=False)
    import libvirt

    try:
        outcomes = attach.run(libvirt, cfg.relay.libvirt_uri, args.vm, args.all, args.attach,
                              args.live, cfg.relay.channels_dir)
    except libvirt.libvirtError as err:
        print("vmdiag-relay: cannot open %s read-write: %s (run as root)"
              % (cfg.relay.libvirt_uri, err.get_error_message()), file=sys.stderr)
        return 1
    for o in outcomes:
        print("%-4s %s (%s): %s" % ("ok" if o.done else "NO", o.name, o.vm_id, o.message))
    return 0 if all(o.done for o in outcomes) else 1


# -- check ---------------------------------------------------------------------------------

def _cmd_check(args: argparse.Namespace) -> int:
    from . import nagios_check

    try:
        path = _socket(args)
    except _ConfigProblem as err:
        result = nagios_check.unknown(str(err))
    else:
        result = nagios_check.run(call, path, args.vm, args.interval, args.stale, args.timeout)
    if args.json:
        _print_json(result._asdict())
    else:
        print(result.text())
    return result.exit_code


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
