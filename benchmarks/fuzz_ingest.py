#!/usr/bin/env python3
"""Fuzz benchmark: hostile inputs through the engine's ingest and the relay's guest sessions.

Prints, for each side, how many inputs went through, how many crashed anything (goal 0), what
became of them (refused by reason, stored, dropped by reason), throughput and peak memory.

* **engine**: request bodies through ``IngestHandler.parse`` (JSON decoding, batch shape,
  ``validate_envelope`` and the engine's checks per envelope: exactly what ``POST
  /ingest/v1/reports`` runs before the store), then the store's own preparation
  (``incoming.prepare``: sample extraction, summary fields) of every envelope it accepted,
  and, for one body in ``--store-every``, the real SQLite store (``ingest``; ``Unstorable``
  is the store's refusal, counted apart). A crash is any exception escaping these. Beside
  it, the same bodies through plain ``json.loads``, the peer the parser hardens: how many
  of them raise something other than ``ValueError`` (a 500 in a naive service).
* **relay**: lines a hostile guest writes into its virtio-serial port, through the real
  ``VMSession`` (asyncio, a real UNIX socket per VM, ``LineDecoder``, the report path that
  wraps envelopes) for ``--vms`` VMs at once; every envelope the session hands on goes
  through ``validate_envelope`` as the uploader would. A crash is an exception the session
  catches as a decoder bug (``decoder_error`` drops), any error logged with a traceback, an
  exception from the sink, or a session that is no longer connected. Memory per VM is the
  growth of the process's peak RSS during the run divided by the VMs.

Inputs: mutations of schema-valid envelopes and reports (a hostile value at a random place:
numbers beyond every range, wrong types, NULs, lone surrogates, terminal escapes, markup,
huge strings and lists), byte-level mutations of valid bodies and lines (flips, inserts,
cuts, duplications), nesting up to 100,000 levels, numbers of 400 digits, invalid UTF-8,
random bytes, lines over 1 MiB, replays and sequence regressions. The run is deterministic
for a ``--seed``.

Usage: python3 benchmarks/fuzz_ingest.py [--inputs 1000000] [--vms 10] [--seed 1]
       [--engine-procs 2] [--json F]
       (--quick: 20,000 inputs per side, the CI variant's size)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import json
import logging
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from diag_protocol import (  # noqa: E402
    MAX_LINE_BYTES,
    ProtocolError,
    encode,
    make_envelope,
    validate_envelope,
)
from lab.fake_guest import hello, sample_report  # noqa: E402

HOST = "host-7.fuzz.test"
VM_IDS = ["6f1c2a8e-0b7d-4c55-9e1a-%012x" % i for i in range(1000)]

#: Values a hostile guest or relay puts anywhere.
HOSTILE: List[Any] = [
    2**63, 2**63 - 1, 2**64 - 1, 2**53, 2**53 - 1, -1, -(2**63), -(2**63) - 1, 0, -0.0,
    1e308, -1e308, 5e-324, 4102444801, 4102444800.5, 1e19, 0.5, True, False, None, "",
    "x" * 5000, "\x00", "a\x00b", "\ud800", "\udfff\ud800", "\u202e\u2066", "\x1b[2J\x1b[31m",
    "<script>window.__xss(1)</script>", '"><img src=x onerror=__xss(2)>', "{{7*7}}",
    "../../etc/passwd", "\n", "\r\n", "\t" * 100, [], {}, [[[[]]]], {"a": {"b": {"c": {}}}},
    [0] * 300, {"k%d" % i: i for i in range(300)}, "NaN", "Infinity", "1e999", "-",
    "00000000-0000-0000-0000-000000000000", "not-a-uuid", "ok", "critical",
]

Stats = Dict[str, Any]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / float(1 << 20)


# -- hostile inputs ---------------------------------------------------------------------------

def paths(value: Any, prefix: Tuple[Any, ...] = ()) -> Iterator[Tuple[Any, ...]]:
    """Every place in a JSON tree (keys and indexes), the tree itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from paths(sub, prefix + (key,))
    elif isinstance(value, list):
        for index, sub in enumerate(value[:4]):
            yield from paths(sub, prefix + (index,))


