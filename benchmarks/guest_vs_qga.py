#!/usr/bin/env python3
"""vmdiag's agent against qemu-guest-agent, side by side in one real guest.

Boots the test guest (lab/vm: the image, libvirtd, the VDSM hook) and, in alternating rounds:

* vmdiag: a ``report.now`` request over the org.vmdiag.agent.0 channel; wall time from sending
  the request until the full report (all five sections, checks included) has arrived on the
  host; CPU time of the agent's whole cgroup (``vmdiag-agent.service``, so helper commands it
  runs count too) from ``cpu.stat`` before and after.
* qemu-guest-agent: ``guest-get-osinfo``, ``guest-network-get-interfaces``,
  ``guest-get-fsinfo`` and ``guest-get-users`` one after the other through libvirt's
  ``qemuAgentCommand`` (the API of ``virsh qemu-agent-command``, minus virsh's process start);
  wall time for the four; CPU of ``qemu-guest-agent.service``'s cgroup.

Both cgroups are read with qga's file commands (no guest process is started). Reading costs
qga some CPU itself, so that cost is measured in empty rounds and subtracted from qga's figure.
A vmdiag round during which a scheduled report or anything but our report was built is
discarded. ``report.now`` forces the slow parts (package inventory, listening sockets, top
processes), so it is the worst case; the steady state, CPU per scheduled report interval
(report, checks and heartbeats, slow parts only when due), is measured too. Under TCG the
absolute numbers are slow-emulation numbers; the ratios still hold.

    python3 benchmarks/guest_vs_qga.py [--rounds 15] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab.vm import qga  # noqa: E402
from lab.vm.channel_client import ChannelClient  # noqa: E402
from lab.vm.image import ensure_image  # noqa: E402
from lab.vm.libvirt_env import Guest, ensure_daemons  # noqa: E402
from lab.vm.progress import log, step  # noqa: E402

AGENT_CGROUP = "/sys/fs/cgroup/system.slice/vmdiag-agent.service/cpu.stat"
AGENT_PROCS = "/sys/fs/cgroup/system.slice/vmdiag-agent.service/cgroup.procs"
#: The guest kernel's USER_HZ: /proc/<pid>/stat times are in these ticks.
CLOCK_TICKS = 100
QGA_CGROUP = "/sys/fs/cgroup/system.slice/qemu-guest-agent.service/cpu.stat"
QGA_COMMANDS = ("guest-get-osinfo", "guest-network-get-interfaces", "guest-get-fsinfo",
                "guest-get-users")


def cpu_usec(guest: Guest, path: str) -> int:
    """``usage_usec`` of a guest cgroup's cpu.stat."""
    for line in guest.call(lambda d: qga.read_file(d, path)).decode().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise RuntimeError("%s has no usage_usec: is the guest on cgroup v2?" % path)


def agent_pid(guest: Guest) -> int:
    """The agent's main process (the only one in its cgroup while it is idle)."""
    pids = guest.call(lambda d: qga.read_file(d, AGENT_PROCS)).split()
    if not pids:
        raise RuntimeError("no process in %s: is vmdiag-agent.service running?" % AGENT_PROCS)
    return int(pids[0])


def proc_cpu_ms(guest: Guest, pid: int) -> Tuple[float, float]:
    """(own, waited-for children's) CPU ms of a guest process, from /proc/<pid>/stat."""
    stat = guest.call(lambda d: qga.read_file(d, "/proc/%d/stat" % pid)).decode()
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime) * 1e3 / CLOCK_TICKS, (cutime + cstime) * 1e3 / CLOCK_TICKS


def vmdiag_round(guest: Guest, client: ChannelClient, pid: int) -> Dict[str, float] | None:
    """One report.now; None when another report was built in the window."""
    start = client.mark()
    own_before, children_before = proc_cpu_ms(guest, pid)
    before = cpu_usec(guest, AGENT_CGROUP)
    began = time.monotonic()
    reply = client.request("report.now", timeout=120)
    if not reply.get("ok"):
        raise RuntimeError("report.now failed: %s" % reply.get("error"))
    seq = reply["result"]["seq"]
    report = client.wait_for(lambda m: m.get("type") == "report" and m.get("seq") == seq, 120,
                             start)
    wall = time.monotonic() - began
    after = cpu_usec(guest, AGENT_CGROUP)
    own_after, children_after = proc_cpu_ms(guest, pid)
    others = [m for m in client.messages[start:] if m.get("type") == "report" and m is not report]
    if others:
        return None
    return {"wall_ms": wall * 1e3, "cpu_ms": (after - before) / 1e3,
            "bytes": float(len(json.dumps(report, separators=(",", ":")))),
            "own_cpu_ms": own_after - own_before,
            "helpers_cpu_ms": children_after - children_before}


