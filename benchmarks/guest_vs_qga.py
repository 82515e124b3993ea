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
import gzip
import json
import os
import socket
import statistics
import sys
import time
import urllib.request
from typing import Any, Callable, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import libvirt_qemu  # noqa: E402

from lab.vm import qga  # noqa: E402
from lab.vm.channel_client import ChannelClient  # noqa: E402
from lab.vm.image import ensure_image  # noqa: E402
from lab.vm.libvirt_env import Guest, ensure_daemons  # noqa: E402
from lab.vm.progress import log, step  # noqa: E402
from lab.vm.rootfs import NODE_EXPORTER_PORT  # noqa: E402

AGENT_CGROUP = "/sys/fs/cgroup/system.slice/vmdiag-agent.service/cpu.stat"
AGENT_PROCS = "/sys/fs/cgroup/system.slice/vmdiag-agent.service/cgroup.procs"
#: The guest kernel's USER_HZ: /proc/<pid>/stat times are in these ticks.
CLOCK_TICKS = 100
QGA_CGROUP = "/sys/fs/cgroup/system.slice/qemu-guest-agent.service/cpu.stat"
NODE_CGROUP = "/sys/fs/cgroup/system.slice/prometheus-node-exporter.service/cpu.stat"
#: Who else works for an answer: systemd answering D-Bus calls, and the bus daemon.
HELPER_CGROUPS = ("/sys/fs/cgroup/init.scope/cpu.stat",
                  "/sys/fs/cgroup/system.slice/dbus.service/cpu.stat")
#: What Prometheus sends when it scrapes.
SCRAPE_HEADERS = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;"
                            "version=0.0.4;q=0.5,*/*;q=0.1", "Accept-Encoding": "gzip"}
QGA_COMMANDS = ("guest-get-osinfo", "guest-network-get-interfaces", "guest-get-fsinfo",
                "guest-get-users")


def cpu_usec(guest: Guest, path: str) -> int:
    """``usage_usec`` of a guest cgroup's cpu.stat."""
    for line in guest.call(lambda d: qga.read_file(d, path)).decode().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise RuntimeError("%s has no usage_usec: is the guest on cgroup v2?" % path)


def helpers_usec(guest: Guest) -> int:
    return sum(cpu_usec(guest, path) for path in HELPER_CGROUPS)


def forward_port(guest: Guest, guest_port: int) -> int:
    """Forward a free loopback port of the host to ``guest_port`` through QEMU's user-mode
    network (HMP ``hostfwd_add`` on the guest's netdev); return the host port."""
    hmp = libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
    info = guest.call(lambda d: libvirt_qemu.qemuMonitorCommand(d, "info network", hmp))
    netdev = next((line.split(":")[0].strip(" \\") for line in info.splitlines()
                   if "type=user" in line), None)
    if netdev is None:
        raise RuntimeError("the guest has no user-mode netdev: %s" % info)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    answer = guest.call(lambda d: libvirt_qemu.qemuMonitorCommand(
        d, "hostfwd_add %s tcp:127.0.0.1:%d-:%d" % (netdev, port, guest_port), hmp))
    if answer.strip():
        raise RuntimeError("hostfwd_add failed: %s" % answer)
    return port


def scrape(port: int) -> Tuple[int, int, int]:
    """One Prometheus-style scrape: (bytes on the wire, bytes uncompressed, samples)."""
    request = urllib.request.Request("http://127.0.0.1:%d/metrics" % port,
                                     headers=SCRAPE_HEADERS)
    with urllib.request.urlopen(request, timeout=60) as answer:
        wire = answer.read()
        encoding = answer.headers.get("Content-Encoding", "")
    body = gzip.decompress(wire) if encoding == "gzip" else wire
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return len(wire), len(body), samples


