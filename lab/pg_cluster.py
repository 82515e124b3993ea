"""A throwaway PostgreSQL server for tests and the storage benchmark.

``initdb`` refuses to run as root, so as root the cluster is created and run as the
``postgres`` system user (the Debian/RHEL package creates it). The server listens on a Unix
socket in its own temporary folder and on 127.0.0.1 at a free port, nothing else, and is
stopped and deleted at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from typing import Dict, List, Tuple


class PgUnavailable(RuntimeError):
    """This machine cannot run a PostgreSQL server; the message says what to install."""


def find_bindir() -> str:
    """Folder holding initdb and pg_ctl: $VMDIAG_PG_BINDIR, Debian's versioned folders
    (newest first), or PATH (RHEL installs them in /usr/bin)."""
    candidates: List[str] = []
    if os.environ.get("VMDIAG_PG_BINDIR"):
        candidates.append(os.environ["VMDIAG_PG_BINDIR"])
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                             key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit()
                             else 0, reverse=True))
    found = shutil.which("initdb")
    if found:
        candidates.append(os.path.dirname(found))
    for folder in candidates:
        if os.access(os.path.join(folder, "initdb"), os.X_OK) and \
                os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    raise PgUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found; install them "
                        "(Debian: apt-get install postgresql; EL: dnf install "
                        "postgresql-server) or set VMDIAG_PG_BINDIR")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """``with PgCluster() as pg: url = pg.create_database()``."""

    def __init__(self, settings: Dict[str, str] | None = None,
                 bindir: str | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.settings = dict(settings or {})
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root, and there is no 'postgres' user to run "
                                    "initdb as; install the postgresql package, which "
                                    "creates it") from None
            self.user = "postgres"
        self.base = ""
        self.port = 0
        self._started = False

    def _run(self, *args: str) -> None:
        kwargs = {"user": self.user, "group": self.user} if self.user else {}
        proc = subprocess.run(list(args), capture_output=True, text=True, cwd=self.base,
                              timeout=120, check=False, **kwargs)  # type: ignore[call-overload]
        if proc.returncode != 0:
            log = ""
            try:
                with open(os.path.join(self.base, "server.log"), encoding="utf-8") as f:
                    log = f.read()[-3000:]
            except OSError:
                pass
            raise PgUnavailable("%s failed (exit %d): %s%s\n%s" % (
                os.path.basename(args[0]), proc.returncode, proc.stdout, proc.stderr, log))

    def start(self) -> PgCluster:
        self.base = tempfile.mkdtemp(prefix="vmdiag-pg-")
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        data = os.path.join(self.base, "data")
        self._run(os.path.join(self.bindir, "initdb"), "-D", data, "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        self.port = _free_port()
        options = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                   "unix_socket_directories": self.base, "max_connections": "100"}
        options.update(self.settings)
        with open(os.path.join(data, "postgresql.auto.conf"), "a", encoding="utf-8") as f:
            for key, value in options.items():
                f.write("%s = '%s'\n" % (key, value))
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", data, "-l",
                  os.path.join(self.base, "server.log"), "-w", "-t", "60", "start")
        self._started = True
        return self

    def url(self, dbname: str = "postgres", tcp: bool = False) -> str:
        if tcp:
            return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname)
        return "postgresql://postgres@/%s?host=%s&port=%d" % (dbname, self.base, self.port)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL (Unix socket)."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "%s"' % name)
        return self.url(name)

    #: the server's own background processes (their ``ps`` titles), as against the backends
    #: that serve connections (``server_cpu``)
    BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum",
                  "logical replication", "archiver", "stats collector", "io worker",
                  "walsummarizer")

    def server_cpu_seconds(self) -> float:
        """CPU seconds of the server so far: the postmaster, its live children (backends,
        WAL writer, checkpointer, ...) and the children it already reaped."""
        return self.server_cpu()[0]

    def server_cpu(self) -> Tuple[float, float]:
        """``(all, backends)``: CPU seconds of the server so far (``server_cpu_seconds``),
        and of its live children serving connections (a client's queries); the rest is its
        background work (``BACKGROUND``: autovacuum, WAL, checkpoints). Reaped children count
        through the postmaster's ``cutime``/``cstime``: without them, a child seen at the
        start of a window and gone at its end would take its CPU away from the window."""
        with open(os.path.join(self.base, "data", "postmaster.pid")) as handle:
            root = int(handle.readline())
        tick = os.sysconf("SC_CLK_TCK")
        titles = tuple("postgres: " + b for b in self.BACKGROUND)
        total = backends = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                if int(entry) == root:
                    total += sum(int(f) for f in fields[11:15])  # + reaped children's
                    continue
                if int(fields[1]) != root:
                    continue
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    title = handle.read().decode("ascii", "replace")
            except OSError:  # gone meanwhile
                continue
            used = int(fields[11]) + int(fields[12])
            total += used
            if not title.startswith(titles):
                backends += used
        return total / tick, backends / tick

    def stop(self) -> None:
        if self._started:
            self._started = False
            try:
                self._run(os.path.join(self.bindir, "pg_ctl"), "-D",
                          os.path.join(self.base, "data"), "-m", "immediate", "-w", "stop")
            finally:
                shutil.rmtree(self.base, ignore_errors=True)
        elif self.base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
