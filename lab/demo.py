"""The demo behind ``scripts/demo``: the whole of vmdiag on one machine, with real guests.

1. builds (once, then cached) the guest image with the packaged agent;
2. starts the stand-in oVirt engine and a real ``vmdiag-engine serve`` on its SQLite store;
3. starts the real relay, uploading to the engine with the host's engine-CA certificate;
4. boots two real VMs through libvirtd, their vmdiag channel added by the VDSM hook:
   ``demo-web``, healthy, and ``demo-filling``, whose root filesystem fills up by 16 MiB every
   10 s and which has a failed unit;
5. waits for the first diagnostics of each at the engine (through the oVirt SDK helpers, as an
   SDK user would), prints them, and the address of the Diagnostics pages;
6. prints a status line per VM every 30 s until Ctrl-C, then shuts everything down.

    python3 -m lab.demo            # run until Ctrl-C
    python3 -m lab.demo --check    # exit 0 once the health view and forecast show the
                                        # filling VM's problems, 1 if they do not in time
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from engine_plugin import sdk
from engine_plugin.health import humanize
from guest_agent.cli import render_report

from .demo_engine import DemoEngine, EngineError
from .vm import image as image_mod
from .vm.agent_layer import BROKEN_UNIT
from .vm.libvirt_env import Guest, GuestError, ensure_daemons
from .vm.progress import log, step
from .vm.relay_feed import RelayError, RelayFeed

#: (name, role of the test image): see tests/vm/agent_layer.py for the roles.
DEMO_VMS = (("demo-web", "healthy"), ("demo-filling", "filling"))
STATUS_EVERY_S = 30.0


def describe(diag: sdk.VmDiagnostics, now: float) -> str:
    """The engine's view of one VM: verdict, reasons, forecasts, then the report's tables."""
    age = "never" if diag.received_at is None else "%s ago" % humanize.duration(
        max(0.0, now - diag.received_at))
    lines = ["%s on %s: %s (agent %s, last report %s)" % (
        diag.vm.name, diag.vm.host_name, diag.health.status.upper(), diag.agent.state, age)]
    lines += ["  - [%s] %s" % (r.severity, r.message) for r in diag.health.reasons]
    for fc in diag.forecasts:
        if fc.eta_s is not None:
            lines.append("  forecast: %s full in about %s (%s, confidence %.2f)"
                         % (fc.label, humanize.duration(fc.eta_s), fc.status, fc.confidence))
    if diag.report:
        lines += ["", render_report(diag.report.get("sections") or {})]
    return "\n".join(lines)


def status_line(diag: sdk.VmDiagnostics) -> str:
    """One line per VM for the periodic update: verdict, root filesystem, the worst finding."""
    root = next((fc for fc in diag.forecasts if fc.label == "/"), None)
    parts = ["%-13s %s" % (diag.vm.name, diag.health.status)]
    if root is not None and root.capacity:
        parts.append("/ %.0f%% used" % (100.0 * root.current / root.capacity)
                     + (", full in about %s" % humanize.duration(root.eta_s)
                        if root.eta_s is not None else ""))
    counts = {}
    for reason in diag.health.reasons:
        counts[reason.severity] = counts.get(reason.severity, 0) + 1
    parts.append(", ".join("%d %s" % (n, sev) for sev, n in sorted(counts.items()))
                 or "no findings")
    if diag.health.reasons:
        parts.append(diag.health.reasons[0].message[:100])
    return "; ".join(parts)


def shows_the_problems(diag: sdk.VmDiagnostics) -> bool:
    """The filling VM's problems as the demo promises them: a forecast and the failed unit."""
    forecast = any(fc.label == "/" and fc.eta_s is not None and fc.status != "ok"
                   for fc in diag.forecasts)
    failed_unit = any(BROKEN_UNIT in r.message for r in diag.health.reasons)
    return forecast and failed_unit and diag.health.status in ("warning", "critical")


#: How long --check waits for the healthy VM to be all ok once the filling VM shows its problems
#: (its clock settles on the lab's time source within a few polls).
CALM_WAIT_S = 180.0


def is_calm(diag: sdk.VmDiagnostics) -> bool:
    """The healthy VM is healthy for real: every check ok, no forecast alarm. Its resolver and
    time source are the lab's servers on the host (``lab/vm/guest_net.py``), not muted checks."""
    return diag.health.status == "ok" and all(fc.status == "ok" for fc in diag.forecasts)


def wait_until(what: str, probe: Any, timeout: float, every: float = 5.0) -> Any:
    """Call ``probe()`` until it returns something true; log progress; TimeoutError after."""
    began = time.monotonic()
    last_note = began
    while True:
        value = probe()
        if value:
            log("%s after %.0fs" % (what, time.monotonic() - began))
            return value
        now = time.monotonic()
        if now - began > timeout:
            raise TimeoutError("%s: not within %.0fs" % (what, timeout))
        if now - last_note >= 30:
            log("still waiting: %s (%.0fs so far)" % (what, now - began))
            last_note = now
        time.sleep(every)


