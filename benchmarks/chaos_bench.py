#!/usr/bin/env python3
"""Chaos benchmark: simulated guests, some hostile, through a real relay process to a real
vmdiag-engine process over real TLS, while the engine stops and the relay is killed (-9).

Set-up (all real processes, nothing in-process but the guests):

- ``vmdiag-engine serve`` (lab/demo_engine.py: the stand-in oVirt engine places every VM on
  the relay's host; SQLite store; its own engine CA and the host certificate);
- ``vmdiag-relay run`` on libvirt's test driver with a node file that runs one domain per
  guest, each with the vmdiag channel at the guest's socket, uploading with the host
  certificate;
- the guests: unix sockets in this process playing QEMU's side of each channel
  (lab/fake_guest.py). A well-behaved guest sends a ~5 KB report every ``--interval`` s.
  Hostile guests, in turn: numbers out of range, a flood of valid reports at full speed,
  future timestamps, sequence regressions and replays, a one-byte drip, garbage.

Timeline over ``--duration`` s: at 25 % the engine stops for ``--outage`` s; at 65 % the
relay is killed with SIGKILL and started again 2 s later. Then the guests stop, the relay
drains its spool, and the engine's store is read.

Printed, for the well-behaved guests: reports lost (sent by a guest, never stored), those of
them written in the 3 s before the kill or while the relay was down (the channel has no
acknowledgement: what the dead relay had read but not yet spooled is gone), duplicates stored,
and the p50/p99 guest-to-engine latency (the engine's receive time minus the report's time),
over all reports and over those sent while nothing was down (the outage dominates the first).
``--compare`` runs the same timeline twice, without and with the hostile guests, and prints
the p99 ratio.

Usage: python3 benchmarks/chaos_bench.py [--guests 200] [--hostile 10] [--duration 600]
       [--outage 120] [--interval 10] [--compare] [--json]
The CI variant (tests/relay_upload/test_chaos.py) runs 40 guests for 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from diag_protocol import encode, host_socket_path  # noqa: E402
from lab.demo_engine import HOST_CN, DemoEngine  # noqa: E402
from lab.fake_guest import FakeGuest, hello, sample_report  # noqa: E402

HOSTILE_KINDS = ("out_of_range", "flood", "future", "replay", "drip", "garbage")


class ChaosEngine(DemoEngine):
    """The demo's engine, which can also be stopped and started again on the same port and
    store while the stand-in oVirt engine keeps running."""

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)
        self.proc = None

    def resume(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT)
        with open(self.log_path, "a", encoding="utf-8") as logfile:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine_plugin.service.cli", "--config", self.config,
                 "serve"], env=env, cwd=ROOT, stdout=logfile, stderr=subprocess.STDOUT,
                start_new_session=True)
        self._wait_ready(60)


class Relay:
    def __init__(self, run_dir: str, config: str) -> None:
        self.config = config
        self.log = os.path.join(run_dir, "relay.log")
        self.socket = os.path.join(run_dir, "relay.sock")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT)
        with open(self.log, "a", encoding="utf-8") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vdsm_hooks.relay.cli", "run", "--foreground",
                 "--config", self.config], env=env, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
            self.proc = None

    def status(self) -> Optional[Dict[str, Any]]:
        from vdsm_hooks.relay.control import ControlError, call
        try:
            return call(self.socket, {"cmd": "status"}, timeout=10)
        except ControlError:
            return None


def node_xml(guests: List[FakeGuest]) -> str:
    domains = []
    for i, g in enumerate(guests):
        domains.append(
            "<domain type='test'><name>chaos-%d</name><uuid>%s</uuid><memory>65536</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os><devices><channel type='unix'>"
            "<source mode='bind' path='%s'/><target type='virtio' name='org.vmdiag.agent.0'/>"
            "</channel></devices></domain>" % (i, g.vm_id, g.path))
    return "<node>\n%s\n</node>\n" % "\n".join(domains)


class Ledger:
    """What the well-behaved guests sent: (vm_id, run_id, seq) -> the report's time."""

    def __init__(self) -> None:
        self.sent: Dict[Tuple[str, str, int], float] = {}


async def well_behaved(guest: FakeGuest, ledger: Ledger, interval: float,
                       stop: asyncio.Event, rng: random.Random) -> None:
    seq = 0
    run_id = "run-%s" % guest.vm_id[:8]
    await _send(guest, hello())
    while not stop.is_set():
        seq += 1
        now = time.time()
        report = sample_report(seq=seq, run_id=run_id, processes=5, units=5, now=now, rng=rng)
        if await _send(guest, report):
            ledger.sent[(guest.vm_id, run_id, seq)] = now
        try:
            await asyncio.wait_for(stop.wait(), interval * rng.uniform(0.9, 1.1))
        except asyncio.TimeoutError:
            pass