def trim(value: Any, items: int = 1) -> Any:
    """The same tree with every list cut to ``items`` entries: every kind of field stays, at a
    fraction of the validation cost, so a million inputs fit in minutes."""
    if isinstance(value, dict):
        return {k: trim(v, items) for k, v in value.items()}
    if isinstance(value, list):
        return [trim(v, items) for v in value[:items]]
    return value


def put(tree: Any, path: Tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = tree
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return tree


def hostile_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.75:
        # a copy: an input that puts a value inside a shared list must not change (or make
        # cycles in) the inputs after it
        return copy.deepcopy(rng.choice(HOSTILE))
    if roll < 0.85:
        return rng.getrandbits(rng.choice((8, 53, 63, 64, 65, 128))) * rng.choice((1, -1))
    if roll < 0.95:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(1, 40)))
    depth = rng.randrange(10, 40)
    return json.loads("[" * depth + "]" * depth)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if not buf:
            buf.extend(os.urandom(8))
        op = rng.randrange(7)
        at = rng.randrange(len(buf))
        if op == 0:
            buf[at] = rng.randrange(256)
        elif op == 1:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 2:
            del buf[at:at + rng.randrange(1, 64)]
        elif op == 3:
            end = min(len(buf), at + rng.randrange(1, 256))
            buf[at:at] = buf[at:end]
        elif op == 4:
            del buf[at:]
        elif op == 5:
            buf[at:at] = rng.choice((b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00",
                                     b"\\ud800", b'\\"', b"1" * 400, b"1e400", b"-"))
        else:
            buf[at:at] = b"[" * rng.randrange(1, 2000)
    return bytes(buf)


def deep(rng: random.Random, wrap: Callable[[bytes], bytes]) -> bytes:
    depth = rng.choice((20, 1000, 5000, 100000))
    kind = rng.randrange(3)
    if kind == 0:
        inner = b"[" * depth + b"]" * depth
    elif kind == 1:
        inner = b'{"a":' * depth + b"1" + b"}" * depth
    else:
        inner = b"[" * depth  # never closed
    return wrap(inner)


