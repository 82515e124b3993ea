#!/usr/bin/env python3
"""Chaos benchmark: simulated guests, some hostile, through a real relay process to a real
vmdiag-engine process over real TLS, while the engine stops and the relay is killed (-9).

Set-up (all real processes, nothing in-process but the guests):

- ``vmdiag-engine serve`` (lab/demo_engine.py: the stand-in oVirt engine places every VM on
  the relay's host; a SQLite store, or a PostgreSQL server of its own (lab/pg_cluster.py);
  its own engine CA and the host certificate);
- ``vmdiag-relay run`` on libvirt's test driver with a node file that runs one domain per
  guest, each with the vmdiag channel at the guest's socket, uploading with the host
  certificate. The test driver is served by a real, private libvirtd (lab/private_libvirtd.py,
  unprivileged, its own socket) that the relay reaches through libvirt's remote driver, as it
  reaches the system libvirtd; ``--no-libvirtd``: the test driver inside the relay instead;
- the guests: unix sockets in this process playing QEMU's side of each channel
  (lab/fake_guest.py). A well-behaved guest sends a ~5 KB report every ``--interval`` s the
  agent's way: hello first on every connection, every report kept until the relay
  acknowledges it and written again on the next connection, reports queued while no relay is
  connected (diag_protocol.acks, the agent's own bookkeeping). ``--old-guests``: as before
  acknowledgements (a report is only written while a relay is connected, never again).
  Hostile guests, in turn: numbers out of range, a flood of valid reports at full speed,
  future timestamps, sequence regressions and replays, a one-byte drip, garbage.

Timeline over ``--duration`` s: at 25 % the engine stops for ``--outage`` s; at 50 % libvirtd
is restarted (1 s down) while the guests keep talking; from 65 % the relay is killed with
SIGKILL ``--kills`` times (at seeded random instants, 2 s down each).
Then the guests stop, the relay drains its spool, and the engine's store is read.

Printed, for the well-behaved guests: reports lost (made by a guest, never stored), those of
them made in the 3 s before a kill or while the relay was down, duplicates stored, and the
p50/p99 guest-to-engine latency (the engine's receive time minus the report's time), over all
reports and over those made while nothing was down (the outage dominates the first), and
that p99 per calm phase (before the outage; after it; after the kills), which shows what a
drain costs. ``--compare`` runs the same timeline twice, without and with the hostile guests,
and prints the p99 ratio. ``--store`` picks SQLite, PostgreSQL or both (each a full run).

Usage: python3 benchmarks/chaos_bench.py [--guests 200] [--hostile 10] [--duration 600]
       [--outage 120] [--interval 10] [--kills 1] [--store sqlite|postgresql|both]
       [--compare] [--json]
The CI variant (tests/relay_upload/test_chaos.py) runs 40 guests for 60 s on each store.
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
from lab.pg_cluster import PgCluster  # noqa: E402
from lab.private_libvirtd import PrivateLibvirtd  # noqa: E402

HOSTILE_KINDS = ("out_of_range", "flood", "future", "replay", "drip", "garbage")
#: Reports made this soon after the start are not "calm": the relay is starting, opening its
#: sessions and taking what the guests queued meanwhile.
STARTUP_S = 15.0


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

    def status(self, tries: int = 1) -> Optional[Dict[str, Any]]:
        from vdsm_hooks.relay.control import ControlError, call
        for attempt in range(tries):
            try:
                return call(self.socket, {"cmd": "status"}, timeout=10)
            except ControlError:
                if attempt + 1 < tries:
                    time.sleep(1)
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
    if not guest.acks:
        await _send(guest, hello())
    while not stop.is_set():
        seq += 1
        now = time.time()
        report = sample_report(seq=seq, run_id=run_id, processes=5, units=5, now=now, rng=rng)
        if guest.acks:  # the agent's way: queued or written, kept until acknowledged
            await guest.send_report(report)
            ledger.sent[(guest.vm_id, run_id, seq)] = now
        elif await _send(guest, report):
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
            await _write(guest, rng.getrandbits(4096 * 8).to_bytes(4096, "little") + b"\n")
            await asyncio.sleep(0.05)


def stored(url: str) -> Dict[Tuple[str, str, int], List[float]]:
    query = ("SELECT v.vm_id, i.run_id, i.seq, i.ingested_at FROM ingested i "
             "JOIN vms v ON v.vm_key = i.vm_key")
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as db:
            rows = db.execute(query).fetchall()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            rows = conn.execute(query).fetchall()
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


async def run_once(args: argparse.Namespace, hostile_count: int, store: str,
                   pg: Optional[PgCluster]) -> Dict[str, Any]:
    run_dir = tempfile.mkdtemp(prefix="vmdiag-chaos-")
    channels = os.path.join(run_dir, "ch")
    os.makedirs(channels)
    guests = []
    for i in range(args.guests):
        acks = i >= hostile_count and not args.old_guests
        g = FakeGuest("", greeting=hello(acks=True) if acks else None)
        g.path = host_socket_path(g.vm_id, channels)
        guests.append(await g.start())
    storage_url = None
    if store == "postgresql":
        assert pg is not None
        storage_url = await asyncio.to_thread(pg.create_database)
    engine = ChaosEngine(run_dir, {g.vm_id: "chaos-%d" % i for i, g in enumerate(guests)},
                         storage_url=storage_url)
    await asyncio.to_thread(engine.start)
    libvirtd: Optional[PrivateLibvirtd] = None
    if args.no_libvirtd:
        node = os.path.join(run_dir, "node.xml")
    else:  # the daemon's own folder, which it (unprivileged) owns
        lv_dir = tempfile.mkdtemp(prefix="vmdiag-chaos-lv-")
        node = os.path.join(lv_dir, "node.xml")
    with open(node, "w", encoding="utf-8") as f:
        f.write(node_xml(guests))
    if args.no_libvirtd:
        uri = "test://" + node
    else:
        os.chmod(node, 0o644)
        libvirtd = await asyncio.to_thread(PrivateLibvirtd(lv_dir, node).start)
        uri = libvirtd.uri
    config = os.path.join(run_dir, "relay.conf")
    with open(config, "w", encoding="utf-8") as f:
        f.write("[relay]\nhost_id = %s\nlibvirt_uri = %s\nchannels_dir = %s\n"
                "control_socket = %s\ncontrol_group =\nreconnect_max_backoff = 2\n\n"
                "[upload]\n%sretry_max_backoff = 3\n"
                % (HOST_CN, uri, channels, os.path.join(run_dir, "relay.sock"),
                   engine.relay_upload()))
    relay = Relay(run_dir, config)
    relay.start()
    ledger = Ledger()
    stop = asyncio.Event()
    hostile_guests = guests[:hostile_count]
    kinds = args.hostile_kinds.split(",")
    tasks = [asyncio.ensure_future(hostile(g, kinds[i % len(kinds)], stop, random.Random(i)))
             for i, g in enumerate(hostile_guests)]
    tasks += [asyncio.ensure_future(well_behaved(g, ledger, args.interval, stop,
                                                 random.Random(args.seed * 1000 + i)))
              for i, g in enumerate(guests[hostile_count:])]
    started = time.monotonic()
    started_wall = time.time()
    timeline: Dict[str, float] = {}

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, started + fraction * args.duration - time.monotonic()))

    await at(0.25)
    timeline["engine_stopped"] = time.time()
    if args.outage > 0:
        await asyncio.to_thread(engine.pause)
        await asyncio.sleep(args.outage)
        await asyncio.to_thread(engine.resume)
    timeline["engine_back"] = time.time()
    duplicates = 0.0
    libvirt_before: Dict[str, Any] = {}
    libvirt_after: Dict[str, Any] = {}
    if libvirtd is not None:
        await at(0.5)
        libvirt_before = _libvirt_view(await asyncio.to_thread(relay.status, 10), guests)
        timeline["libvirtd_restarted"] = time.time()
        await asyncio.to_thread(libvirtd.restart)
        # the relay notices the closed connection and connects again with its back-off
        deadline = time.monotonic() + 60
        while True:
            libvirt_after = _libvirt_view(await asyncio.to_thread(relay.status, 10), guests)
            if ((libvirt_after.get("libvirt_generation") or 0)
                    > (libvirt_before.get("libvirt_generation") or 0)
                    and libvirt_after.get("libvirt_connected")) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        libvirt_after["reconnected_after_s"] = round(time.time()
                                                     - timeline["libvirtd_restarted"], 1)
        await at(0.62)
        libvirt_after.update(_libvirt_view(await asyncio.to_thread(relay.status, 10), guests))
    kills: List[Tuple[float, float]] = []
    # the kills at random instants between 65 % and 90 % of the run, in order
    krng = random.Random(args.seed * 7919 + hostile_count)
    span = 0.25 / max(1, args.kills)
    for k in range(args.kills):
        await at(0.65 + k * span + krng.uniform(0, span * 0.6))
        killed = time.time()
        relay.kill()
        await asyncio.sleep(2)
        relay.start()
        kills.append((killed, time.time()))
    timeline["relay_killed"] = kills[0][0] if kills else float("inf")
    timeline["relay_back"] = kills[-1][1] if kills else float("inf")
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
    if libvirtd is not None:
        await asyncio.to_thread(libvirtd.stop)
        if not args.keep:
            shutil.rmtree(libvirtd.base, ignore_errors=True)
    for g in guests:
        await g.close()
    got = stored(engine.storage_url)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    lost = [k for k in ledger.sent if k not in got]
    lost_at_kill = [k for k in lost
                    if any(a - 3 <= ledger.sent[k] <= b + 5 for a, b in kills)]
    latencies = sorted(min(got[k]) - t for k, t in ledger.sent.items() if k in got)
    # the same, for reports sent while nothing was down (neither the engine nor the relay,
    # and 10 s to recover): what hostile guests alone cost their neighbours
    calm_pairs = [(t, min(got[k]) - t) for k, t in ledger.sent.items()
                  if k in got and t >= started_wall + STARTUP_S
                  and not _within(t, timeline, kills)]
    calm = sorted(lat for _, lat in calm_pairs)
    # where calm latency goes: guest -> engine, and engine -> acknowledgement at the guest
    acked_at = {(g.vm_id,) + key: at for g in guests[hostile_count:]
                for key, at in g.acked_at.items()}
    calm_keys = [k for k, t in ledger.sent.items() if k in got and t >= started_wall + STARTUP_S
                 and not _within(t, timeline, kills)]
    back = sorted(acked_at[k] - min(got[k]) for k in calm_keys if k in acked_at)
    phases = {"before_outage": (started_wall, timeline["engine_stopped"]),
              "after_outage": (timeline["engine_back"], timeline["relay_killed"]),
              "after_kills": (timeline["relay_back"], float("inf"))}
    calm_by_phase = {name: _quantile(sorted(lat for t, lat in calm_pairs if a <= t < b), 0.99)
                     for name, (a, b) in phases.items()}
    good_vms = {g.vm_id for g in guests[hostile_count:]}
    hostile_stored = sum(1 for k in got if k[0] not in good_vms)
    resent = sum(g.unacked.counts["resent"] for g in guests[hostile_count:])
    acked = sum(g.unacked.counts["acked"] for g in guests[hostile_count:])
    return {
        "store": store, "old_guests": args.old_guests, "kills": len(kills),
        "libvirtd_restarts": libvirtd.restarts if libvirtd is not None else 0,
        "libvirt_before_restart": libvirt_before, "libvirt_after_restart": libvirt_after,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "guests": args.guests, "hostile": hostile_count, "duration_s": args.duration,
        "outage_s": args.outage, "drained": drained, "acked": acked,
        "written_again_by_guests": resent,
        "calm_p99_by_phase_s": calm_by_phase,
        "calm_engine_to_ack_p50_p99_s": [_quantile(back, 0.5), _quantile(back, 0.99)],
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


def _libvirt_view(status: Optional[Dict[str, Any]], guests: List[FakeGuest]) -> Dict[str, Any]:
    """What the relay says of libvirt and its VMs, and how often the relay connected to the
    guests' channels so far (a session closed and opened again would add to it)."""
    status = status or {}
    vms = status.get("vms") or []
    return {"libvirt_connected": (status.get("libvirt") or {}).get("connected"),
            "libvirt_generation": (status.get("libvirt") or {}).get("generation"),
            "relay_pid": status.get("pid"), "vms_followed": len(vms),
            "vms_with_a_report": sum(1 for v in vms if v.get("last_report_age") is not None),
            "channel_connections": sum(g.connections for g in guests)}


