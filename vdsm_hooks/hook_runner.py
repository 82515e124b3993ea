"""Glue between VDSM's hook runner and ``domxml``: read, change, write back, never fail a VM.

VDSM runs every executable in ``/usr/libexec/vdsm/hooks/<hook point>/`` with the domain XML in
the file named by ``$_hook_domxml``, each VM custom property as an environment variable and the
VM's UUID in ``$vmId``. Any non-zero exit of a ``before_vm_start`` hook fails the VM start
(vdsm ``lib/vdsm/common/hooks.py``), and a diagnostics channel is never worth that: every path
here ends in exit status 0, leaving the file untouched when anything is unexpected, with one
line on stderr (which VDSM logs) saying what happened and what to do.

When ``vdsm.hook.hooking`` is importable its ``read_domxml``/``write_domxml`` are used;
otherwise ``read_domxml``/``write_domxml`` below behave the same way (minidom, UTF-8, written
back in place), which is what the tests and non-VDSM hosts use.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from typing import Callable, Mapping, Tuple
from xml.dom import minidom
from xml.parsers.expat import ExpatError

from diag_protocol import host_socket_path

from .config import ConfigError, load_config
from .domxml import DomainXMLError, PropertyError, apply, canonical_uuid

#: How long the after_vm_destroy hook may wait for the relay; VDSM runs hooks synchronously.
NOTIFY_TIMEOUT = 1.0
PREFIX = "vmdiag hook"
#: The variable in which VDSM names the file holding the domain XML.
DOMXML_ENV = "_hook_domxml"

Reader = Callable[[], minidom.Document]
Writer = Callable[[minidom.Document], None]


def read_domxml() -> minidom.Document:
    """Parse the file named by ``$_hook_domxml`` as VDSM's ``hooking.read_domxml`` does."""
    with open(os.environ[DOMXML_ENV], "rb") as f:
        return minidom.parseString(f.read().decode("utf-8"))


def write_domxml(dom: minidom.Document) -> None:
    """Write ``dom`` back to ``$_hook_domxml`` in place (the path VDSM reads afterwards).

    The whole document is serialized before the file is opened, so a serialization problem
    can never leave a half-written file behind.
    """
    data = dom.toxml(encoding="utf-8")
    with open(os.environ[DOMXML_ENV], "r+b") as f:
        f.truncate(0)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def vdsm_io() -> Tuple[Reader, Writer]:
    """VDSM's own reader and writer when VDSM is installed, else the compatible ones here."""
    try:
        from vdsm.hook import hooking  # type: ignore[import-not-found,unused-ignore]
        return hooking.read_domxml, hooking.write_domxml
    except Exception:  # noqa: BLE001 - any import problem means "not on a VDSM host"
        return read_domxml, write_domxml


def _log(message: str) -> None:
    sys.stderr.write("%s: %s\n" % (PREFIX, message))
    sys.stderr.flush()


def run_domxml_hook(hook_point: str, env: Mapping[str, str] | None = None,
                    io_pair: Tuple[Reader, Writer] | None = None) -> int:
    """Run one domain-XML hook point; always returns 0 (see the module docstring)."""
    env = os.environ if env is None else env
    vm = env.get("vmId", "?")
    if DOMXML_ENV not in env:
        _log("%s for VM %s: $_hook_domxml is not set, so there is no domain XML to change; "
             "this script is meant to be run by VDSM" % (hook_point, vm))
        return 0
    try:
        cfg = load_config(resolve_host_id=False)
    except ConfigError as err:
        _log("%s for VM %s: %s; the VM runs without the vmdiag channel until the file is fixed"
             % (hook_point, vm, err))
        return 0
    reader, writer = io_pair or vdsm_io()
    try:
        dom = reader()
    except (OSError, UnicodeDecodeError, ExpatError, ValueError) as err:
        _log("%s for VM %s: cannot read the domain XML in %s (%s); left it untouched"
             % (hook_point, vm, env.get(DOMXML_ENV), err))
        return 0
    try:
        changed = apply(hook_point, dom, env, cfg.hook.default, cfg.relay.channels_dir)
    except (DomainXMLError, PropertyError) as err:
        _log("%s for VM %s: %s; left the domain XML untouched" % (hook_point, vm, err))
        return 0
    if not changed:
        return 0
    try:
        writer(dom)
    except Exception as err:  # noqa: BLE001 - whatever happens, the VM must still start
        _log("%s for VM %s: cannot write the domain XML back to %s (%s); the VM may start "
             "without the vmdiag channel" % (hook_point, vm, env.get(DOMXML_ENV), err))
    return 0


def remove_stale_socket(channels_dir: str, vm_id: str) -> bool:
    """Remove the VM's channel socket if it is left over; return whether one was removed.

    Only a socket (or a regular file, from a bad copy) at the exact expected path is removed;
    ``vm_id`` must be a UUID so the path cannot escape ``channels_dir``.
    """
    path = host_socket_path(canonical_uuid(vm_id), channels_dir)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not (stat.S_ISSOCK(mode) or stat.S_ISREG(mode)):
        raise DomainXMLError("%s is neither a socket nor a file; not removing it" % path)
    os.unlink(path)
    return True


def notify_relay(control_socket: str, vm_id: str, timeout: float = NOTIFY_TIMEOUT) -> None:
    """Tell the relay, best effort, that the VM is gone: one JSON line on its control socket."""
    line = json.dumps({"cmd": "vm_destroyed", "vm_id": vm_id}).encode("utf-8") + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(control_socket)
        sock.sendall(line)


def run_after_destroy(env: Mapping[str, str] | None = None) -> int:
    """after_vm_destroy: drop the VM's stale channel socket and notify the relay; always 0."""
    env = os.environ if env is None else env
    vm_id = env.get("vmId", "")
    if not vm_id:
        _log("after_vm_destroy: $vmId is not set; nothing to clean up")
        return 0
    try:
        cfg = load_config(resolve_host_id=False)
        vm_id = canonical_uuid(vm_id)
        remove_stale_socket(cfg.relay.channels_dir, vm_id)
    except (ConfigError, DomainXMLError, OSError) as err:
        _log("after_vm_destroy for VM %s: %s" % (vm_id[:80], err))
        return 0
    try:
        notify_relay(cfg.relay.control_socket, vm_id)
    except OSError:
        pass  # the relay is not running or busy: it notices the VM is gone from libvirt too
    return 0


def main(hook_point: str) -> int:
    """Entry point of the ``50_vmdiag`` scripts; never raises, always returns 0."""
    try:
        if hook_point == "after_vm_destroy":
            return run_after_destroy()
        return run_domxml_hook(hook_point)
    except Exception as err:  # noqa: BLE001 - last resort, see the module docstring
        _log("%s: unexpected %s: %s; the domain XML was left as it was"
             % (hook_point, type(err).__name__, err))
        return 0
