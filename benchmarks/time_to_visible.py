#!/usr/bin/env python3
"""How fast a real guest's state reaches the engine's API: agent start, and a unit stopping.

Runs the demo's pieces (lab/: the stand-in oVirt engine, a real ``vmdiag-engine`` on SQLite, the
real relay uploading over TLS) with one real guest from the test image (the packaged agent,
report interval 10 s, watching ``vmdiag-sleeper.service``), and measures from the host:

* **agent start -> diagnostics in the API**: ``systemctl restart vmdiag-agent`` in the guest
  (through qemu-guest-agent), then the engine's API (``sdk.vm_diagnostics``, polled every
  0.25 s) until it serves a report of the new agent run (the lean first report), and then its
  first full one. Beside it, the report's own build time in the guest (the sum of its
  sections' ``duration_ms``): the "one emulation-scaled report"; the CPU the agent's cgroup
  used until the report was visible and how long a CPU quota held it back (``cpu.stat``,
  read through qga's file commands; 0 since the unit has a CPU weight instead of a quota); and,
  outside the unit, a bare ``python3 -c pass`` and the agent's imports.
* **``systemctl stop`` of a watched unit -> critical verdict in the API**: the unit is stopped
  right after a scheduled report (so the schedule would take an interval), and the API polled
  until the VM's health holds a critical reason naming the unit; then it is started again and
  the API polled until that reason is gone.

Each is repeated ``--rounds`` times; medians and the spread are printed, each with the host's
1-minute load average over its rounds (TCG guests slow down with the host's load). Times include the
relay's upload batching (``batch_interval`` 0.5 s in the demo's relay.conf, 2 s by default).

    python3 benchmarks/time_to_visible.py [--rounds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from engine_plugin import sdk  # noqa: E402
from lab.demo_engine import DemoEngine  # noqa: E402
from lab.vm import image as image_mod  # noqa: E402
from lab.vm import qga  # noqa: E402
from lab.vm.agent_layer import REPORT_INTERVAL_S, SLEEPER_UNIT  # noqa: E402
from lab.vm.libvirt_env import Guest, GuestError, ensure_daemons  # noqa: E402
from lab.vm.progress import log, step  # noqa: E402
from lab.vm.relay_feed import RelayFeed  # noqa: E402

POLL_S = 0.25
#: The agent's [agent] event_min_interval default: rounds are spaced wider than it.
EVENT_GAP_S = 10.0


def poll(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("%s: not within %.0f s" % (what, timeout))
        time.sleep(POLL_S)


class Bench:
    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        os.chmod(run_dir, 0o755)
        self.vm_id = str(uuid.uuid4())
        self.engine = DemoEngine(run_dir, {self.vm_id: "ttv-guest"})
        self.relay: RelayFeed | None = None
        self.guest: Guest | None = None
        self.connection: Any = None

    def start(self) -> None:
        img = image_mod.ensure_image()
        conn = ensure_daemons()
        self.engine.start()
        self.relay = RelayFeed(self.vm_id, os.path.join(self.run_dir, "relay.log"), host_id="",
                               upload=self.engine.relay_upload(), parent=self.run_dir)
        os.makedirs(os.path.join(self.run_dir, "guest"))
        self.guest = Guest(conn, img, run_dir=os.path.join(self.run_dir, "guest"),
                           name="ttv-guest", vm_id=self.vm_id)
        self.guest.start()
        try:
            self.guest.wait_for_boot()
        except GuestError as err:  # on a crowded host the prompt can lag the services
            log("no login prompt yet (%s); waiting for qemu-guest-agent instead"
                % str(err).splitlines()[0])
        self.guest.call(lambda d: qga.wait_ready(d, 900))
        self.connection = self.engine.connection()

    def diag(self) -> sdk.VmDiagnostics:
        return sdk.vm_diagnostics(self.connection, self.vm_id)

    def report(self) -> Dict[str, Any]:
        return self.diag().report or {}

    def guest_run(self, argv: List[str]) -> None:
        assert self.guest is not None
        rc, out = self.guest.call(lambda d: qga.run(d, argv))
        if rc != 0:
            raise RuntimeError("%s failed in the guest: %s" % (" ".join(argv), out))

    def unit_critical(self) -> bool:
        return any(SLEEPER_UNIT in r.message and r.severity == "critical"
                   for r in self.diag().health.reasons)

    def agent_start_round(self) -> Dict[str, float]:
        old = self.report().get("run_id")
        began = time.monotonic()
        self.guest_run(["/bin/systemctl", "restart", "vmdiag-agent.service"])
        issued = time.monotonic() - began
        report = poll("a report of the restarted agent in the API",
                      lambda: (lambda r: r if r.get("run_id") not in (None, old) else None)(
                          self.report()), 120)
        visible = time.monotonic() - began
        cpu = self.agent_cpu()  # what the agent's cgroup used and was held back meanwhile
        build_ms = sum(float(s.get("duration_ms") or 0.0)
                       for s in (report.get("sections") or {}).values())
        started, logged = self.agent_start_times(str(report.get("run_id")))
        run_id = report.get("run_id")
        poll("the first full report of the restarted agent in the API",
             lambda: (lambda r: r.get("run_id") == run_id and "time_sync" in (
                 ((r.get("sections") or {}).get("settings") or {}).get("data") or {}))(
                 self.report()), 120)
        return {"visible_s": visible, "full_visible_s": time.monotonic() - began,
                "restart_command_s": issued, "report_build_s": build_ms / 1000.0,
                # guest clock: systemd started the unit -> the agent logged its start (Python
                # and the imports) -> the first report was made (its build)
                "interpreter_s": logged - started, "to_report_s": float(report["time"]) - logged,
                "cpu_s": cpu["usage_usec"] / 1e6, "throttled_s": cpu["throttled_usec"] / 1e6,
                "host_load": os.getloadavg()[0]}

    def agent_cpu(self) -> Dict[str, int]:
        """The agent unit's cgroup ``cpu.stat`` (usage and quota throttling since the unit
        started), read through qga's file commands: no guest process is started."""
        assert self.guest is not None
        text = self.guest.call(lambda d: qga.read_file(
            d, "/sys/fs/cgroup/system.slice/vmdiag-agent.service/cpu.stat")).decode()
        return {k: int(v) for k, v in (line.split() for line in text.splitlines())}

    def interpreter_figures(self) -> Dict[str, float]:
        """Outside the unit: a bare ``python3 -c pass`` and the agent's imports
        on the start path, wall seconds in the guest, medians of 3."""
        probe = ("import time; t = time.perf_counter(); import guest_agent.cli, "
                 "guest_agent.daemon, guest_agent.collectors; "
                 "m = time.perf_counter(); import dbus, dbus.mainloop.glib; "
                 "print(m - t, time.perf_counter() - m)")
        bare, imports, dbus = [], [], []
        for _ in range(3):
            assert self.guest is not None
            rc, out = self.guest.call(lambda d: qga.run(d, [
                "/bin/sh", "-c", "a=$(date +%s.%N); python3 -c pass; b=$(date +%s.%N); "
                "python3 -c '" + probe + "'; echo $a $b"]))
            if rc != 0:
                raise RuntimeError("the import probe failed in the guest: %s" % out)
            first, second = out.strip().splitlines()[-2:]
            a, b = (float(v) for v in second.split())
            bare.append(b - a)
            imp, bus = (float(v) for v in first.split())
            imports.append(imp)
            dbus.append(bus)
        return {"python_bare_s": statistics.median(bare),
                "agent_imports_s": statistics.median(imports),
                "dbus_imports_s": statistics.median(dbus)}

    def agent_start_times(self, run_id: str) -> tuple:
        """(unit started, agent logged "starting" for ``run_id``), unix times, guest clock."""
        assert self.guest is not None
        rc, out = self.guest.call(lambda d: qga.run(d, [
            "/bin/journalctl", "-o", "short-unix", "--no-pager", "-n", "200",
            "_SYSTEMD_UNIT=vmdiag-agent.service", "+", "UNIT=vmdiag-agent.service"]))
        started = logged = float("nan")
        for line in out.splitlines():
            stamp, _, text = line.partition(" ")
            if "Started " in text:
                started = float(stamp)
            elif "starting: run_id " + run_id in text:
                logged = float(stamp)
        return started, logged

    def unit_stop_round(self) -> Dict[str, float]:
        seq = self.report().get("seq", -1)
        poll("a scheduled report", lambda: self.report().get("seq", -1) > seq,
             3 * REPORT_INTERVAL_S)
        began = time.monotonic()
        self.guest_run(["/bin/systemctl", "stop", SLEEPER_UNIT])
        poll("critical verdict naming %s" % SLEEPER_UNIT, self.unit_critical,
             3 * REPORT_INTERVAL_S)
        critical = time.monotonic() - began
        time.sleep(EVENT_GAP_S)  # a start inside the rate limit's gap waits for its end
        began = time.monotonic()
        self.guest_run(["/bin/systemctl", "start", SLEEPER_UNIT])
        poll("%s ok again" % SLEEPER_UNIT, lambda: not self.unit_critical(),
             3 * REPORT_INTERVAL_S)
        return {"critical_s": critical, "recovered_s": time.monotonic() - began,
                "host_load": os.getloadavg()[0]}

    def close(self) -> None:
        if self.guest is not None:
            self.guest.destroy()
        if self.relay is not None:
            self.relay.close()
        if self.connection is not None:
            self.connection.close()
        self.engine.stop()


