"""Run vmdiag's VDSM hook scripts on a domain XML exactly as VDSM does.

VDSM writes the domain XML to a temporary file, puts its path in ``_hook_domxml``, the VM's
UUID in ``vmId`` and each VM custom property as an environment variable of its own name, runs
every executable in the hook folder, and reads the (possibly changed) XML back from the file.
Any non-zero exit of a ``before_vm_start`` hook fails the VM start; here it raises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOKS_DIR = os.path.join(SOURCE_ROOT, "vdsm_hooks", "hooks")
HOOK_NAME = "50_vmdiag"
HOOK_TIMEOUT_S = 60


class HookFailed(RuntimeError):
    """The hook exited non-zero: VDSM would refuse to start the VM. The message has its stderr."""


def hook_path(hook_point: str, hooks_dir: str = HOOKS_DIR) -> str:
    """Path of vmdiag's script for ``hook_point`` (it may not exist yet)."""
    return os.path.join(hooks_dir, hook_point, HOOK_NAME)


def run_hook(script: str, domxml: str, vm_id: str, properties: dict[str, str] | None = None,
             extra_env: dict[str, str] | None = None) -> str:
    """Run ``script`` on ``domxml`` for VM ``vm_id``; return the XML the hook left in the file.

    ``properties`` are the VM's custom properties (e.g. ``{"vmdiag": "on"}``). The script is
    executed directly (its own shebang picks the interpreter, as under VDSM); the project's
    source tree is put on PYTHONPATH since it is not installed here.
    """
    env = dict(os.environ)
    env.update(properties or {})
    env.update(extra_env or {})
    env["vmId"] = vm_id
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE_ROOT, env.get("PYTHONPATH")) if p)
    with tempfile.NamedTemporaryFile("w", prefix="hook-domxml-", suffix=".xml",
                                     delete=False) as handle:
        handle.write(domxml)
        env["_hook_domxml"] = handle.name
    try:
        cmd = [script] if os.access(script, os.X_OK) else [sys.executable, script]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                timeout=HOOK_TIMEOUT_S)
        if result.returncode != 0:
            raise HookFailed("%s exited %d (VDSM would not start the VM): %s"
                             % (script, result.returncode, result.stderr.strip()[-2000:]))
        with open(env["_hook_domxml"], encoding="utf-8") as changed:
            return changed.read()
    finally:
        os.unlink(env["_hook_domxml"])
