"""The ``vmdiag`` VM custom property, merged into ``UserDefinedVMProperties`` per cluster level.

``engine-config -g UserDefinedVMProperties`` prints one line per cluster level::

    UserDefinedVMProperties:  version: 4.6
    UserDefinedVMProperties: sap_agent=^(true|false)$;memory=^[0-9]+$ version: 4.7

and ``engine-config -s UserDefinedVMProperties=<value> --cver=<level>`` replaces the whole value
of one level. So setup reads every level, adds ``vmdiag=^(on|off)$`` to the properties other
hooks declared (``;``-separated ``name=regex``), and writes back only the levels that lack it.
A level where ``vmdiag`` is already declared with another regex is left alone and reported:
changing it could break whatever declared it. The engine reads the value at start, so the
change takes effect at the next ``systemctl restart ovirt-engine``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Dict, List, Optional, Tuple

from .steps import Action, Context, Finding, RunCommand, SetupError

KEY = "UserDefinedVMProperties"
NAME = "vmdiag"
REGEX = "^(on|off)$"
DECLARATION = "%s=%s" % (NAME, REGEX)
#: the cluster levels of oVirt 4.5, for the printed commands when engine-config is absent
LEVELS_45 = ("4.2", "4.3", "4.4", "4.5", "4.6", "4.7")

_LINE = re.compile(r"^%s\s*:\s?(?P<value>.*?)\s*version:\s*(?P<level>\S+)\s*$" % KEY)


def parse_get(output: str) -> Dict[str, str]:
    """cluster level -> value, from ``engine-config -g UserDefinedVMProperties``."""
    levels: Dict[str, str] = {}
    for line in output.splitlines():
        m = _LINE.match(line.strip())
        if m:
            levels[m.group("level")] = m.group("value").strip()
    return levels


def split(value: str) -> List[Tuple[str, str]]:
    out = []
    for part in value.split(";"):
        part = part.strip()
        if part:
            name, _, regex = part.partition("=")
            out.append((name.strip(), regex))
    return out


def merge(value: str) -> Optional[str]:
    """The value with vmdiag added; None if it already has it. SetupError on a conflict."""
    props = split(value)
    for name, regex in props:
        if name == NAME:
            if regex == REGEX:
                return None
            raise SetupError("%s=%s is already declared (by another hook or by hand); vmdiag "
                             "needs %s" % (name, regex, DECLARATION))
    return ";".join(["%s=%s" % p for p in props] + [DECLARATION])


def _set_argv(tool: str, value: str, level: str) -> List[str]:
    return [tool, "-s", "%s=%s" % (KEY, value), "--cver=%s" % level]


def inspect(ctx: Context) -> Finding:
    tool = shutil.which("engine-config")
    if tool is None:
        commands = "; ".join("engine-config -s %s='%s' --cver=%s" % (KEY, DECLARATION, level)
                             for level in LEVELS_45)
        raise SetupError("engine-config not found (package ovirt-engine-tools; setup runs on the "
                         "engine machine). There run, joining with ';' any value "
                         "'engine-config -g %s' shows: %s" % (KEY, commands))
    try:
        proc = subprocess.run([tool, "-g", KEY], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SetupError("engine-config -g %s: %s" % (KEY, err)) from err
    if proc.returncode != 0:
        raise SetupError("engine-config -g %s failed (exit %d): %s: run it by hand to see why"
                         % (KEY, proc.returncode, (proc.stderr or proc.stdout).strip()[-200:]))
    levels = parse_get(proc.stdout)
    if not levels:
        raise SetupError("engine-config -g %s printed no cluster level: check the engine "
                         "database is up (systemctl status postgresql)" % KEY)
    actions: List[Action] = []
    conflicts = []
    for level, value in sorted(levels.items()):
        try:
            merged = merge(value)
        except SetupError as err:
            conflicts.append("level %s: %s" % (level, err))
            continue
        if merged is not None:
            actions.append(RunCommand(_set_argv(tool, merged, level),
                                      undo_argv=_set_argv(tool, value, level)))
    if conflicts:
        raise SetupError("%s; fix with engine-config -s %s='<the other properties>;%s' "
                         "--cver=<level> once nothing relies on the other definition"
                         % ("; ".join(conflicts), KEY, DECLARATION))
    have = sorted(set(levels) - {a.argv[-1].split("=", 1)[1] for a in actions
                                 if isinstance(a, RunCommand)})
    fact = "%s has %s at cluster levels %s" % (KEY, DECLARATION, ", ".join(have) or "none")
    notes = []
    if actions:
        notes.append("after setup: systemctl restart ovirt-engine (engine-config values are "
                     "read at engine start)")
    return Finding(fact, actions=actions, notes=notes)
