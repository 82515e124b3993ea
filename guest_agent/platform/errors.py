"""Errors the platform layer raises, so collectors can tell "cannot read this here" from bugs.

    PlatformError                 anything this layer could not read; message says what to do
     +-- Unsupported              not available on this OS / kernel / distribution
     +-- CommandError             a helper command could not give an answer
          +-- CommandNotFound     the program is not installed
          +-- CommandTimeout      it ran longer than its timeout and was killed
          +-- CommandFailed       it exited non-zero (rc and stderr kept)

Collectors catch ``PlatformError`` (and ``OSError``/``ValueError`` from reading kernel files) per
field and record ``{"field", "error": str(err)}``; anything else is a bug and costs the section.
"""

from typing import Sequence


class PlatformError(Exception):
    """Something this machine could not tell us; ``str()`` is a sentence an admin can act on."""


class Unsupported(PlatformError):
    """The facility does not exist here (other OS, old kernel, feature compiled out)."""


class CommandError(PlatformError):
    def __init__(self, argv: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.argv = tuple(argv)


class CommandNotFound(CommandError):
    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__(argv, "%s is not installed (or not on PATH); install it to get this "
                               "field" % argv[0])


class CommandTimeout(CommandError):
    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(argv, "%s did not answer within %.1fs and was killed; check whether "
                               "it hangs when run by hand" % (" ".join(argv), timeout))


class CommandFailed(CommandError):
    def __init__(self, argv: Sequence[str], rc: int, stderr: str) -> None:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(argv, "%s exited with status %d: %s" % (" ".join(argv), rc, detail[:300]))
        self.rc = rc
        self.stderr = stderr