class Inputs:
    """A deterministic stream of hostile inputs built around valid templates."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        now = time.time()
        self.reports = [trim(sample_report(seq=i, processes=4, units=4, now=now - 60 + i,
                                           rng=random.Random(i))) for i in range(8)]
        self.report_texts = [json.dumps(r) for r in self.reports]
        self.report_paths = [list(paths(r)) for r in self.reports]
        env = make_envelope(HOST, VM_IDS[0], self.reports[0], received_at=now)
        self.envelope_paths = list(paths({k: v for k, v in env.items() if k != "report"}))
        self.now = now

    def envelope(self) -> Dict[str, Any]:
        rng = self.rng
        i = rng.randrange(len(self.reports))
        report = json.loads(self.report_texts[i])
        report["seq"] = rng.randrange(0, 1 << 20)
        env = make_envelope(HOST, rng.choice(VM_IDS[:50]), report,
                            received_at=self.now + rng.uniform(-3600, 5))
        return env

    def hostile_envelope(self) -> Any:
        rng = self.rng
        env = self.envelope()
        for _ in range(rng.randrange(1, 4)):
            if rng.random() < 0.8:
                i = rng.randrange(len(self.reports))
                path = ("report",) + rng.choice(self.report_paths[i])
            else:
                path = rng.choice(self.envelope_paths)
            try:
                env = put(env, path, hostile_value(rng))
            except (KeyError, IndexError, TypeError):
                pass  # the place went away under an earlier mutation
        return env

    def hostile_report(self) -> Any:
        """A report (for a guest's line) with hostile values in one to three places."""
        rng = self.rng
        i = rng.randrange(len(self.reports))
        report = json.loads(self.report_texts[i])
        report["seq"] = rng.randrange(0, 1 << 20)
        for _ in range(rng.randrange(1, 4)):
            try:
                report = put(report, rng.choice(self.report_paths[i]), hostile_value(rng))
            except (KeyError, IndexError, TypeError):
                pass
        return report

    def body(self) -> bytes:
        """One request body a relay (or anyone with a host certificate) could POST."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            envs = [self.hostile_envelope() if rng.random() < 0.8 else self.envelope()
                    for _ in range(rng.randrange(1, 3))]
            return json.dumps({"envelopes": envs}, ensure_ascii=rng.random() < 0.5).encode(
                "utf-8", "surrogatepass")
        if roll < 0.80:
            envs = [self.envelope() for _ in range(rng.randrange(1, 3))]
            return mutate_bytes(json.dumps({"envelopes": envs}).encode(), rng)
        if roll < 0.88:
            return json.dumps(rng.choice([
                [], {}, {"envelopes": None}, {"envelopes": {}}, {"envelopes": "x"},
                {"envelopes": [hostile_value(rng) for _ in range(5)]}, hostile_value(rng),
                {"envelopes": [self.envelope()] * 2}, {"envelopes": []},
                {"envelopes": [self.envelope()], "extra": hostile_value(rng)},
            ]), ensure_ascii=False).encode("utf-8", "surrogatepass")
        if roll < 0.93:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        if roll < 0.995:
            digits = b"9" * rng.choice((19, 20, 40, 400, 4000))
            env = json.dumps({"envelopes": [self.envelope()]}).encode()
            return env.replace(b'"seq": ', b'"seq": ' + digits + b", \"x\": ", 1)
        return deep(rng, lambda inner: b'{"envelopes": ' + inner + b"}")

    def line(self, vm: int) -> bytes:
        """One line a hostile guest writes into its channel (newline included)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.30:
            report = self.hostile_report()
            text = json.dumps(report, ensure_ascii=rng.random() < 0.5)
            return text.encode("utf-8", "surrogatepass").replace(b"\n", b" ") + b"\n"
        if roll < 0.50:
            report = json.loads(rng.choice(self.report_texts))
            report["seq"] = rng.randrange(0, 1 << 20)
            return mutate_bytes(encode(report).rstrip(b"\n"), rng).replace(b"\n", b" ") + b"\n"
        if roll < 0.62:  # a valid report: new, replayed, or with a regressed seq
            report = json.loads(rng.choice(self.report_texts))
            report["run_id"] = rng.choice(("run-1", "run-2"))
            report["seq"] = rng.choice((rng.randrange(0, 1 << 20), 0, 1, 1 << 52))
            return encode(report)
        if roll < 0.72:
            msg = rng.choice((hello(), {"type": "heartbeat", "v": 1, "time": self.now},
                              {"type": "reply", "v": 1, "id": "1", "ok": True},
                              {"type": "request", "v": 1, "id": "x", "method": "ping"},
                              {"type": "hello", "v": 2}, {"type": "nope", "v": 1}, []))
            msg = put(json.loads(json.dumps(msg)), rng.choice(list(paths(msg))),
                      hostile_value(rng)) if rng.random() < 0.7 else msg
            return json.dumps(msg).encode("utf-8", "surrogatepass").replace(b"\n", b" ") + b"\n"
        if roll < 0.97:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))) + b"\n"
        if roll < 0.9995:
            return deep(rng, lambda inner: inner) + b"\n"
        return b"x" * (MAX_LINE_BYTES + rng.randrange(1, 4096)) + b"\n"  # over the cap


# -- engine ------------------------------------------------------------------------------------

class CrashLog:
    def __init__(self) -> None:
        self.count = 0
        self.kinds: Counter = Counter()
        self.samples: List[str] = []

    def add(self, where: str, err: BaseException, sample: bytes) -> None:
        self.count += 1
        tb = traceback.extract_tb(err.__traceback__)
        at = "%s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno) if tb else "?"
        key = "%s %s at %s" % (where, type(err).__name__, at)
        self.kinds[key] += 1
        if len(self.samples) < 5 and self.kinds[key] == 1:
            self.samples.append("%s: %s; input %r" % (key, str(err)[:200], sample[:200]))