def summary(rows: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    return {key: {"median": statistics.median(r[key] for r in rows),
                  "min": min(r[key] for r in rows), "max": max(r[key] for r in rows)}
            for key in rows[0]}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it builds the image and drives libvirtd")
    runs = os.path.join(image_mod.cache_dir(), "runs")
    os.makedirs(runs, exist_ok=True)
    bench = Bench(tempfile.mkdtemp(prefix="ttv-", dir=runs))
    try:
        bench.start()
        with step("first diagnostics at the engine"):
            poll("the first report in the API", lambda: bench.report().get("seq") is not None,
                 300)
        starts, stops = [], []
        for i in range(args.rounds):
            starts.append(bench.agent_start_round())
            log("round %d: agent start -> API %.1f s (its report built in %.1f s), host load %.1f"
                % (i + 1, starts[-1]["visible_s"], starts[-1]["report_build_s"],
                   starts[-1]["host_load"]))
            time.sleep(EVENT_GAP_S)
            stops.append(bench.unit_stop_round())
            log("round %d: systemctl stop -> critical in the API %.1f s, start -> ok %.1f s, "
                "host load %.1f" % (i + 1, stops[-1]["critical_s"], stops[-1]["recovered_s"],
                                    stops[-1]["host_load"]))
        interpreter = bench.interpreter_figures()
        result = {"accel": bench.guest.accel if bench.guest else None, "rounds": args.rounds,
                  "agent_start": summary(starts), "unit_stop": summary(stops),
                  "agent_start_rows": starts, "unit_stop_rows": stops,
                  "interpreter": interpreter, "load": os.getloadavg()}
    finally:
        bench.close()
    a, u = result["agent_start"], result["unit_stop"]
    print("\ntime to visible in the engine's API, %d rounds (%s): median [min-max]"
          % (args.rounds, result["accel"]))
    print("  host load (1 min) during the start rounds %.1f [%.1f-%.1f], the stop rounds "
          "%.1f [%.1f-%.1f]" % (a["host_load"]["median"], a["host_load"]["min"],
                                a["host_load"]["max"], u["host_load"]["median"],
                                u["host_load"]["min"], u["host_load"]["max"]))
    for label, row in (("agent start -> diagnostics (lean report)", a["visible_s"]),
                       ("  guest: unit started -> agent running", a["interpreter_s"]),
                       ("  guest: agent running -> report made", a["to_report_s"]),
                       ("  of which the report's build in the guest", a["report_build_s"]),
                       ("  agent's CPU until then (cgroup)", a["cpu_s"]),
                       ("  held back by a CPU quota meanwhile", a["throttled_s"]),
                       ("agent start -> first full report", a["full_visible_s"]),
                       ("systemctl stop -> critical verdict", u["critical_s"]),
                       ("systemctl start -> verdict clear", u["recovered_s"])):
        print("  %-44s %5.1f s [%.1f-%.1f]" % (label, row["median"], row["min"], row["max"]))
    print("  outside the unit: python3 -c pass %.2f s, the agent's imports %.2f s, dbus %.2f s"
          % (result["interpreter"]["python_bare_s"], result["interpreter"]["agent_imports_s"],
             result["interpreter"]["dbus_imports_s"]))
    print("  host load average at the end: %.1f %.1f %.1f" % tuple(result["load"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
