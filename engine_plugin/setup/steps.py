"""The shape of a setup run: steps that look first and change afterwards, all or nothing.

Each step's ``inspect(ctx)`` only reads (files, commands that print, the network) and returns a
``Finding``: one line of fact, the fix when something is wrong that setup cannot do itself, and
the ``Action``s that would bring the machine where it should be. ``run`` inspects every step;
if any has a problem it prints them and changes nothing. Otherwise it applies the actions in
order, undoing the ones already done if a later one fails, then inspects again: that second
pass is the check of each step. ``--check`` is the first pass alone.

Errors::

    SetupError     an action failed; its message names the file or command and what to do
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, TextIO


class SetupError(Exception):
    """An action could not be completed; the message is for the administrator."""


@dataclass
class Context:
    """Where setup looks: ``root`` prefixes every file path (``/`` on a real machine)."""

    root: str = "/"
    offline: bool = False

    def path(self, real: str) -> str:
        return os.path.join(self.root, real.lstrip("/"))

    @property
    def rooted(self) -> bool:
        return os.path.abspath(self.root) != "/"

    def gid(self, group: str) -> Optional[int]:
        """The group's id in the root's /etc/group (the host's own database when root is /)."""
        if not self.rooted:
            try:
                return grp.getgrnam(group).gr_gid
            except KeyError:
                return None
        return _id_from(self.path("/etc/group"), group)

    def uid(self, user: str) -> Optional[int]:
        if not self.rooted:
            try:
                return pwd.getpwnam(user).pw_uid
            except KeyError:
                return None
        return _id_from(self.path("/etc/passwd"), user)


def _id_from(db: str, name: str) -> Optional[int]:
    try:
        with open(db, encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 2 and fields[0] == name:
                    return int(fields[2])
    except (OSError, ValueError):
        return None
    return None


class Action:
    """One change. ``apply`` raises SetupError; ``undo`` puts back what ``apply`` changed."""

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, ctx: Context) -> None:
        raise NotImplementedError

    def undo(self, ctx: Context) -> None:
        pass


class WriteFile(Action):
    """Write ``text`` to ``path`` (a real path) atomically, with mode and group."""

    def __init__(self, path: str, text: str, mode: int = 0o644, group: str | None = None):
        self.path, self.text, self.mode, self.group = path, text, mode, group
        self._before: Optional[bytes] = None
        self._existed = False

    def describe(self) -> str:
        return "write %s" % self.path

    def apply(self, ctx: Context) -> None:
        target = ctx.path(self.path)
        try:
            with open(target, "rb") as f:
                self._before, self._existed = f.read(), True
        except FileNotFoundError:
            self._existed = False
        except OSError as err:
            raise SetupError("%s: cannot read it (%s)" % (self.path, err.strerror)) from err
        gid = -1
        if self.group:
            found = ctx.gid(self.group)
            if found is None:
                raise SetupError("%s: group %s does not exist: reinstall the package that "
                                 "creates it" % (self.path, self.group))
            gid = found
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".vmdiag-setup.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self.text)
                os.chmod(tmp, self.mode)
                if gid != -1:
                    os.chown(tmp, -1, gid)
                os.rename(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as err:
            raise SetupError("%s: cannot write it (%s)" % (self.path, err.strerror)) from err

    def undo(self, ctx: Context) -> None:
        target = ctx.path(self.path)
        if self._existed and self._before is not None:
            with open(target, "wb") as f:
                f.write(self._before)
        elif not self._existed:
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass


class RunCommand(Action):
    """Run ``argv``; ``undo_argv`` (if any) reverses it."""

    def __init__(self, argv: Sequence[str], undo_argv: Sequence[str] | None = None,
                 what: str | None = None, env: Dict[str, str] | None = None):
        self.argv, self.undo_argv, self.what = list(argv), undo_argv, what
        self.env = dict(os.environ, **env) if env else None

    def describe(self) -> str:
        return self.what or "run %s" % " ".join(_quote(a) for a in self.argv)

    def apply(self, ctx: Context) -> None:
        try:
            proc = subprocess.run(self.argv, capture_output=True, text=True, timeout=300,
                                  env=self.env)
        except OSError as err:
            raise SetupError("%s: %s" % (self.argv[0], err.strerror)) from err
        except subprocess.TimeoutExpired as err:
            raise SetupError("%s: no answer in 300 s" % " ".join(self.argv)) from err
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
            raise SetupError("%s failed (exit %d): %s" % (" ".join(_quote(a) for a in self.argv),
                                                          proc.returncode, last[0]))

    def undo(self, ctx: Context) -> None:
        if self.undo_argv:
            subprocess.run(list(self.undo_argv), capture_output=True, timeout=300, check=False)


def _quote(arg: str) -> str:
    safe = all(c.isalnum() or c in "@%+=:,./-_" for c in arg)
    return arg if safe and arg else "'%s'" % arg.replace("'", "'\\''")


@dataclass
class Finding:
    fact: str
    problem: Optional[str] = None         # the fix, when setup cannot do it itself
    actions: List[Action] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


@dataclass
class Step:
    name: str
    inspect: Callable[[Context], Finding]


def _safe_inspect(step: Step, ctx: Context) -> Finding:
    try:
        return step.inspect(ctx)
    except SetupError as err:
        return Finding("", problem=str(err))


def _joined(fact: str, problem: str | None) -> str:
    return "%s: %s" % (fact, problem) if fact else str(problem)


def check(steps: Sequence[Step], ctx: Context, out: TextIO) -> int:
    """The doctor: one line per step; 0 when nothing is wrong or left to do."""
    code = 0
    for step in steps:
        finding = _safe_inspect(step, ctx)
        if finding.problem:
            out.write("FAIL %-9s %s\n" % (step.name, _joined(finding.fact, finding.problem)))
            code = 1
        elif finding.actions:
            out.write("TODO %-9s %s: setup will %s\n" % (
                step.name, finding.fact, "; ".join(a.describe() for a in finding.actions)))
            code = 1
        else:
            out.write("ok   %-9s %s\n" % (step.name, finding.fact))
        for note in finding.notes:
            out.write("     %-9s %s\n" % ("", note))
    return code


def run(steps: Sequence[Step], ctx: Context, out: TextIO) -> int:
    """Inspect all, change all or nothing, then check each step again."""
    findings = [(step, _safe_inspect(step, ctx)) for step in steps]
    problems = [(s, f) for s, f in findings if f.problem]
    if problems:
        for step, finding in problems:
            out.write("FAIL %-9s %s\n" % (step.name, _joined(finding.fact, finding.problem)))
        out.write("nothing was changed\n")
        return 1
    done: List[Action] = []
    for step, finding in findings:
        for action in finding.actions:
            try:
                action.apply(ctx)
            except SetupError as err:
                out.write("FAIL %-9s %s\n" % (step.name, err))
                for earlier in reversed(done):
                    try:
                        earlier.undo(ctx)
                    except Exception as undo_err:  # noqa: BLE001 - report, keep undoing
                        out.write("     could not undo '%s': %s\n" % (earlier.describe(),
                                                                      undo_err))
                out.write("undone: %s\n" % ("; ".join(a.describe() for a in done) or "nothing"))
                return 1
            done.append(action)
            out.write("done %-9s %s\n" % (step.name, action.describe()))
    for step, finding in findings:
        if finding.actions:
            for note in finding.notes:
                out.write("note %-9s %s\n" % (step.name, note))
    out.write("-- check\n")
    return check(steps, ctx, out)