def run_engine(count: int, seed: int, store_every: int) -> Stats:
    from engine_plugin.service.ingest import IngestHandler
    from engine_plugin.service.metrics import ServiceMetrics
    from engine_plugin.storage import StorageConfig, open_store
    from engine_plugin.storage.errors import Unstorable
    from engine_plugin.storage.incoming import prepare

    logging.disable(logging.WARNING)  # refusals log once per host; not the figure here
    executor = concurrent.futures.ThreadPoolExecutor(1)

    async def no_store(*_: Any) -> None:
        raise AssertionError("the benchmark calls parse() only")

    handler = IngestHandler(no_store, ServiceMetrics(), lambda vms: None, executor)
    folder = tempfile.mkdtemp(prefix="vmdiag-fuzz-")
    store = open_store(StorageConfig(url="sqlite:///%s/fuzz.db" % folder))
    store.migrate()
    inputs = Inputs(seed)
    crashes = CrashLog()
    peer_crashes = CrashLog()
    answers: Counter = Counter()
    outcomes: Counter = Counter()
    stored = unstorable = input_bytes = 0
    rss_start = current_rss_mib()
    began = time.perf_counter()
    parse_s = 0.0
    for i in range(count):
        if i and i % 100_000 == 0:
            print("engine: %d inputs, %d crashes, %.0f s" % (i, crashes.count,
                  time.perf_counter() - began), file=sys.stderr, flush=True)
        raw = inputs.body()
        input_bytes += len(raw)
        now = time.time()
        t0 = time.perf_counter()
        try:
            parsed = handler.parse(raw, HOST, now)
        except Exception as err:  # noqa: BLE001 - that is what is counted
            crashes.add("parse", err, raw)
            continue
        finally:
            parse_s += time.perf_counter() - t0
        try:
            json.loads(raw)
        except ValueError:
            pass
        except Exception as err:  # noqa: BLE001 - the peer's crash
            peer_crashes.add("json.loads", err, raw)
        if not isinstance(parsed, tuple):
            answers[parsed.status] += 1
            continue
        answers[200] += 1
        results, valid = parsed
        for result in results:
            if result is not None:
                outcomes["%s:%s" % (result["outcome"], result.get("reason"))] += 1
        envs = [env for _, env in valid]
        outcomes["to_store"] += len(envs)
        try:
            prepare(envs, now)
        except Exception as err:  # noqa: BLE001
            crashes.add("prepare", err, raw)
            continue
        if envs and i % store_every == 0:
            try:
                stored += store.ingest(envs, now).accepted
            except Unstorable:
                unstorable += 1
            except Exception as err:  # noqa: BLE001
                crashes.add("store", err, raw)
    spent = time.perf_counter() - began
    store.close()
    executor.shutdown()
    return {
        "side": "engine", "inputs": count, "input_mib": round(input_bytes / 2**20, 1),
        "crashes": crashes.count, "crash_kinds": dict(crashes.kinds),
        "crash_samples": crashes.samples, "answers": {str(k): v for k, v in answers.items()},
        "outcomes": dict(outcomes), "stored_in_sqlite": stored,
        "sqlite_unstorable_batches": unstorable, "seconds": round(spent, 1),
        "parse_us_per_input": round(parse_s / max(count, 1) * 1e6, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1), "rss_at_start_mib": round(rss_start, 1),
        "peer_json_loads_crashes": peer_crashes.count,
        "peer_crash_kinds": dict(peer_crashes.kinds),
    }


# -- relay -------------------------------------------------------------------------------------

