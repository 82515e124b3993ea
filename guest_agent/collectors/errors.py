"""Per-field error recording: a value that cannot be read costs that field, not the section."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Dict, Iterator, List

from ..platform import PlatformError

#: What reading a machine can legitimately raise: missing files on old kernels, permissions,
#: odd formats, absent keys. Anything else is a bug and is left to the section runner.
EXPECTED = (PlatformError, OSError, ValueError, IndexError, KeyError)

MAX_ERRORS = 256  # protocol cap on a section's errors list


def describe(err: BaseException) -> str:
    """A sentence an admin can act on, for the exceptions in EXPECTED."""
    if isinstance(err, PlatformError):
        return str(err)
    if isinstance(err, OSError):
        where = " %s" % err.filename if err.filename else ""
        if err.errno == errno.ENOENT:
            return ("%s does not exist here (older kernel, feature disabled, or tool not "
                    "installed)" % (where.strip() or "a needed file"))
        if err.errno in (errno.EACCES, errno.EPERM):
            return "permission denied reading%s; run the agent as root" % where
        return "cannot read%s: %s" % (where, err.strerror or err)
    if isinstance(err, KeyError):
        return "the kernel did not provide %s (too old a kernel?)" % err
    return "unexpected format (%s: %s); please report it with the file's content" % (
        type(err).__name__, err)


class FieldErrors:
    """Collects ``{"field", "error"}`` entries; ``with errors.field("dns"):`` guards one field."""

    def __init__(self) -> None:
        self.items: List[Dict[str, str]] = []

    def add(self, name: str, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append({"field": name, "error": message[:1024]})

    @contextmanager
    def field(self, name: str) -> Iterator[None]:
        try:
            yield
        except EXPECTED as err:
            self.add(name, describe(err))
