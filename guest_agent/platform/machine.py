"""Where the platform layer reads from: a root path for files and a runner for commands.

Every platform function takes a ``Machine``. The default one reads the real ``/proc``, ``/sys``,
``/etc`` and runs real commands; tests build one on a fixture tree and a recorded-output runner,
so parsing is tested on real file contents without patching any function. The same mechanism
lets the agent run in a container that sees the guest's root under some prefix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Protocol, Sequence

from .bus import Bus, NoBus
from .errors import CommandFailed, CommandNotFound, CommandTimeout

#: Commands get a C locale and no pager/colour so their output parses the same everywhere.
COMMAND_ENV = {"LC_ALL": "C", "LANG": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0",
               "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


class Paths(NamedTuple):
    """Root of the filesystem to read; ``Paths("/x")`` reads ``/x/proc/stat`` for ``/proc/stat``."""

    root: str = "/"

    def host(self, path: str) -> str:
        """The real path of the machine's absolute ``path`` (e.g. ``/etc/os-release``)."""
        if self.root in ("", "/"):
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def proc(self, *parts: str) -> str:
        return self.host(os.path.join("/proc", *parts))

    def sys(self, *parts: str) -> str:
        return self.host(os.path.join("/sys", *parts))

    def etc(self, *parts: str) -> str:
        return self.host(os.path.join("/etc", *parts))

    @property
    def is_live(self) -> bool:
        """True when this is the running system's own root (pwd/NSS lookups then apply)."""
        return self.root in ("", "/")


class CommandResult(NamedTuple):
    argv: Sequence[str]
    rc: int
    stdout: str
    stderr: str = ""


class Runner(Protocol):
    """Runs ``argv`` and returns its result; raises CommandNotFound or CommandTimeout."""

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult: ...


def subprocess_runner(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run a real command with a timeout, C locale, no stdin; kill it when the timeout passes."""
    env = dict(os.environ)
    env.update(COMMAND_ENV)
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, env=env, check=False)
    except FileNotFoundError as err:
        raise CommandNotFound(argv) from err
    except PermissionError as err:
        raise CommandNotFound(argv) from err
    except subprocess.TimeoutExpired as err:
        raise CommandTimeout(argv, timeout) from err
    return CommandResult(argv, done.returncode, done.stdout.decode("utf-8", "replace"),
                         done.stderr.decode("utf-8", "replace"))


def _live_if_addrs() -> Dict[str, List[Any]]:
    """getifaddrs(3) in psutil's shape. On Linux read over rtnetlink directly, which spares
    the agent's start importing psutil (only the logged-in users need it, later); psutil
    when netlink cannot be used."""
    if sys.platform.startswith("linux"):
        from .linux.netlink import if_addrs

        try:
            return dict(if_addrs())
        except OSError:
            pass
    import psutil

    return psutil.net_if_addrs()


def _psutil_users() -> List[Any]:
    import psutil

    return psutil.users()


class Machine(NamedTuple):
    """The machine the platform functions look at.

    ``if_addrs`` and ``users`` are the two things Linux exposes only through C APIs
    (getifaddrs, getutxent) rather than files; they default to psutil's wrappers and take
    the same shapes (``psutil.net_if_addrs()``, ``psutil.users()``) when a test supplies them.
    ``bus`` is the D-Bus to ask (systemd, timedated); by default the system bus for the live
    system and none for a machine read from a root path (``dbus``).
    """

    paths: Paths = Paths()
    runner: Runner = subprocess_runner
    if_addrs: Callable[[], Dict[str, List[Any]]] = _live_if_addrs
    users: Callable[[], List[Any]] = _psutil_users
    command_timeout: float = 10.0
    bus: Bus | None = None

    @property
    def dbus(self) -> Bus:
        if self.bus is not None:
            return self.bus
        return SYSTEM_BUS if self.paths.is_live else NO_BUS

    def run(self, argv: Sequence[str], ok_codes: Sequence[int] = (0,),
            timeout: float = 0.0) -> CommandResult:
        """Run a helper command; raise CommandFailed if it exits with a code not in ok_codes."""
        result = self.runner(argv, timeout or self.command_timeout)
        if result.rc not in ok_codes:
            raise CommandFailed(argv, result.rc, result.stderr or result.stdout)
        return result


#: The one connection to the system bus the agent keeps (opened at the first call).
SYSTEM_BUS = Bus()
NO_BUS = NoBus()
LOCAL = Machine()