def _within(t: float, timeline: Dict[str, float], kills: List[Tuple[float, float]]) -> bool:
    return (timeline["engine_stopped"] <= t <= timeline["engine_back"] + 10
            or any(a - 3 <= t <= b + 10 for a, b in kills))


def _quantile(values: List[float], q: float) -> Optional[float]:
    return round(values[int(q * (len(values) - 1))], 3) if values else None


def _drop_totals(status: Dict[str, Any]) -> Dict[str, Any]:
    upload = status.get("upload") or {}
    return {"rejected_by_engine": upload.get("rejected"),
            "dropped_share": upload.get("dropped_share"),
            "dropped_oldest": upload.get("dropped_oldest")}


def run_store(args: argparse.Namespace, store: str) -> Dict[str, Any]:
    """The run(s) on one store: ``clean`` (with --compare) and ``hostile``, and the ratios."""
    pg: Optional[PgCluster] = None
    if store == "postgresql":
        pg = PgCluster().start()  # a real server, fsync on, as a site runs it
    try:
        runs: Dict[str, Any] = {}
        if args.compare:
            runs["clean"] = asyncio.run(run_once(args, 0, store, pg))
        runs["hostile"] = asyncio.run(run_once(args, args.hostile, store, pg))
    finally:
        if pg is not None:
            pg.stop()
    if args.compare and runs["clean"]["p99_latency_s"]:
        runs["p99_ratio"] = round(runs["hostile"]["p99_latency_s"]
                                  / runs["clean"]["p99_latency_s"], 2)
    if args.compare and runs["clean"]["calm_p99_latency_s"]:
        runs["calm_p99_ratio"] = round(runs["hostile"]["calm_p99_latency_s"]
                                       / runs["clean"]["calm_p99_latency_s"], 2)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--hostile", type=int, default=10)
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--outage", type=float, default=120)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs of the relay")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--hostile-kinds", default=",".join(HOSTILE_KINDS),
                        help="comma-separated, taken in turn: %s" % ", ".join(HOSTILE_KINDS))
    parser.add_argument("--no-libvirtd", action="store_true",
                        help="libvirt's test driver inside the relay: no libvirtd restart")
    parser.add_argument("--old-guests", action="store_true",
                        help="guests as before acknowledgements: no queue, no resending")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compare", action="store_true",
                        help="also run without the hostile guests and print the p99 ratio")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (logs)")
    args = parser.parse_args()
    stores = ("sqlite", "postgresql") if args.store == "both" else (args.store,)
    results = {store: run_store(args, store) for store in stores}
    if args.json:
        print(json.dumps(results))
        return 0
    for store, runs in results.items():
        for name in ("clean", "hostile"):
            if name in runs:
                r = runs[name]
                print("%-10s %-7s %d guests (%d hostile), %.0f s, engine down %.0f s, relay "
                      "killed %d x: made %d, lost %d (%d around a kill), duplicates stored "
                      "%d, written again %d, latency p50 %.2f s p99 %.2f s (while nothing was "
                      "down: p50 %.2f s p99 %.2f s; p99 by phase %s), hostile reports stored "
                      "%d, load %s"
                      % (store, name, r["guests"], r["hostile"], r["duration_s"],
                         r["outage_s"], r["kills"], r["sent"], r["lost"],
                         r["lost_in_kill_window"], r["duplicates_stored"],
                         r["written_again_by_guests"], r["p50_latency_s"] or 0,
                         r["p99_latency_s"] or 0, r["calm_p50_latency_s"] or 0,
                         r["calm_p99_latency_s"] or 0, r["calm_p99_by_phase_s"],
                         r["hostile_reports_stored"], r["load_average"]))
        if "p99_ratio" in runs:
            print("%-10s p99 latency, hostile / clean: %.2fx (while nothing was down: %.2fx)"
                  % (store, runs["p99_ratio"], runs.get("calm_p99_ratio", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
