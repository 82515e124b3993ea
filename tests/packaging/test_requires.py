"""Every library the shipped code imports is a Requires of the RPM that ships the importing
module, under the name EL9 gives it; derived from the code itself (ast), not from a list kept by
hand beside the spec.

No EL mirror is reachable from CI, so the EL9 name of each library and the repository that has
it for EL9 were checked once (recorded in EL9_PACKAGES and docs/install.md); a new import
fails here until someone checks it and adds it.
"""

import ast
import os
import re
import sys
from typing import Dict, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "packaging", "vmdiag.spec")

#: top-level module -> (EL9 package, where it is found for EL9, with the version seen there)
EL9_PACKAGES: Dict[str, Tuple[str, str]] = {
    "psutil": ("python3-psutil", "AppStream (5.8.0)"),
    "dbus": ("python3-dbus", "BaseOS (1.2.18; the agent's optional D-Bus client, Recommends)"),
    "libvirt": ("python3-libvirt", "AppStream"),
    "libvirtaio": ("python3-libvirt", "AppStream (same package as libvirt)"),
    "cryptography": ("python3-cryptography", "BaseOS (36.0)"),
    "jinja2": ("python3-jinja2", "AppStream (2.11.3)"),
    "aiohttp": ("python3-aiohttp", "EPEL 9 (3.9.5)"),
    "prometheus_client": ("python3-prometheus_client", "EPEL 9 (0.21.0)"),
    "psycopg": ("python3-psycopg3", "EPEL 9 (3.1.18)"),
    "psycopg_pool": ("python3-psycopg3_pool", "EPEL 9 (subpackage of python-psycopg3)"),
    "ovirtsdk4": ("python3-ovirt-engine-sdk4", "oVirt 4.5 repositories"),
    "vdsm": ("vdsm", "oVirt 4.5 repositories"),
    "orjson": ("python3-orjson", "Fedora; no EL9 build confirmed (optional, Recommends only: "
                                 "the standard json module gives the same results, slower)"),
    "msgspec": ("python3-msgspec", "Fedora; no EL9 build confirmed (optional, Recommends only: "
                                   "diag_protocol's validation walk gives the same results, "
                                   "slower)"),
}

#: the project's own top-level packages -> the RPM that ships each
OWN = {"diag_protocol": "python3-vmdiag-protocol", "guest_agent": "vmdiag-guest-agent",
       "vdsm_hooks": "vmdiag-relay", "engine_plugin": "ovirt-engine-ui-plugin-vmdiag"}


def _optional(handlers: List[ast.ExceptHandler]) -> bool:
    """A try whose handler catches ImportError (or anything broader) makes its imports optional."""
    for h in handlers:
        names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
        if h.type is None or any(isinstance(n, ast.Name) and n.id in (
                "ImportError", "ModuleNotFoundError", "Exception", "BaseException")
                for n in names):
            return True
    return False