def wait_for_exporter(port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            scrape(port)
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise RuntimeError("node_exporter did not answer on the forwarded port "
                                   "within %.0fs: %s" % (timeout, err)) from err
            time.sleep(2)


def node_exporter_round(guest: Guest, port: int) -> Dict[str, float]:
    before, helpers_before = cpu_usec(guest, NODE_CGROUP), helpers_usec(guest)
    began = time.monotonic()
    wire, body, samples = scrape(port)
    wall = time.monotonic() - began
    after, helpers_after = cpu_usec(guest, NODE_CGROUP), helpers_usec(guest)
    return {"cpu_ms": (after - before) / 1e3, "helpers_cpu_ms": (helpers_after
                                                                  - helpers_before) / 1e3,
            "wall_ms": wall * 1e3, "bytes": float(wire), "bytes_uncompressed": float(body),
            "samples": float(samples)}


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
    """Agent CPU ms from one scheduled report to the next (and what systemd and the bus
    daemon spent meanwhile), and the bytes of a scheduled report; medians over ``intervals``.
    """
    client.wait_for(lambda m: m.get("type") == "report", 120, client.mark())
    usage, helpers, costs = cpu_usec(guest, AGENT_CGROUP), helpers_usec(guest), []
    for _ in range(intervals):
        began = time.monotonic()
        report = client.wait_for(lambda m: m.get("type") == "report", 120, client.mark())
        now, helpers_now = cpu_usec(guest, AGENT_CGROUP), helpers_usec(guest)
        costs.append({"cpu_ms": (now - usage) / 1e3,
                      "helpers_cpu_ms": (helpers_now - helpers) / 1e3,
                      "interval_s": time.monotonic() - began,
                      "bytes": float(len(json.dumps(report, separators=(",", ":"))))})
        usage, helpers = now, helpers_now
    last = report["sections"]
    out = medians(costs)
    out["units_via"] = last["applications"]["data"].get("units_via")  # type: ignore[assignment]
    out["time_sync_via"] = (last["settings"]["data"].get("time_sync")  # type: ignore[assignment]
                            or {}).get("read_via")
    return out


def medians(rows: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def measure(guest: Guest, rounds: int) -> Dict[str, Any]:
    with step("wait for qemu-guest-agent"):
        guest.call(qga.wait_ready)
    port = forward_port(guest, NODE_EXPORTER_PORT)
    with step("wait for node_exporter on 127.0.0.1:%d" % port):
        wait_for_exporter(port)
    with ChannelClient(guest.channel_path) as client:
        with step("wait for the agent's first report"):
            client.wait_for(lambda m: m.get("type") == "report", 180)
        # settle: boot-time work (package inventory, first scans) is not steady state
        client.wait_for(lambda m: m.get("type") == "report", 120, client.mark())
        steady_rows, node_rows = [], []
        with step("steady state: vmdiag per scheduled report, node_exporter per scrape"):
            for _ in range(max(3, rounds // 2)):
                steady_rows.append(steady_state(guest, client, 1))
                # right after a scheduled report, so the agent is idle during the scrape
                node_rows.append(node_exporter_round(guest, port))
                log("vmdiag %.0f ms CPU per scheduled report (%d bytes; systemd+dbus %.0f ms), "
                    "node_exporter %.0f ms per scrape (%d bytes gzip; systemd+dbus %.0f ms)"
                    % (steady_rows[-1]["cpu_ms"], steady_rows[-1]["bytes"],
                       steady_rows[-1]["helpers_cpu_ms"], node_rows[-1]["cpu_ms"],
                       node_rows[-1]["bytes"], node_rows[-1]["helpers_cpu_ms"]))
        steady = medians([{k: v for k, v in r.items() if isinstance(v, float)}
                          for r in steady_rows])
        steady["units_via"] = steady_rows[-1]["units_via"]
        steady["time_sync_via"] = steady_rows[-1]["time_sync_via"]
        node = medians(node_rows)
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
            "qga": medians(theirs), "node_exporter": node,
            "vmdiag_rows": ours, "qga_rows": theirs, "vmdiag_steady_rows": steady_rows,
            "node_exporter_rows": node_rows}


def ratio(a: float, b: float) -> str:
    return "%.2fx" % (a / b) if b > 0 else "n/a"


def print_table(result: Dict[str, Any], out: Callable[[str], Any] = print) -> None:
    ours, theirs = result["vmdiag"], result["qga"]
    steady, node = result["vmdiag_steady"], result["node_exporter"]
    out("")
    out("one answer each, same guest, same run (%s), medians" % result["accel"])
    out("%-34s %14s %14s %14s" % ("", "vmdiag report", "node_exporter", "qga (4 cmds)"))
    out("%-34s %14.1f %14.1f %14.1f" % ("guest CPU ms, the answerer", steady["cpu_ms"],
                                        node["cpu_ms"], theirs["cpu_ms"]))
    out("%-34s %14.1f %14.1f %14s" % ("guest CPU ms, systemd + dbus", steady["helpers_cpu_ms"],
                                      node["helpers_cpu_ms"], "-"))
    out("%-34s %14.0f %14.0f %14.0f" % ("bytes per answer", steady["bytes"], node["bytes"],
                                        theirs["bytes"]))
    out("node_exporter: %.0f bytes uncompressed, %.0f samples; vmdiag: CPU over a whole %.1f s "
        "interval (heartbeats and event polling included), unit states via %s, time sync via "
        "%s; vmdiag/node_exporter CPU %s"
        % (node["bytes_uncompressed"], node["samples"], steady["interval_s"],
           steady.get("units_via"), steady.get("time_sync_via"),
           ratio(steady["cpu_ms"], node["cpu_ms"])))
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
