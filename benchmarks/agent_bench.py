#!/usr/bin/env python3
"""What one vmdiag report costs the guest, side by side with the floor and with node_exporter.

Prints (medians over N runs):

* vmdiag agent: CPU ms and wall ms per full report (all sections, checks and encoding, the real
  collectors on this machine), bytes per report (first one with the package list, then
  steady state); RSS of a real ``python3 -m guest_agent run`` process talking to a local test
  host, read after the idle window (so after several reports, the package list included) and
  started as the packaged unit runs it (MALLOC_ARENA_MAX=1, byte-compiled modules); its idle
  CPU as % of one core at the default interval over a measured window.
* (a) the floor: naive raw psutil calls gathering about the same data, no JSON, no checks.
* (b) Debian's prometheus-node-exporter on 127.0.0.1 with the systemd and processes collectors:
  CPU ms per /metrics scrape (from /proc/<pid>/stat), bytes per scrape, RSS. Skipped with a
  message when the binary is absent.

Targets (guest-agent issue): CPU per report <= node_exporter's per scrape; RSS <= 20 MB; idle
CPU <= 0.1% of a core. All traffic stays on loopback; the gateway probe is switched off.

    python3 benchmarks/agent_bench.py [--reports 20] [--scrapes 20] [--idle-window 130]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any, Callable, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from diag_protocol import LineDecoder  # noqa: E402
from guest_agent.config import load_config  # noqa: E402
from guest_agent.report import ReportBuilder  # noqa: E402
from guest_agent.report import boot_id as read_boot_id  # noqa: E402

NODE_EXPORTER = "prometheus-node-exporter"
TICK = os.sysconf("SC_CLK_TCK")
QUIET_CONF = "[probes]\ngateway = no\n"


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds, from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status_kib(pid: int) -> Dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile (shared libraries' pages) of a process, in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def proc_rss_kib(pid: int) -> Tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    out = proc_status_kib(pid)
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def measure(fn: Callable[[], Any], n: int) -> Tuple[List[float], List[float], List[Any]]:
    cpu, wall, results = [], [], []
    for _ in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        results.append(fn())
        cpu.append((time.process_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - w0) * 1000.0)
    return cpu, wall, results


def bench_agent_reports(conf_path: str, n: int, gap: float) -> Dict[str, Any]:
    config = load_config(conf_path)
    builder = ReportBuilder(config)
    builder.prime()
    boot_id = read_boot_id()
    seq = [0]

    def one() -> int:
        sections = builder.collect()
        line = ReportBuilder.encode(boot_id, "bench", seq[0], sections)
        seq[0] += 1
        return len(line)

    time.sleep(gap)
    first_cpu, first_wall, first_size = measure(one, 1)
    cpu, wall, sizes = [], [], []
    for _ in range(n):
        time.sleep(gap)  # rates over a real interval, as in the daemon
        c, w, s = measure(one, 1)
        cpu += c
        wall += w
        sizes += s
    # report.now: every slow part (process scan, listening sockets, package inventory) again
    forced_cpu, forced_wall = [], []
    for _ in range(max(3, n // 4)):
        time.sleep(gap)
        builder.force("slow")
        c, w, _s = measure(one, 1)
        forced_cpu += c
        forced_wall += w
    builder.close()
    return {"forced_cpu_ms": statistics.median(forced_cpu),
            "forced_wall_ms": statistics.median(forced_wall),
            "first_cpu_ms": first_cpu[0], "first_wall_ms": first_wall[0],
            "first_bytes": first_size[0], "cpu_ms": statistics.median(cpu),
            "wall_ms": statistics.median(wall), "bytes": statistics.median(sizes),
            "cpu_ms_max": max(cpu)}


def bench_psutil_floor(n: int, gap: float) -> Dict[str, Any]:
    import psutil

    def gather() -> int:
        data: Dict[str, Any] = {
            "cpu": [c._asdict() for c in psutil.cpu_times_percent(percpu=True)],
            "mem": psutil.virtual_memory()._asdict(),
            "swap": psutil.swap_memory()._asdict(),
            "fs": [], "disks": {k: v._asdict() for k, v in
                                (psutil.disk_io_counters(perdisk=True) or {}).items()},
            "net": {k: v._asdict() for k, v in psutil.net_io_counters(pernic=True).items()},
            "addrs": {k: [a.address for a in v] for k, v in psutil.net_if_addrs().items()},
            "stats": {k: v._asdict() for k, v in psutil.net_if_stats().items()},
            "conns": len(psutil.net_connections("inet")),
            "procs": [p.info for p in psutil.process_iter(
                ["pid", "name", "username", "cpu_percent", "memory_info", "memory_percent"])],
            "users": [u._asdict() for u in psutil.users()],
            "boot": psutil.boot_time(),
        }
        for part in psutil.disk_partitions():
            try:
                data["fs"].append((part.mountpoint, psutil.disk_usage(part.mountpoint)._asdict()))
            except OSError:
                pass
        return len(json.dumps(data, default=str))

    gather()
    cpu, wall, sizes = [], [], []
    for _ in range(n):
        time.sleep(gap)
        c, w, s = measure(gather, 1)
        cpu += c
        wall += w
        sizes += s
    return {"cpu_ms": statistics.median(cpu), "wall_ms": statistics.median(wall),
            "bytes": statistics.median(sizes)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_node_exporter(n: int, gap: float) -> Dict[str, Any] | None:
    binary = shutil.which(NODE_EXPORTER)
    if binary is None:
        print("(b) skipped: %s is not installed (apt-get install prometheus-node-exporter)"
              % NODE_EXPORTER)
        return None
    port = free_port()
    proc = subprocess.Popen([binary, "--web.listen-address=127.0.0.1:%d" % port,
                             "--collector.systemd", "--collector.processes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d/metrics" % port
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("(b) skipped: node_exporter did not answer on %s" % url)
                    return None
                time.sleep(0.2)
        per_scrape, wall, sizes = [], [], []
        for _ in range(n):
            time.sleep(gap)
            c0, w0 = proc_cpu_s(proc.pid), time.perf_counter()
            body = urllib.request.urlopen(url, timeout=30).read()
            wall.append((time.perf_counter() - w0) * 1000.0)
            time.sleep(0.05)  # let it finish accounting the request
            per_scrape.append((proc_cpu_s(proc.pid) - c0) * 1000.0)
            sizes.append(len(body))
        c0 = proc_cpu_s(proc.pid)
        t0 = time.monotonic()
        for _ in range(n):
            urllib.request.urlopen(url, timeout=30).read()
        total = (proc_cpu_s(proc.pid) - c0) * 1000.0
        rss, hwm = proc_rss_kib(proc.pid)
        return {"cpu_ms": statistics.median(per_scrape), "cpu_ms_batch": total / n,
                "wall_ms": statistics.median(wall), "bytes": statistics.median(sizes),
                "rss_kib": rss, "hwm_kib": hwm, "batch_s": time.monotonic() - t0}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Host(threading.Thread):
    """Reads the agent's channel like the relay would, counting messages."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.decoder = LineDecoder()
        self.reports = 0
        self.bytes = 0
        self.first_report = threading.Event()

    def run(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    return
                self.bytes += len(data)
                for msg in self.decoder.feed(data):
                    if msg["type"] == "report":
                        self.reports += 1
                        self.first_report.set()


def agent_env(conf_dir: str, python: str) -> Dict[str, str]:
    """The environment of the packaged unit (MALLOC_ARENA_MAX=1), running a byte-compiled copy
    of the agent as an installed package has it (a module compiled at import leaves compiler
    garbage in the process). The copy keeps the working tree free of bytecode."""
    lib = os.path.join(conf_dir, "lib")
    for package in ("guest_agent", "diag_protocol"):
        shutil.copytree(os.path.join(REPO, package), os.path.join(lib, package),
                        ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=lib, MALLOC_ARENA_MAX="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([python, "-m", "compileall", "-q", lib], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env


def bench_agent_process(conf_dir: str, window: float, python: str) -> Dict[str, Any]:
    """A real agent process at the default interval: RSS after the window (the steady state,
    several reports in), and idle CPU over ``window``."""
    env = agent_env(conf_dir, python)
    sock = os.path.join(conf_dir, "port")
    host = Host(sock)
    host.start()
    # cwd: ``-m`` puts the working directory first on sys.path, ahead of the compiled copy
    proc = subprocess.Popen([python, "-m", "guest_agent", "--config",
                             os.path.join(conf_dir, "agent.conf"), "run", "--device", sock],
                            env=env, cwd=conf_dir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        if not host.first_report.wait(60):
            raise RuntimeError("the agent sent no report within 60s")
        time.sleep(1.0)  # let the first report's work settle
        c0, t0, r0 = proc_cpu_s(proc.pid), time.monotonic(), host.reports
        time.sleep(window)
        cpu = proc_cpu_s(proc.pid) - c0
        elapsed = time.monotonic() - t0
        status = proc_status_kib(proc.pid)
        return {"idle_cpu_pct": 100.0 * cpu / elapsed, "window_s": elapsed,
                "reports_in_window": host.reports - r0, "reports": host.reports,
                "rss_kib": status.get("VmRSS", 0), "hwm_kib": status.get("VmHWM", 0),
                "anon_kib": status.get("RssAnon", 0), "file_kib": status.get("RssFile", 0),
                "drops": dict(host.decoder.drops)}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return ("%.1f%s" % (value, unit)) if value < 1000 else ("%.0f%s" % (value, unit))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=int, default=20, help="reports/rounds/scrapes to time")
    ap.add_argument("--gap", type=float, default=0.5, help="seconds between two timed runs")
    ap.add_argument("--idle-window", type=float, default=130.0,
                    help="seconds over which the agent process's idle CPU is measured "
                         "(covers two reports at the default 60 s interval)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the agent process (a guest runs the distribution's "
                         "/usr/bin/python3; default: the one running this script)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vmdiag-bench-") as tmp:
        conf = os.path.join(tmp, "agent.conf")
        with open(conf, "w") as fh:
            fh.write(QUIET_CONF)
        print("measuring: %d agent reports, %d psutil rounds, %d node_exporter scrapes, "
              "%.0fs idle window ..." % (args.reports, args.reports, args.reports,
                                         args.idle_window), flush=True)
        agent = bench_agent_reports(conf, args.reports, args.gap)
        floor = bench_psutil_floor(args.reports, args.gap)
        node = bench_node_exporter(args.reports, args.gap)
        proc = bench_agent_process(tmp, args.idle_window, args.python)

    rows = [
        ("", "vmdiag report", "(a) raw psutil", "(b) node_exporter"),
        ("CPU ms / report (median)", fmt(agent["cpu_ms"]), fmt(floor["cpu_ms"]),
         fmt(node["cpu_ms"]) if node else "-"),
        ("wall ms / report (median)", fmt(agent["wall_ms"]), fmt(floor["wall_ms"]),
         fmt(node["wall_ms"]) if node else "-"),
        ("bytes / report (median)", fmt(agent["bytes"]), fmt(floor["bytes"]),
         fmt(node["bytes"]) if node else "-"),
        ("first report (with packages)", "%s ms CPU, %s B" % (fmt(agent["first_cpu_ms"]),
                                                            fmt(agent["first_bytes"])), "", ""),
        ("report.now (all slow parts)", "%s ms CPU, %s ms wall" % (
            fmt(agent["forced_cpu_ms"]), fmt(agent["forced_wall_ms"])), "", ""),
        ("RSS of the process (MiB)", fmt(proc["rss_kib"] / 1024.0), "",
         fmt(node["rss_kib"] / 1024.0) if node else "-"),
        ("idle CPU, % of a core", "%.3f%%" % proc["idle_cpu_pct"], "", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print()
    print("ratios: agent/psutil CPU %.2fx" % (agent["cpu_ms"] / max(floor["cpu_ms"], 1e-9)),
          end="")
    if node:
        print(", agent/node_exporter CPU %.2fx (node_exporter batch-averaged %.1f ms/scrape)"
              % (agent["cpu_ms"] / max(node["cpu_ms"], 1e-9), node["cpu_ms_batch"]), end="")
    print()
    print("idle window: %.0fs with %d reports; host-side drops %s"
          % (proc["window_s"], proc["reports_in_window"], proc["drops"] or "none"))
    print("agent process (%s): RSS %.1f MiB after %d reports (%.1f anonymous, %.1f shared "
          "library/file pages), high-water %.1f MiB"
          % (args.python, proc["rss_kib"] / 1024.0, proc["reports"], proc["anon_kib"] / 1024.0,
             proc["file_kib"] / 1024.0, proc["hwm_kib"] / 1024.0))
    targets = [("CPU per report <= node_exporter per scrape",
                None if node is None else agent["cpu_ms"] <= node["cpu_ms"]),
               ("RSS <= 20 MB", proc["rss_kib"] * 1024 <= 20e6),
               ("idle CPU <= 0.1% of a core", proc["idle_cpu_pct"] <= 0.1)]
    for name, ok in targets:
        print("target %-45s %s" % (name, "n/a" if ok is None else ("met" if ok else "MISSED")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