class ErrorCounter(logging.Handler):
    """Counts log records with a traceback (what the session logs when it catches a bug)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append("%s: %s" % (record.name, record.getMessage()[:200]))


async def relay_fuzz(count: int, seed: int, vms: int) -> Stats:
    from vdsm_hooks.relay.cache import ReportCache
    from vdsm_hooks.relay.session import Runstate, SessionConfig, VMSession

    folder = tempfile.mkdtemp(prefix="vmdiag-fuzz-relay-")
    cache = ReportCache()
    errors = ErrorCounter()
    logging.getLogger("vdsm_hooks").addHandler(errors)
    logging.getLogger("vdsm_hooks").setLevel(logging.ERROR)
    logging.getLogger("vmdiag").setLevel(logging.ERROR)
    sink_crashes = CrashLog()
    envelopes: Counter = Counter()

    def sink(vm_id: str, report: Dict[str, Any], received_at: float,
             version: Optional[str], *_: Any) -> None:
        try:
            # the envelope the uploader wraps the report in, checked as its spool replay and
            # the engine check it
            validate_envelope(make_envelope(HOST, vm_id, report, received_at=received_at,
                                            agent_version=version))
            envelopes["valid"] += 1
        except ProtocolError as err:
            envelopes["refused:" + err.reason] += 1
        except Exception as err:  # noqa: BLE001
            sink_crashes.add("sink", err, b"")

    # No byte or report rate limit here: the point is to push every input through.
    config = SessionConfig(read_rate=float(1 << 40), read_burst=float(1 << 40),
                           silence_timeout=3600.0, min_report_interval=0.0)
    servers, sessions, writers = [], [], []
    for i in range(vms):
        path = os.path.join(folder, "%s.org.vmdiag.agent.0" % VM_IDS[i])
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        server.setblocking(False)
        servers.append(server)
        session = VMSession(VM_IDS[i], path, cache, config=config, on_report=sink)
        session.start()
        sessions.append(session)
    loop = asyncio.get_running_loop()
    for server in servers:
        conn, _ = await loop.sock_accept(server)
        _, writer = await asyncio.open_unix_connection(sock=conn)
        writers.append(writer)
    for session in sessions:
        await session.wait_state(Runstate.CONNECTED, timeout=10)
    rss_start = current_rss_mib()
    inputs = Inputs(seed + 1)
    sent_bytes = 0
    began = time.perf_counter()
    for i in range(count):
        if i and i % 100_000 == 0:
            print("relay: %d inputs, %.0f s" % (i, time.perf_counter() - began),
                  file=sys.stderr, flush=True)
        vm = i % vms
        line = inputs.line(vm)
        sent_bytes += len(line)
        writers[vm].write(line)
        if i % 64 == 63:
            await asyncio.gather(*(w.drain() for w in writers))
    await asyncio.gather(*(w.drain() for w in writers))
    # everything written is read once every session counted its bytes
    deadline = time.monotonic() + 120
    while sum(cache.entry(VM_IDS[i]).counters.bytes for i in range(vms)) < sent_bytes:
        assert time.monotonic() < deadline, "the sessions stopped reading"
        await asyncio.sleep(0.05)
    spent = time.perf_counter() - began
    drops: Counter = Counter()
    messages = reports = 0
    connected = 0
    for session in sessions:
        counters = session.entry.counters
        drops.update(counters.drops)
        messages += counters.messages
        reports += counters.reports
        connected += session.state is Runstate.CONNECTED
    peak = peak_rss_mib()
    for writer in writers:
        writer.close()
    for session in sessions:
        await session.close()
    for server in servers:
        server.close()
    crashes = (drops.get("decoder_error", 0) + len(errors.records) + sink_crashes.count
               + (vms - connected))
    return {
        "side": "relay", "inputs": count, "input_mib": round(sent_bytes / 2**20, 1),
        "vms": vms, "crashes": crashes, "decoder_errors": drops.get("decoder_error", 0),
        "logged_tracebacks": errors.records[:5], "sink_crashes": sink_crashes.count,
        "sessions_still_connected": connected, "messages_accepted": messages,
        "reports_cached": reports, "drops": dict(drops), "envelopes": dict(envelopes),
        "seconds": round(spent, 1), "us_per_input": round(spent / max(count, 1) * 1e6, 1),
        "peak_rss_mib": round(peak, 1), "rss_at_start_mib": round(rss_start, 1),
        "peak_growth_per_vm_mib": round(max(0.0, peak - rss_start) / vms, 2),
    }


# -- driver ------------------------------------------------------------------------------------

def child(args: argparse.Namespace) -> int:
    if args.part == "engine":
        stats = run_engine(args.inputs, args.seed, args.store_every)
    else:
        stats = asyncio.run(relay_fuzz(args.inputs, args.seed, args.vms))
    print(json.dumps(stats))
    return 0


def run_part(part: str, args: argparse.Namespace, inputs: int | None = None,
             seed: int | None = None) -> Stats:
    """Each side in its own process, so its peak memory is its own (progress on stderr)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--part", part, "--inputs",
           str(args.inputs if inputs is None else inputs),
           "--seed", str(args.seed if seed is None else seed), "--vms", str(args.vms),
           "--store-every", str(args.store_every)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    stats: Stats = json.loads(out.stdout.strip().splitlines()[-1])
    return stats


