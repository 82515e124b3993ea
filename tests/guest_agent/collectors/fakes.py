"""Recorded stand-ins for the machine: fixture trees, recorded command output, a manual clock.

Trees live in ``data/<name>/root`` (el9: a Rocky 9 guest written from a real one;
debian12: copied from the CI machine's own /proc, /sys and /etc). ``data/<name>/commands``
holds the recorded output of each command the platform layer runs, listed in
``manifest.json``; a command listed under ``missing`` behaves as not installed and any other
unknown command fails the test, so a test can never reach the real system by accident.
``data/<name>/sources.json`` holds what getifaddrs and utmp returned.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections import namedtuple
from typing import Any, Dict, List, Sequence

from guest_agent.platform import (
    CommandNotFound,
    CommandResult,
    CommandTimeout,
    Machine,
    Paths,
)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

Addr = namedtuple("Addr", "family address netmask broadcast ptp")
User = namedtuple("User", "name terminal host started pid")
_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "packet": getattr(
    socket, "AF_PACKET", 17)}


class RecordedRunner:
    """Answers commands from a manifest of recorded outputs; records every call."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        with open(os.path.join(directory, "manifest.json")) as f:
            manifest = json.load(f)
        self.missing = set(manifest.get("missing", ()))
        self.commands = {tuple(c["argv"]): c for c in manifest["commands"]}
        self.calls: List[tuple] = []

    def add(self, argv: Sequence[str], stdout: str = "", rc: int = 0, stderr: str = "",
            timeout: bool = False) -> None:
        self.commands[tuple(argv)] = {"argv": list(argv), "text": stdout, "rc": rc,
                                      "stderr": stderr, "timeout": timeout}
        self.missing.discard(argv[0])

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(tuple(argv))
        entry = self.commands.get(tuple(argv))
        if entry is None:
            if argv[0] in self.missing:
                raise CommandNotFound(argv)
            raise AssertionError("unexpected command %r: record it in the manifest" % (argv,))
        if entry.get("timeout"):
            raise CommandTimeout(argv, timeout)
        if "text" in entry:
            stdout = entry["text"]
        else:
            with open(os.path.join(self.directory, entry["stdout"])) as f:
                stdout = f.read()
        return CommandResult(argv, entry.get("rc", 0), stdout, entry.get("stderr", ""))


class ManualClock:
    """A monotonic clock the test moves by hand, so rates have exact expected values."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _sources(name: str) -> Dict[str, Any]:
    with open(os.path.join(DATA, name, "sources.json")) as f:
        return json.load(f)


def machine(name: str, root: str | None = None, runner: RecordedRunner | None = None
            ) -> Machine:
    """A Machine reading fixture tree ``name`` (or a copy of it at ``root``)."""
    sources = _sources(name)
    addrs = {ifname: [Addr(_FAMILIES[fam], address, mask, None, None)
                      for fam, address, mask in items]
             for ifname, items in sources["if_addrs"].items()}
    users = [User(*u) for u in sources["users"]]
    return Machine(paths=Paths(root or os.path.join(DATA, name, "root")),
                   runner=runner or RecordedRunner(os.path.join(DATA, name, "commands")),
                   if_addrs=lambda: addrs, users=lambda: users)


def copy_tree(name: str, dest: str) -> str:
    """A writable copy of tree ``name`` (symlinks kept), for tests that change files."""
    target = os.path.join(dest, name)
    shutil.copytree(os.path.join(DATA, name, "root"), target, symlinks=True)
    return target


def read(root: str, rel: str) -> str:
    with open(os.path.join(root, rel)) as f:
        return f.read()


def write(root: str, rel: str, text: str) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