async def _send(guest: FakeGuest, *msgs: Any) -> bool:
    try:
        await guest.send(*msgs)
        return True
    except (asyncio.TimeoutError, ConnectionError, AssertionError, OSError):
        return False  # the relay is down: this report was never written


async def _write(guest: FakeGuest, data: bytes) -> None:
    try:
        await guest.write(data)
    except (asyncio.TimeoutError, ConnectionError, AssertionError, OSError):
        await asyncio.sleep(0.5)


async def hostile(guest: FakeGuest, kind: str, stop: asyncio.Event,
                  rng: random.Random) -> None:
    base = json.loads(encode(sample_report(seq=0, processes=2, units=2)))
    seq = 0
    while not stop.is_set():
        seq += 1
        msg = dict(base, seq=seq, time=time.time())
        if kind == "out_of_range":
            msg["seq"] = rng.choice([2**63, 2**53, -1])
            await _write(guest, json.dumps(msg).encode() + b"\n")
            await asyncio.sleep(0.05)
        elif kind == "flood":
            await _write(guest, b"".join(json.dumps(dict(msg, seq=seq * 1000 + i)).encode()
                                         + b"\n" for i in range(200)))
            await asyncio.sleep(0)
        elif kind == "future":
            msg["time"] = time.time() + rng.uniform(3600, 10 * 365 * 86400)
            await _write(guest, json.dumps(msg).encode() + b"\n")
            await asyncio.sleep(1)
        elif kind == "replay":
            msg["seq"] = rng.randint(1, 5)  # regressions and replays of old sequence numbers
            await _write(guest, json.dumps(msg).encode() + b"\n")
            await asyncio.sleep(0.1)
        elif kind == "drip":
            line = json.dumps(msg).encode() + b"\n"
            for i in range(0, len(line), 7):
                if stop.is_set():
                    return
                await _write(guest, line[i:i + 7])
                await asyncio.sleep(0.01)
        else:
            await _write(guest, bytes(rng.getrandbits(8) for _ in range(4096)) + b"\n")
            await asyncio.sleep(0.05)


def stored(db_path: str) -> Dict[Tuple[str, str, int], List[float]]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT v.vm_id, i.run_id, i.seq, i.ingested_at FROM ingested i "
                          "JOIN vms v ON v.vm_key = i.vm_key").fetchall()
    out: Dict[Tuple[str, str, int], List[float]] = {}
    for vm, run, seq, at in rows:
        out.setdefault((vm, run, seq), []).append(at)
    return out


def engine_duplicates(engine: ChaosEngine) -> float:
    try:
        with urllib.request.urlopen(engine.api_base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vmdiag_ingest_envelopes_total") and 'duplicate' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def run_once(args: argparse.Namespace, hostile_count: int) -> Dict[str, Any]:
    run_dir = tempfile.mkdtemp(prefix="vmdiag-chaos-")
    channels = os.path.join(run_dir, "ch")
    os.makedirs(channels)
    guests = []
    for _ in range(args.guests):
        g = FakeGuest("")
        g.path = host_socket_path(g.vm_id, channels)
        guests.append(await g.start())
    engine = ChaosEngine(run_dir, {g.vm_id: "chaos-%d" % i for i, g in enumerate(guests)})
    await asyncio.to_thread(engine.start)
    node = os.path.join(run_dir, "node.xml")
    with open(node, "w", encoding="utf-8") as f:
        f.write(node_xml(guests))
    config = os.path.join(run_dir, "relay.conf")
    with open(config, "w", encoding="utf-8") as f:
        f.write("[relay]\nhost_id = %s\nlibvirt_uri = test://%s\nchannels_dir = %s\n"
                "control_socket = %s\ncontrol_group =\nreconnect_max_backoff = 2\n\n"
                "[upload]\n%sretry_max_backoff = 3\n"
                % (HOST_CN, node, channels, os.path.join(run_dir, "relay.sock"),
                   engine.relay_upload()))
    relay = Relay(run_dir, config)
    relay.start()
    ledger = Ledger()
    stop = asyncio.Event()
    hostile_guests = guests[:hostile_count]
    tasks = [asyncio.ensure_future(hostile(g, HOSTILE_KINDS[i % len(HOSTILE_KINDS)], stop,
                                           random.Random(i)))
             for i, g in enumerate(hostile_guests)]
    tasks += [asyncio.ensure_future(well_behaved(g, ledger, args.interval, stop,
                                                 random.Random(args.seed * 1000 + i)))
              for i, g in enumerate(guests[hostile_count:])]
    started = time.monotonic()
    timeline: Dict[str, float] = {}

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, started + fraction * args.duration - time.monotonic()))

    await at(0.25)
    timeline["engine_stopped"] = time.time()
    await asyncio.to_thread(engine.pause)
    await asyncio.sleep(args.outage)
    await asyncio.to_thread(engine.resume)
    timeline["engine_back"] = time.time()
    duplicates = 0.0
    await at(0.65)
    timeline["relay_killed"] = time.time()
    relay.kill()
    await asyncio.sleep(2)
    relay.start()
    timeline["relay_back"] = time.time()
    await at(1.0)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.monotonic() + 180
    drained = False
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(relay.status)
        upload = (status or {}).get("upload") or {}
        if status and upload.get("spool_pending") == 0 and upload.get("queued") == 0:
            drained = True
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    status = await asyncio.to_thread(relay.status) or {}
    duplicates += await asyncio.to_thread(engine_duplicates, engine)
    relay.stop()
    await asyncio.to_thread(engine.stop)
    for g in guests:
        await g.close()
    got = stored(engine.db_path)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    lost = [k for k in ledger.sent if k not in got]
    window = (timeline["relay_killed"] - 3, timeline["relay_back"] + 5)
    lost_at_kill = [k for k in lost if window[0] <= ledger.sent[k] <= window[1]]
    latencies = sorted(min(got[k]) - t for k, t in ledger.sent.items() if k in got)
    # the same, for reports sent while nothing was down (neither the engine nor the relay,
    # and 10 s to recover): what hostile guests alone cost their neighbours
    calm = sorted(min(got[k]) - t for k, t in ledger.sent.items()
                  if k in got and not _within(t, timeline))
    good_vms = {g.vm_id for g in guests[hostile_count:]}
    hostile_stored = sum(1 for k in got if k[0] not in good_vms)
    return {
        "guests": args.guests, "hostile": hostile_count, "duration_s": args.duration,
        "outage_s": args.outage, "drained": drained,
        "sent": len(ledger.sent), "stored": sum(1 for k in ledger.sent if k in got),
        "lost": len(lost), "lost_in_kill_window": len(lost_at_kill),
        "duplicates_stored": sum(len(v) - 1 for v in got.values()),
        "resent_and_deduplicated_since_restart": duplicates,
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_latency_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3)
        if latencies else None,
        "calm_p50_latency_s": _quantile(calm, 0.5),
        "calm_p99_latency_s": _quantile(calm, 0.99),
        "hostile_reports_stored": hostile_stored,
        "relay_drops": _drop_totals(status),
    }