def merge(shards: List[Stats]) -> Stats:
    """The engine figures of several processes (shards of the inputs, seeds apart) as one:
    counts add up, times and memory are per process (the largest)."""
    out = dict(shards[0])
    for other in shards[1:]:
        for key in ("inputs", "crashes", "stored_in_sqlite", "sqlite_unstorable_batches",
                    "peer_json_loads_crashes"):
            out[key] += other[key]
        out["input_mib"] = round(out["input_mib"] + other["input_mib"], 1)
        for key in ("crash_kinds", "answers", "outcomes", "peer_crash_kinds"):
            merged = Counter(out[key])
            merged.update(other[key])
            out[key] = dict(merged)
        out["crash_samples"] = out["crash_samples"] + other["crash_samples"]
        for key in ("seconds", "peak_rss_mib", "rss_at_start_mib"):
            out[key] = max(out[key], other[key])
        out["parse_us_per_input"] = round(
            (out["parse_us_per_input"] + other["parse_us_per_input"]) / 2, 1)
    out["processes"] = len(shards)
    return out


def report(engine: Stats, relay: Stats) -> None:
    rows = [
        ("inputs", engine["inputs"], relay["inputs"]),
        ("input MiB", engine["input_mib"], relay["input_mib"]),
        ("crashes (goal 0)", engine["crashes"], relay["crashes"]),
        ("seconds (slowest process)", engine["seconds"], relay["seconds"]),
        ("us per input", engine["parse_us_per_input"], relay["us_per_input"]),
        ("peak RSS MiB", engine["peak_rss_mib"], relay["peak_rss_mib"]),
        ("RSS at start MiB", engine["rss_at_start_mib"], relay["rss_at_start_mib"]),
        ("peak growth per VM MiB", "-", relay["peak_growth_per_vm_mib"]),
    ]
    print("%-34s %16s %16s" % ("", "engine ingest", "relay sessions"))
    for name, a, b in rows:
        print("%-34s %16s %16s" % (name, a, b))
    print()
    print("engine: answers %s" % engine["answers"])
    print("engine: per-envelope results %s" % dict(sorted(engine["outcomes"].items())))
    print("engine: stored in SQLite %d, store refused %d batches (Unstorable)"
          % (engine["stored_in_sqlite"], engine["sqlite_unstorable_batches"]))
    print("peer, plain json.loads on the same bodies: %d raise something other than "
          "ValueError %s" % (engine["peer_json_loads_crashes"], engine["peer_crash_kinds"]))
    print("relay: messages accepted %d, reports cached %d, drops %s"
          % (relay["messages_accepted"], relay["reports_cached"],
             dict(sorted(relay["drops"].items()))))
    print("relay: envelopes handed on %s" % relay["envelopes"])
    for side in (engine, relay):
        for sample in side.get("crash_samples", []) + side.get("logged_tracebacks", []):
            print("CRASH %s: %s" % (side["side"], sample))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per side")
    parser.add_argument("--vms", type=int, default=10, help="relay sessions fed at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store-every", type=int, default=50,
                        help="one body in this many also goes into a real SQLite store")
    parser.add_argument("--engine-procs", type=int, default=1,
                        help="processes sharing the engine side's inputs (seeds apart)")
    parser.add_argument("--quick", action="store_true", help="20,000 inputs per side")
    parser.add_argument("--part", choices=("engine", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.inputs = 20_000
    if args.part:
        return child(args)
    print("fuzz: %d hostile inputs per side, seed %d, %d relay VMs, %d engine process(es), "
          "%d CPUs" % (args.inputs, args.seed, args.vms, args.engine_procs,
                       os.cpu_count() or 0))
    shards = max(1, args.engine_procs)
    with concurrent.futures.ThreadPoolExecutor(1 + shards) as pool:  # all processes at once
        relay_run = pool.submit(run_part, "relay", args)
        engine_runs = [pool.submit(run_part, "engine", args,
                                   args.inputs // shards + (i < args.inputs % shards),
                                   args.seed + 1000 * i) for i in range(shards)]
        engine = merge([run.result() for run in engine_runs])
        relay = relay_run.result()
    report(engine, relay)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"engine": engine, "relay": relay}, handle, indent=2)
    return 0 if engine["crashes"] == 0 and relay["crashes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