class Demo:
    """Everything the demo started, stopped in reverse order by :meth:`close`."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        os.chmod(run_dir, 0o755)  # QEMU runs as its own user and opens the disks below
        self.ids: Dict[str, str] = {str(uuid.uuid4()): name for name, _ in DEMO_VMS}
        self.by_name = {name: vm_id for vm_id, name in self.ids.items()}
        self.engine = DemoEngine(run_dir, self.ids)
        self.relay: Optional[RelayFeed] = None
        self.guests: List[Guest] = []
        self.conn: Any = None
        self.connection: Any = None

    def start(self) -> None:
        img = image_mod.ensure_image()
        self.conn = ensure_daemons()
        self.engine.start()
        first = next(iter(self.ids))
        # host_id left empty: the relay takes its certificate's CN, as on a real host
        self.relay = RelayFeed(first, os.path.join(self.run_dir, "relay.log"), host_id="",
                               upload=self.engine.relay_upload(), parent=self.run_dir)
        for name, role in DEMO_VMS:
            os.makedirs(os.path.join(self.run_dir, name))
            guest = Guest(self.conn, img, run_dir=os.path.join(self.run_dir, name), name=name,
                          vm_id=self.by_name[name], cmdline_extra="vmdiag.role=" + role)
            self.guests.append(guest)
            guest.start()
        log("booting %d guests (KVM when it works, else TCG: a minute or two)"
            % len(self.guests))
        for guest in self.guests:
            guest.wait_for_boot()
        self.connection = self.engine.connection()

    def diagnostics(self, name: str) -> sdk.VmDiagnostics:
        self.engine.check_alive()
        return sdk.vm_diagnostics(self.connection, self.by_name[name])

    def wait_first_reports(self, timeout: float) -> None:
        for name, _ in DEMO_VMS:
            with step("wait for the first diagnostics of %s at vmdiag-engine" % name):
                sdk.wait_for_report(self.connection, self.by_name[name],
                                    deadline=time.time() + timeout, newer_than=0)

    def close(self) -> None:
        for guest in reversed(self.guests):
            guest.destroy()
        if self.relay is not None:
            self.relay.close()
        if self.connection is not None:
            self.connection.close()
        self.engine.stop()
        if self.conn is not None:
            self.conn.close()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM (Ctrl-C, systemd, CI, kill) stop the demo cleanly."""
    raise KeyboardInterrupt


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m lab.demo",
                                     description="vmdiag end to end on this machine")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 once the filling VM's problems show at the engine")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for reports and, with --check, the forecast")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    runs = os.path.join(image_mod.cache_dir(), "runs")
    os.makedirs(runs, exist_ok=True)
    demo = Demo(tempfile.mkdtemp(prefix="demo-", dir=runs))
    # Ctrl-C too, explicitly: a demo started in the background by a script inherits SIGINT
    # as ignored, and Python then never raises KeyboardInterrupt for it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        demo.start()
        demo.wait_first_reports(args.timeout)
        now = time.time()
        for name, _ in DEMO_VMS:
            print("\n" + describe(demo.diagnostics(name), now), flush=True)
        print("Diagnostics pages (fleet, then each VM; the token is admin@internal's):\n  %s\n"
              "API: %s/api/v1/vms   engine log: %s   relay log: %s\n"
              % (demo.engine.pages_url(), demo.engine.api_base, demo.engine.log_path,
                 demo.relay.log_path if demo.relay else "-"), flush=True)
        if args.check:
            def problems_shown() -> Optional[sdk.VmDiagnostics]:
                diag = demo.diagnostics("demo-filling")
                return diag if shows_the_problems(diag) else None

            filling = wait_until("the health view shows demo-filling's forecast and failed unit",
                                 problems_shown, args.timeout)
            print(describe(filling, time.time()).split("\n\n")[0], flush=True)
            try:
                wait_until("demo-web is healthy (every check ok)",
                           lambda: is_calm(demo.diagnostics("demo-web")), CALM_WAIT_S)
            except TimeoutError:
                pass  # the status line below says what is not ok
            healthy = demo.diagnostics("demo-web")
            print(status_line(healthy), flush=True)
            return 0 if is_calm(healthy) else 1
        log("the guests keep reporting; a status line every %.0fs. Ctrl-C stops everything."
            % STATUS_EVERY_S)
        while True:
            time.sleep(STATUS_EVERY_S)
            for name, _ in DEMO_VMS:
                print(status_line(demo.diagnostics(name)), flush=True)
    except KeyboardInterrupt:
        log("stopping")
        return 0
    except (TimeoutError, sdk.VmdiagError, EngineError, RelayError, GuestError) as err:
        log("FAILED: %s (run folder %s)" % (err, demo.run_dir))
        return 1
    finally:
        with step("shut down the guests, the relay and the engine"):
            demo.close()


if __name__ == "__main__":
    sys.exit(main())
