"""The after_vm_destroy hook reaches the relay's control socket with the packaged users and
modes: the relay runs as its own user with the unit's groups, in a runtime directory of the
unit's mode, with relay.conf's defaults; the hook runs as a vdsm-like user (primary group kvm,
as vdsm on oVirt hosts). Distinct real uids, created for the test; a user outside the group is
refused, which shows the test can fail."""

from __future__ import annotations

import configparser
import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.real import unavailable
from vdsm_hooks.config import OPTIONS

from .helpers import ROOT, run_hook, write_conf

UNIT = ROOT / "packaging" / "systemd" / "vmdiag-relay.service"
VM = "5d3c2b1a-0f9e-4d8c-b7a6-5d3c2b1a0f9e"


#: The relay, started as systemd starts it: User=, its primary group, SupplementaryGroups=.
#: The code is imported first and the identity dropped after, because this test's interpreter
#: may live in a folder other users cannot read (a virtualenv under /root).
AS_RELAY_USER = """
import grp, os, pwd, sys
import asyncio, logging.handlers, ssl, json
import vdsm_hooks.relay.cli as cli, vdsm_hooks.relay.daemon, vdsm_hooks.relay.upload
import vdsm_hooks.config
user, groups, conf = sys.argv[1], sys.argv[2], sys.argv[3]
pw = pwd.getpwnam(user)
os.setgroups([grp.getgrnam(g).gr_gid for g in groups.split(",") if g])
os.setgid(pw.pw_gid)
os.setuid(pw.pw_uid)
assert os.getuid() == pw.pw_uid and os.geteuid() == pw.pw_uid
sys.exit(cli.main(["run", "--foreground", "--config", conf]))
"""


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(UNIT)
    return parser["Service"]


def packaged_control_group() -> str:
    [option] = [o for o in OPTIONS if (o.section, o.key) == ("relay", "control_group")]
    return option.default


@pytest.fixture
def users():
    """(relay user, vdsm-like user, stranger), created for this test and removed after it."""
    if os.geteuid() != 0:
        unavailable("creating users needs root")
    if shutil.which("useradd") is None:
        unavailable("useradd is missing (Debian package passwd)")
    group = packaged_control_group()
    supplementary = unit_service()["SupplementaryGroups"].split()
    assert group in supplementary  # the relay can give its socket to that group
    try:
        grp.getgrnam(group)
    except KeyError:
        unavailable("group %s does not exist here (it comes with the KVM packages)" % group)
    tag = uuid.uuid4().hex[:6]
    names = {"relay": "vmdt-r" + tag, "vdsm": "vmdt-v" + tag, "other": "vmdt-o" + tag}
    existing = [g for g in supplementary if _group_exists(g)]
    made = []
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                        "--groups", ",".join(existing), names["relay"]], check=True)
        made.append(names["relay"])
        subprocess.run(["useradd", "--system", "--no-create-home", "--gid", group,
                        names["vdsm"]], check=True)
        made.append(names["vdsm"])
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                        names["other"]], check=True)
        made.append(names["other"])
        yield names["relay"], names["vdsm"], names["other"], existing
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False)
            if _group_exists(name):
                subprocess.run(["groupdel", name], check=False)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _wait_for(path: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, "the relay exited: %s" % log.read_text()
        assert time.monotonic() < deadline, "no control socket: %s" % log.read_text()
        time.sleep(0.05)


def test_the_hook_as_vdsm_reaches_the_relay_and_a_stranger_does_not(users):
    relay_user, vdsm_user, stranger, relay_groups = users
    base = Path(tempfile.mkdtemp(prefix="vmdt-"))
    os.chmod(base, 0o755)
    proc = None
    try:
        runtime = base / "run"  # RuntimeDirectory=vmdiag: owned by User=, the unit's mode
        runtime.mkdir(mode=int(unit_service()["RuntimeDirectoryMode"], 8))
        os.chmod(runtime, int(unit_service()["RuntimeDirectoryMode"], 8))
        relay_pw = pwd.getpwnam(relay_user)
        os.chown(runtime, relay_pw.pw_uid, relay_pw.pw_gid)
        channels = base / "ch"
        channels.mkdir(mode=0o755)
        sock = runtime / "relay.sock"
        # relay.conf's defaults, except what points into this test's folders
        conf = write_conf(base, "[relay]\nhost_id = test-host\nlibvirt_uri = test:///default\n"
                          "channels_dir = %s\ncontrol_socket = %s\n" % (channels, sock))
        os.chmod(conf, 0o644)
        log = base / "relay.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
               "LANG": "C.UTF-8"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", AS_RELAY_USER, relay_user, ",".join(relay_groups),
                 str(conf)], env=env, cwd="/", stdout=out, stderr=out)
        _wait_for(sock, proc, log)
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_uid == relay_pw.pw_uid
        assert grp.getgrgid(st.st_gid).gr_name == packaged_control_group()

        vdsm_gid = pwd.getpwnam(vdsm_user).pw_gid
        done = run_hook("after_vm_destroy", None, conf, VM, user=vdsm_user, group=vdsm_gid,
                        extra_groups=[])
        assert done.returncode == 0 and done.stderr == b"", done.stderr
        other_gid = pwd.getpwnam(stranger).pw_gid
        other_vm = str(uuid.uuid4())
        refused = run_hook("after_vm_destroy", None, conf, other_vm, user=stranger,
                           group=other_gid, extra_groups=[])
        assert refused.returncode == 0  # a hook never fails, but its notice cannot get in

        # what vmdiag-relay status does, as each of them (the platform Python: this test's
        # interpreter may live where other users cannot reach; status needs only the stdlib)
        status = ["/usr/bin/python3", "-m", "vdsm_hooks.relay.cli", "status", "--socket",
                  str(sock)]
        as_vdsm = subprocess.run(status, env=env, cwd="/", capture_output=True, text=True,
                                 user=vdsm_user, group=vdsm_gid, extra_groups=[], check=False)
        assert as_vdsm.returncode == 0, as_vdsm.stderr
        as_other = subprocess.run(status, env=env, cwd="/", capture_output=True, text=True,
                                  user=stranger, group=other_gid, extra_groups=[], check=False)
        assert as_other.returncode == 1 and "no permission" in as_other.stderr

        deadline = time.monotonic() + 10
        while "after_vm_destroy hook: VM %s" % VM not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert other_vm not in log.read_text()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(base)