def qga_round(guest: Guest, overhead_ms: float) -> Dict[str, float]:
    before = cpu_usec(guest, QGA_CGROUP)
    began = time.monotonic()
    size = 0
    for name in QGA_COMMANDS:
        answer = guest.call(lambda d, n=name: qga.command(d, n))  # type: ignore[misc]
        size += len(json.dumps(answer, separators=(",", ":")))
    wall = time.monotonic() - began
    after = cpu_usec(guest, QGA_CGROUP)
    return {"wall_ms": wall * 1e3, "cpu_ms": (after - before) / 1e3 - overhead_ms,
            "bytes": float(size)}


def read_overhead(guest: Guest, rounds: int) -> float:
    """qga CPU ms that one cgroup read adds to the next, measured with nothing in between."""
    deltas = []
    for _ in range(rounds):
        before = cpu_usec(guest, QGA_CGROUP)
        deltas.append((cpu_usec(guest, QGA_CGROUP) - before) / 1e3)
    return statistics.median(deltas)


def steady_state(guest: Guest, client: ChannelClient, intervals: int) -> Dict[str, float]:
    """Agent CPU ms from one scheduled report to the next, median over ``intervals``."""
    client.wait_for(lambda m: m.get("type") == "report", 120, client.mark())
    usage, costs = cpu_usec(guest, AGENT_CGROUP), []
    for _ in range(intervals):
        began = time.monotonic()
        client.wait_for(lambda m: m.get("type") == "report", 120, client.mark())
        now = cpu_usec(guest, AGENT_CGROUP)
        costs.append({"cpu_ms": (now - usage) / 1e3, "interval_s": time.monotonic() - began})
        usage = now
    return medians(costs)


def medians(rows: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def measure(guest: Guest, rounds: int) -> Dict[str, Any]:
    with step("wait for qemu-guest-agent"):
        guest.call(qga.wait_ready)
    with ChannelClient(guest.channel_path) as client:
        with step("wait for the agent's first report"):
            client.wait_for(lambda m: m.get("type") == "report", 180)
        with step("steady state: CPU per scheduled report interval"):
            steady = steady_state(guest, client, 3)
        log("steady state: %.0f ms CPU per %.1f s interval" % (steady["cpu_ms"],
                                                               steady["interval_s"]))
        overhead = read_overhead(guest, 10)
        pid = agent_pid(guest)
        log("qga cgroup read overhead: %.2f ms CPU" % overhead)
        ours: List[Dict[str, float]] = []
        theirs: List[Dict[str, float]] = []
        discarded = 0
        while len(ours) < rounds:
            # Start right after a scheduled report, so the next one is an interval away.
            mark = client.mark()
            client.wait_for(lambda m: m.get("type") == "report", 120, mark)
            row = vmdiag_round(guest, client, pid)
            if row is None:
                discarded += 1
                continue
            ours.append(row)
            theirs.append(qga_round(guest, overhead))
            log("round %d: vmdiag %.0f ms CPU / %.0f ms wall, qga %.0f ms CPU / %.0f ms wall"
                % (len(ours), row["cpu_ms"], row["wall_ms"], theirs[-1]["cpu_ms"],
                   theirs[-1]["wall_ms"]))
    return {"accel": guest.accel, "rounds": rounds, "discarded_rounds": discarded,
            "qga_read_overhead_ms": overhead, "vmdiag_steady": steady, "vmdiag": medians(ours),
            "qga": medians(theirs),
            "vmdiag_rows": ours, "qga_rows": theirs}


def ratio(a: float, b: float) -> str:
    return "%.2fx" % (a / b) if b > 0 else "n/a"


def print_table(result: Dict[str, Any], out: Callable[[str], Any] = print) -> None:
    ours, theirs = result["vmdiag"], result["qga"]
    out("")
    out("vmdiag agent vs qemu-guest-agent, medians of %d rounds (%s; %d rounds discarded)"
        % (result["rounds"], result["accel"], result["discarded_rounds"]))
    out("%-28s %12s %12s %8s" % ("", "vmdiag", "qga (4 cmds)", "ratio"))
    for key, label in (("cpu_ms", "guest CPU ms"), ("wall_ms", "wall ms request->answer"),
                       ("bytes", "answer bytes")):
        out("%-28s %12.1f %12.1f %8s" % (label, ours[key], theirs[key],
                                         ratio(ours[key], theirs[key])))
    out("vmdiag CPU split: agent process %.1f ms, helper commands it ran %.1f ms (ticks of "
        "10 ms)" % (ours["own_cpu_ms"], ours["helpers_cpu_ms"]))
    steady = result["vmdiag_steady"]
    out("vmdiag steady state: %.1f ms CPU per scheduled report (%.1f s interval, heartbeats "
        "included)" % (steady["cpu_ms"], steady["interval_s"]))
    out("vmdiag answers with all five sections and the checks; qga's four commands cover OS, "
        "interfaces, file systems and users only.")


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it builds the image and drives libvirtd")
    image = ensure_image()
    guest = Guest(ensure_daemons(), image)
    try:
        guest.start()
        guest.wait_for_boot()
        result = measure(guest, args.rounds)
    finally:
        guest.destroy()
    print_table(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