def _within(t: float, timeline: Dict[str, float]) -> bool:
    return (timeline["engine_stopped"] <= t <= timeline["engine_back"] + 10
            or timeline["relay_killed"] - 3 <= t <= timeline["relay_back"] + 10)


def _quantile(values: List[float], q: float) -> Optional[float]:
    return round(values[int(q * (len(values) - 1))], 3) if values else None


def _drop_totals(status: Dict[str, Any]) -> Dict[str, Any]:
    upload = status.get("upload") or {}
    return {"rejected_by_engine": upload.get("rejected"),
            "dropped_share": upload.get("dropped_share"),
            "dropped_oldest": upload.get("dropped_oldest")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--hostile", type=int, default=10)
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--outage", type=float, default=120)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compare", action="store_true",
                        help="also run without the hostile guests and print the p99 ratio")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (logs)")
    args = parser.parse_args()
    runs = {}
    if args.compare:
        runs["clean"] = asyncio.run(run_once(args, 0))
    runs["hostile"] = asyncio.run(run_once(args, args.hostile))
    if args.compare and runs["clean"]["p99_latency_s"]:
        runs["p99_ratio"] = round(runs["hostile"]["p99_latency_s"]
                                  / runs["clean"]["p99_latency_s"], 2)
    if args.compare and runs["clean"]["calm_p99_latency_s"]:
        runs["calm_p99_ratio"] = round(runs["hostile"]["calm_p99_latency_s"]
                                       / runs["clean"]["calm_p99_latency_s"], 2)
    if args.json:
        print(json.dumps(runs))
    else:
        for name in ("clean", "hostile"):
            if name in runs:
                r = runs[name]
                print("%-7s %d guests (%d hostile), %.0f s, engine down %.0f s, relay killed "
                      "once: sent %d, lost %d (%d in the kill window), duplicates stored %d, "
                      "latency p50 %.2f s p99 %.2f s (while nothing was down: p50 %.2f s "
                      "p99 %.2f s), hostile reports stored %d"
                      % (name, r["guests"], r["hostile"], r["duration_s"], r["outage_s"],
                         r["sent"], r["lost"], r["lost_in_kill_window"],
                         r["duplicates_stored"], r["p50_latency_s"] or 0,
                         r["p99_latency_s"] or 0, r["calm_p50_latency_s"] or 0,
                         r["calm_p99_latency_s"] or 0, r["hostile_reports_stored"]))
        if "p99_ratio" in runs:
            print("p99 latency, hostile / clean: %.2fx (while nothing was down: %.2fx)"
                  % (runs["p99_ratio"], runs.get("calm_p99_ratio", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
