"""``vmdiag-engine`` as a real process: migrate, retention, config, serve and stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "engine_plugin.service.cli", *args],
                          capture_output=True, text=True, env=env, timeout=60, **kw)


def write_config(tmp_path, pki, api_port: int = 0, ingest_port: int = 0) -> str:
    server = pki.server("cli")
    path = tmp_path / "engine.conf"
    path.write_text(
        "[api]\nport = %d\n[ingest]\nlisten = 127.0.0.1\nport = %d\ncert = %s\nkey = %s\n"
        "ca = %s\n[storage]\nurl = sqlite:///%s/cli.db\n[events]\nenabled = no\n"
        "[ovirt]\npassword = secret\n"
        % (api_port, ingest_port, server.cert, server.key, pki.ca_file, tmp_path))
    return str(path)


def test_migrate_retention_and_config(tmp_path, pki) -> None:
    conf = write_config(tmp_path, pki)
    migrated = cli("--config", conf, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "schema is at version" in migrated.stdout
    retention = cli("--config", conf, "retention")
    assert retention.returncode == 0 and "raw_rolled" in json.loads(retention.stdout)
    shown = json.loads(cli("--config", conf, "config").stdout)
    assert shown["ovirt"]["password"] == "********"  # never printed
    assert shown["storage"]["url"].endswith("/cli.db")


def test_configuration_errors_exit_2_with_the_file_and_key(tmp_path, pki) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[ingest]\nport = many\n")
    result = cli("--config", str(bad), "serve")
    assert result.returncode == 2
    assert "bad.conf: [ingest] port = 'many' is not valid" in result.stderr
    missing_cert = tmp_path / "nocert.conf"
    missing_cert.write_text("[ingest]\ncert = /nonexistent.pem\n[events]\nenabled = no\n")
    result = cli("--config", str(missing_cert), "serve")
    assert result.returncode == 2 and "[ingest] cert = /nonexistent.pem" in result.stderr


def test_serve_answers_and_stops_cleanly_on_sigterm(tmp_path, pki) -> None:
    api_port = free_port()
    conf = write_config(tmp_path, pki, api_port, free_port())
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "engine_plugin.service.cli", "--config",
                             conf, "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/vmdiag/healthz" % api_port,
                                            timeout=2) as reply:
                    health = json.loads(reply.read())
                    assert (health["status"], health["store"]) == ("ok", "ok")
                    # a lone instance leads from its first answer (decided before serving)
                    host, pid, _random = health["leader"].rsplit(":", 2)
                    assert (host, int(pid)) == (socket.gethostname(), proc.pid)
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
