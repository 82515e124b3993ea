#!/usr/bin/env python3
"""Spool crash benchmark: kill the real spool writer with SIGKILL at random instants, many
times, and count what was lost or delivered twice. Prints figures (and ``--json``).

A child process (this script with ``--child``) drives ``vdsm_hooks.relay.spool.Spool`` as the
uploader does: it appends batches of lines (each carrying a unique id) and, as a stand-in
engine, reads batches and commits them, with small segments so that segments roll, are
deleted, and the spool runs empty again and again (the paths where a crash can leave a stale
cursor). After each append or commit returns, the child tells the parent which ids it covered
(``A`` appended durably, ``R`` read, ``C`` committed). The parent kills it with SIGKILL after a
random delay, starts it again on the same directory, ``--kills`` times; then a last child
drains the spool.

Counted, over all ids whose append had returned (the spool promised to keep them):

- lost: never read by any consumer afterwards (goal 0);
- committed twice: an id whose commit had returned came back in a later read (goal 0: the
  cursor never moves backwards);
- read again: read before a crash but not committed, then read again after it (expected:
  at-least-once delivery; the engine deduplicates).

Usage: python3 benchmarks/spool_crash.py [--kills 1000] [--max-delay 0.2] [--json]
The CI variant (tests/relay_upload/test_spool_crash.py) runs 100 kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from typing import Any, Dict, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vdsm_hooks.relay.spool import Spool  # noqa: E402

SEGMENT_BYTES = 4096
PAD = "x" * 80


def child(directory: str, first_id: int, seed: int, drain_only: bool) -> None:
    """Append and consume until killed (or, with ``drain_only``, until the spool is empty)."""
    rng = random.Random(seed)
    out = sys.stdout
    spool = Spool(directory, 64 << 20, segment_bytes=SEGMENT_BYTES)
    out.write("S\n")  # started: the parent's clock for the kill starts now
    out.flush()
    next_id = first_id
    while True:
        if not drain_only and rng.random() < 0.55:
            count = rng.randint(1, 12)
            ids = list(range(next_id, next_id + count))
            next_id += count
            spool.append([json.dumps({"id": i, "pad": PAD}).encode() + b"\n" for i in ids])
            out.write("A %s\n" % " ".join(map(str, ids)))
            out.flush()
            continue
        batch = spool.read(rng.randint(1, 20), 1 << 20)
        if batch is None:
            if drain_only:
                out.write("E\n")
                out.flush()
                return
            continue
        ids = [json.loads(line)["id"] for line in batch.lines]
        out.write("R %s\n" % " ".join(map(str, ids)))
        out.flush()
        settled = len(ids) if rng.random() < 0.8 else rng.randint(0, len(ids))
        spool.commit(batch, settled)
        out.write("C %s\n" % " ".join(map(str, ids[:settled])))
        out.flush()


class Ledger:
    def __init__(self) -> None:
        self.appended: Set[int] = set()
        self.read: Dict[int, int] = {}  # id -> the run that first read it
        self.read_again: Set[int] = set()
        self.committed: Set[int] = set()
        self.committed_twice: Set[int] = set()
        self.starts = 0

    def take(self, text: str) -> None:
        for line in text.splitlines():
            if not line:
                continue
            kind, _, rest = line.partition(" ")
            ids = [int(x) for x in rest.split()] if rest else []
            if kind == "A":
                self.appended.update(ids)
            elif kind == "R":
                for i in ids:
                    if i in self.committed:
                        self.committed_twice.add(i)
                    if self.read.setdefault(i, self.starts) != self.starts:
                        self.read_again.add(i)
            elif kind == "C":
                self.committed.update(ids)
            elif kind == "S":
                self.starts += 1


def _complete_lines(data: bytes) -> str:
    """Only whole lines: a kill can cut the child's last report short."""
    end = data.rfind(b"\n")
    return data[:end + 1].decode() if end >= 0 else ""


def _fork_child(directory: str, first_id: int, seed: int, drain_only: bool = False
                ) -> tuple[int, Any]:
    """A real process running ``child`` (forked: restarts cost no interpreter start-up)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code = 0
        try:
            sys.stdout = os.fdopen(write_end, "w")
            child(directory, first_id, seed, drain_only)
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001 - report and exit, never run the parent's code
            code = 1
        os._exit(code)
    os.close(write_end)
    return pid, os.fdopen(read_end, "rb")


def run(kills: int, max_delay: float, seed: int) -> Dict[str, Any]:
    rng = random.Random(seed)
    ledger = Ledger()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vmdiag-spool-crash-") as tmp:
        directory = os.path.join(tmp, "spool")
        for n in range(kills):
            pid, pipe = _fork_child(directory, n * 1_000_000, rng.randrange(1 << 30))
            first = pipe.readline()  # "S": the spool is loaded
            time.sleep(rng.uniform(0, max_delay))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            ledger.take(_complete_lines(first + pipe.read()))
            pipe.close()
        pid, pipe = _fork_child(directory, kills * 1_000_000, 0, drain_only=True)
        data = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert status == 0 and data.endswith(b"E\n"), "the drain failed"
        ledger.take(_complete_lines(data))
    lost = sorted(ledger.appended - set(ledger.read))
    return {
        "kills": kills,
        "appended": len(ledger.appended),
        "committed": len(ledger.committed),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "committed_twice": len(ledger.committed_twice),
        "read_again_after_crash": len(ledger.read_again),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "--drain" in sys.argv[5:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--max-delay", type=float, default=0.2,
                        help="seconds a child runs at most after start-up before SIGKILL")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.kills, args.max_delay, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print("spool crash: %(kills)d SIGKILLs, %(appended)d envelopes appended durably, "
              "%(committed)d committed, "
              "%(lost)d lost, %(committed_twice)d committed twice, %(read_again_after_crash)d read "
              "again after a crash (at-least-once), %(seconds).1f s" % result)
    return 0 if result["lost"] == 0 and result["committed_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
