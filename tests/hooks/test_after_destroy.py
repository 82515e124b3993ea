"""after_vm_destroy: the stale channel socket goes, the relay hears about it, exit is always 0."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from .helpers import run_hook, write_conf

VM = "8c7b6a59-4837-4261-9f0e-8c7b6a594837"


@pytest.fixture
def short_tmp():
    """Unix socket paths must fit in 108 bytes; pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="vmdiag-"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def dirs(short_tmp):
    tmp_path = short_tmp
    channels = tmp_path / "ch"
    channels.mkdir()
    conf = write_conf(tmp_path, "[relay]\nchannels_dir = %s\ncontrol_socket = %s\n"
                      % (channels, tmp_path / "relay.sock"))
    return channels, tmp_path / "relay.sock", conf


def stale_socket(path):
    """What QEMU leaves behind: a bound unix socket file nobody listens on any more."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    assert path.is_socket()


class ControlServer:
    """A real unix stream listener standing in for the relay's control socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.lines = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.lines = data.splitlines()

    def close(self):
        self.thread.join(10)
        self.sock.close()


def test_removes_the_stale_socket_and_notifies_the_relay(dirs):
    channels, control, conf = dirs
    stale = channels / ("%s.org.vmdiag.agent.0" % VM)
    other = channels / ("%s.org.qemu.guest_agent.0" % VM)
    stale_socket(stale)
    stale_socket(other)
    server = ControlServer(control)
    result = run_hook("after_vm_destroy", None, conf, VM.upper())
    server.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert not stale.exists()
    assert other.exists()  # only ours
    assert [json.loads(line) for line in server.lines] == [{"cmd": "vm_destroyed", "vm_id": VM}]


def test_relay_not_running_is_fine(dirs):
    channels, _, conf = dirs
    stale = channels / ("%s.org.vmdiag.agent.0" % VM)
    stale_socket(stale)
    result = run_hook("after_vm_destroy", None, conf, VM)
    assert result.returncode == 0
    assert result.stderr == b""
    assert not stale.exists()


def test_no_socket_left_is_fine(dirs):
    _, _, conf = dirs
    result = run_hook("after_vm_destroy", None, conf, VM)
    assert (result.returncode, result.stderr) == (0, b"")


@pytest.mark.parametrize("vm_id", ["../../etc", "", "x" * 300])
def test_bad_vm_id_removes_nothing(dirs, vm_id):
    channels, _, conf = dirs
    stale = channels / ("%s.org.vmdiag.agent.0" % VM)
    stale_socket(stale)
    result = run_hook("after_vm_destroy", None, conf, vm_id)
    assert result.returncode == 0
    assert stale.exists()
    assert "after_vm_destroy" in result.stderr.decode()


def test_a_directory_in_the_way_is_left_alone(dirs):
    channels, _, conf = dirs
    odd = channels / ("%s.org.vmdiag.agent.0" % VM)
    odd.mkdir()
    result = run_hook("after_vm_destroy", None, conf, VM)
    assert result.returncode == 0
    assert odd.is_dir()
    assert "neither a socket nor a file" in result.stderr.decode()