def imports_of(path: str) -> Dict[str, bool]:
    """Top-level module -> True if every import of it in the file is optional (guarded)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found: Dict[str, bool] = {}

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            inner = guarded or _optional(node.handlers)
            for child in node.body:
                visit(child, inner)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, guarded)
            return
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            found[top] = found.get(top, True) and guarded
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def shipped_sources() -> Dict[str, List[str]]:
    """RPM -> the Python files it ships (packages from %files, plus the hook scripts)."""
    out: Dict[str, List[str]] = {}
    for files_pkg, entries in spec_sections("files").items():
        paths = []
        for line in entries:
            m = re.match(r"%\{python3_sitelib\}/(\w+)/$", line)
            if m:
                for d, dirs, names in os.walk(os.path.join(ROOT, m.group(1))):
                    dirs[:] = [x for x in dirs if x not in ("node_modules", "tools", "__pycache__")]
                    paths += [os.path.join(d, n) for n in names if n.endswith(".py")]
            m = re.match(r"%\{hooksdir\}/(\w+)/(\w+)$", line)
            if m:
                paths.append(os.path.join(ROOT, "vdsm_hooks", "hooks", m.group(1), m.group(2)))
        out[files_pkg] = paths
    return out


def spec_sections(kind: str) -> Dict[str, List[str]]:
    """``%package -n X`` or ``%files -n X`` sections of the spec: name -> stripped lines."""
    sections: Dict[str, List[str]] = {}
    current = None
    with open(SPEC, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            m = re.match(r"%(\w+)(?:\s+-n\s+(\S+))?\s*$", line)
            if m and m.group(1) in ("package", "files", "description", "prep", "build",
                                    "install", "pre", "post", "preun", "postun", "changelog"):
                current = m.group(2) if m.group(1) == kind and m.group(2) else None
                if current:
                    sections[current] = []
                continue
            if current is not None and line:
                sections[current].append(line)
    return sections


def requires() -> Dict[str, Set[str]]:
    """RPM -> names it requires, own subpackages followed transitively."""
    direct = {name: {re.split(r"[\s<>=]", line.split(":", 1)[1].strip())[0]
                     for line in lines if line.startswith("Requires:")}
              for name, lines in spec_sections("package").items()}
    closed = {}
    for name in direct:
        seen, todo = set(), [name]
        while todo:
            for dep in direct.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        closed[name] = seen
    return closed


def test_the_spec_is_parsed_into_every_package():
    assert set(spec_sections("package")) == set(shipped_sources()) == {
        "python3-vmdiag-protocol", "vmdiag-guest-agent", "vmdiag-relay", "vdsm-hook-vmdiag",
        "ovirt-engine-ui-plugin-vmdiag"}
    assert all(shipped_sources().values())


def test_every_import_of_shipped_code_is_a_requires_with_its_el9_name():
    stdlib = set(sys.stdlib_module_names)
    reqs = requires()
    missing = []
    for rpm, paths in shipped_sources().items():
        own = {top for top, name in OWN.items() if name == rpm}
        for path in paths:
            for top, optional in imports_of(path).items():
                if top in stdlib or top in own or top == "__future__":
                    continue
                if top in OWN:
                    needed = OWN[top]
                elif top in EL9_PACKAGES:
                    needed = EL9_PACKAGES[top][0]
                else:
                    missing.append("%s imports %s, which has no EL9 package in EL9_PACKAGES: find "
                                   "the package that provides it for EL9 (BaseOS, AppStream, "
                                   "oVirt 4.5, EPEL 9) or drop the import"
                                   % (os.path.relpath(path, ROOT), top))
                    continue
                if needed not in reqs[rpm] and not optional:
                    missing.append("%s (in %s) imports %s: add 'Requires: %s' to %s"
                                   % (os.path.relpath(path, ROOT), rpm, top, needed, rpm))
    assert not missing, "\n".join(missing)


def test_the_standalone_relay_needs_no_vdsm_and_the_hook_package_brings_both():
    reqs = requires()
    assert "vdsm" not in reqs["vmdiag-relay"]
    assert {"vdsm", "vmdiag-relay"} <= reqs["vdsm-hook-vmdiag"]


def test_guest_agent_needs_only_python_and_psutil():
    third_party = set(reqs for reqs in requires()["vmdiag-guest-agent"]
                      if reqs.startswith("python3-"))
    assert third_party == {"python3-psutil", "python3-vmdiag-protocol"}


@pytest.mark.parametrize("source,expected", [
    ("import aiohttp\n", {"aiohttp": False}),
    ("try:\n    import vdsm.hook\nexcept ImportError:\n    pass\n", {"vdsm": True}),
    ("try:\n    import x\nexcept ValueError:\n    pass\n", {"x": False}),
    ("def f():\n    from psycopg import errors\n", {"psycopg": False}),
    ("from . import y\nfrom .z import w\n", {}),
])
def test_import_scanner(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imports_of(str(path)) == expected
