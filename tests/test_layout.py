"""The walls between the parts (docs/design.md, "Source layout"), checked on every import.

Each part may import only what its row allows; nothing shipped imports ``lab`` or ``tests``;
benchmarks do not import ``tests``. Imports are read with ``ast``, so an import inside a function
or under ``try`` counts as much as one at the top.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Dict, Iterator, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDLIB = set(sys.stdlib_module_names)

#: What each shipped part may import besides the standard library and itself.
ALLOWED: Dict[str, Set[str]] = {
    "diag_protocol": set(),
    "guest_agent": {"diag_protocol", "psutil", "dbus"},
    # cryptography: the CN of the host certificate; prometheus_client: the relay's /metrics
    # orjson (optional in both): faster JSON, same results (diag_protocol.framing.use_fast_json);
    # msgspec (optional in both): the native gate of diag_protocol.native, same results
    "vdsm_hooks": {"diag_protocol", "libvirt", "libvirtaio", "aiohttp", "vdsm", "cryptography",
                   "prometheus_client", "orjson", "msgspec"},
    "engine_plugin": {"diag_protocol", "aiohttp", "jinja2", "markupsafe", "ovirtsdk4",
                      "psycopg", "psycopg2", "psycopg_pool", "prometheus_client", "numpy",
                      "yarl", "multidict", "orjson", "msgspec"},
}


def _sources(part: str) -> Iterator[str]:
    top = os.path.join(ROOT, part)
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("node_modules", "__pycache__", "static")]
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") or (part == "vdsm_hooks" and name == "50_vmdiag"):
                yield path


def imports_of(path: str) -> Iterator[Tuple[int, str]]:
    """Top-level module names imported by ``path`` (relative imports are the part itself)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_shipped_parts_import_only_what_their_row_allows(part: str) -> None:
    found = ["%s:%d imports %s" % (os.path.relpath(path, ROOT), line, name)
             for path in _sources(part) for line, name in imports_of(path)
             if name != part and name not in STDLIB and name not in ALLOWED[part]]
    assert found == []


def test_nothing_shipped_imports_the_lab_or_the_tests() -> None:
    found = ["%s:%d" % (os.path.relpath(path, ROOT), line)
             for part in ALLOWED for path in _sources(part)
             for line, name in imports_of(path) if name in ("lab", "tests")]
    assert found == []


def test_benchmarks_do_not_import_the_tests() -> None:
    found = ["%s:%d" % (os.path.relpath(path, ROOT), line) for path in _sources("benchmarks")
             for line, name in imports_of(path) if name == "tests"]
    assert found == []


def test_the_checker_sees_a_forbidden_import(tmp_path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from lab.vm import image\n    import tests.conftest\n")
    assert [name for _, name in imports_of(str(bad))] == ["lab", "tests"]


def test_the_setup_step_runner_is_one_runner_kept_twice() -> None:
    """The engine's and the host's setup share their runner but have no shared home for it
    (docs/design.md, "Source layout"): the two copies must stay the same, so a fix made in
    one is made in both."""
    copies = []
    for part in ("engine_plugin", "vdsm_hooks"):
        with open(os.path.join(ROOT, part, "setup", "steps.py"), encoding="utf-8") as f:
            copies.append(f.read())
    assert copies[0] == copies[1]
