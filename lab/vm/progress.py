"""Timed progress lines for the slow steps of building and booting the test guest.

A debootstrap or a TCG boot takes minutes. Printing each step with its elapsed time makes a slow
CI log readable and shows at a glance which step to blame when one hangs or regresses.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

_START = time.monotonic()


def log(message: str) -> None:
    """Print one progress line to stderr, prefixed with seconds since this process started."""
    print("[vmdiag-vm %7.1fs] %s" % (time.monotonic() - _START, message), file=sys.stderr,
          flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Log the start of ``what`` and, when it ends, how long it took (or that it failed)."""
    began = time.monotonic()
    log(what + " ...")
    try:
        yield
    except BaseException:
        log("%s FAILED after %.1fs" % (what, time.monotonic() - began))
        raise
    log("%s done in %.1fs" % (what, time.monotonic() - began))
