"""Find the Debian mirror that apt on this machine already uses.

The guest image is debootstrapped from the same mirror apt is configured with, read at run time,
so no repository host name is ever written into the tree and CI uses whatever mirror (or local
proxy) the machine has. Both apt source formats are read: one-line ``sources.list`` entries and
deb822 ``*.sources`` stanzas. ``root`` lets tests point this at a fake /etc tree.
"""

from __future__ import annotations

import glob
import os
from typing import Iterator, List, Tuple

#: Environment variable that overrides the mirror (e.g. a local apt cache for offline CI).
MIRROR_ENV = "VMDIAG_TEST_MIRROR"


class MirrorNotFound(RuntimeError):
    """No usable ``deb`` source for the wanted suite; set VMDIAG_TEST_MIRROR to a Debian mirror."""


Source = Tuple[List[str], List[str], List[str]]  # (uris, suites, components)


def _one_line_sources(path: str) -> Iterator[Source]:
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            words = line.split()[1:]
            if words and words[0].startswith("["):  # options such as [signed-by=...]
                while words and not words[0].endswith("]"):
                    words.pop(0)
                words = words[1:]
            if len(words) >= 2:
                yield [words[0]], [words[1]], words[2:]


def _deb822_sources(path: str) -> Iterator[Source]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    for stanza in text.split("\n\n"):
        fields = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"]) == ["no"]:
            continue
        yield fields.get("uris", []), fields.get("suites", []), fields.get("components", [])


def apt_sources(root: str = "/") -> Iterator[Source]:
    """Yield every enabled ``deb`` source configured under ``root``/etc/apt, in apt's order."""
    etc = os.path.join(root, "etc/apt")
    main_list = os.path.join(etc, "sources.list")
    if os.path.isfile(main_list):
        yield from _one_line_sources(main_list)
    for path in sorted(glob.glob(os.path.join(etc, "sources.list.d", "*"))):
        if path.endswith(".list"):
            yield from _one_line_sources(path)
        elif path.endswith(".sources"):
            yield from _deb822_sources(path)


def find_mirror(suite: str = "bookworm", root: str = "/",
                env: dict | None = None) -> str:
    """Return the mirror URI apt uses for ``suite`` with component ``main``.

    The environment variable VMDIAG_TEST_MIRROR wins when set. Raises MirrorNotFound, naming
    the files it read, when apt has no such source.
    """
    env = os.environ if env is None else env
    override = env.get(MIRROR_ENV, "").strip()
    if override:
        return override
    for uris, suites, components in apt_sources(root):
        if suite in suites and "main" in components:
            for uri in uris:
                if uri.startswith(("http://", "https://", "file:/")):
                    return uri
    raise MirrorNotFound(
        "no 'deb' source for suite %r with component main under %s/etc/apt; set %s to a Debian "
        "mirror URL" % (suite, root.rstrip("/"), MIRROR_ENV))
