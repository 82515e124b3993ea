"""The relay's /metrics: a real daemon with fake guests, checked by promtool and scraped by a
real Prometheus server (the Debian ``prometheus`` package, from scripts/setup-deps).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.fake_guest import hello, sample_report
from tests.real import unavailable
from tests.relay.test_check import start_vm
from tests.relay.test_daemon import ROOT, conn, daemon  # noqa: F401 - fixtures
from tests.relay.test_session import until
from vdsm_hooks.config import ConfigError, load_config
from vdsm_hooks.relay import metrics as relay_metrics
from vdsm_hooks.relay.metrics import MetricsServer

pytestmark = pytest.mark.libvirt


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable("%s is not installed: scripts/setup-deps installs the Debian package "
                    "prometheus" % name)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(server: MetricsServer) -> str:
    url = "http://127.0.0.1:%d/metrics" % server.port
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return await resp.text()


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
async def metrics(daemon):  # noqa: F811
    server = MetricsServer(daemon.cache, "127.0.0.1:0", max_vms=5,
                           status=lambda: daemon.discovery.connected)
    await server.start()
    yield server
    await server.close()


async def test_metrics_follow_the_cache_and_pass_promtool(daemon, conn, metrics, tmp_path):  # noqa: F811
    web = await start_vm(conn, daemon, tmp_path, "vmdiag-t-web")
    bad = await start_vm(conn, daemon, tmp_path, "vmdiag-t-bad")
    try:
        await web.send(hello("3.0"), sample_report(seq=1, worst="critical"))
        report = sample_report(seq=1, worst="ok")
        fs = report["sections"]["resources"]["data"]["filesystems"]
        fs[0]["mountpoint"] = '/x"y\\z\nw'
        for i in range(40):  # more filesystems than the per-VM cap
            fs.append(dict(fs[1], mountpoint="/many/%d" % i))
        await bad.send(hello('9"9\n'), report)
        await until(lambda: all(daemon.sessions[g.vm_id].entry.summary is not None
                                for g in (web, bad)), what="reports")
        text = await scrape(metrics)
        got = samples(text)
        w, b = web.vm_id, bad.vm_id
        assert got[("vmdiag_vm_health", (("status", "critical"), ("vm_id", w)))] == 1
        assert got[("vmdiag_vm_health", (("status", "ok"), ("vm_id", w)))] == 0
        assert got[("vmdiag_vm_health", (("status", "ok"), ("vm_id", b)))] == 1
        assert got[("vmdiag_vm_check_status", (("check", "mem.available"), ("status", "critical"),
                                               ("vm_id", w)))] == 1
        assert got[("vmdiag_vm_filesystem_size_bytes", (("mountpoint", "/mnt/1"),
                                                        ("vm_id", w)))] == 50 << 30
        assert got[("vmdiag_vm_memory_total_bytes", (("vm_id", w),))] == 8 << 30
        assert 0 <= got[("vmdiag_vm_cpu_usage_ratio", (("vm_id", w),))] <= 1
        assert 0 <= got[("vmdiag_vm_last_report_age_seconds", (("vm_id", w),))] < 60
        assert got[("vmdiag_vm_reports_total", (("vm_id", w),))] == 1
        # hostile label values arrive escaped and round-trip through the parser
        assert ("vmdiag_vm_filesystem_size_bytes",
                (("mountpoint", '/x"y\\z\nw'), ("vm_id", b))) in got
        assert got[("vmdiag_vm_info", (("agent_version", '9"9\n'), ("name", "vmdiag-t-bad"),
                                       ("vm_id", b)))] == 1
        mounts = {k[1][0][1] for k in got
                  if k[0] == "vmdiag_vm_filesystem_size_bytes" and ("vm_id", b) in k[1]}
        assert len(mounts) == relay_metrics.MAX_FILESYSTEMS
        assert got[("vmdiag_relay_metrics_omitted", (("what", "per_vm_items"),))] == 46 - 16
        assert got[("vmdiag_relay_vms", ())] == 2

        check = subprocess.run([tool("promtool"), "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    finally:
        await web.close()
        await bad.close()


async def test_a_real_prometheus_scrapes_the_relay(daemon, conn, metrics, tmp_path):  # noqa: F811
    prometheus = tool("prometheus")
    guest = await start_vm(conn, daemon, tmp_path, "vmdiag-t-prom")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "vmdiag-relay", "static_configs": [
            {"targets": ["127.0.0.1:%d" % metrics.port]}]}]}))
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [prometheus, "--config.file", str(config), "--storage.tsdb.path",
             str(tmp_path / "db"), "--web.listen-address", "127.0.0.1:%d" % port,
             "--log.level", "warn"],
            stdout=subprocess.DEVNULL, stderr=log, cwd=str(tmp_path))
    try:
        await guest.send(hello("3.0"), sample_report(seq=1, worst="warning"))
        query = 'vmdiag_vm_health{status="warning",vm_id="%s"} == 1' % guest.vm_id
        found = None
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline and not found:
                await asyncio.sleep(0.5)
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    async with http.get("http://127.0.0.1:%d/api/v1/query" % port,
                                        params={"query": query}) as resp:
                        body = await resp.json()
                except aiohttp.ClientError:
                    continue
                found = body.get("data", {}).get("result")
            assert found, "Prometheus never saw the series: %s" % query
            async with http.get("http://127.0.0.1:%d/api/v1/targets" % port) as resp:
                target = (await resp.json())["data"]["activeTargets"][0]
        assert target["health"] == "up", target
        assert found[0]["metric"]["vm_id"] == guest.vm_id and found[0]["value"][1] == "1"
        assert metrics.scrapes >= 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        await guest.close()


def test_metrics_config_is_checked_and_off_by_default(tmp_path):
    conf = tmp_path / "relay.conf"
    conf.write_text("[relay]\nhost_id = h\n")
    assert load_config(str(conf)).metrics.listen == ""
    conf.write_text("[relay]\nhost_id = h\n[metrics]\nlisten = [::1]:9791\n")
    assert load_config(str(conf)).metrics.listen == "[::1]:9791"
    conf.write_text("[relay]\nhost_id = h\n[metrics]\nlisten = 9791\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(conf))
    assert str(conf) in str(err.value) and "[metrics] listen" in str(err.value)
    assert "127.0.0.1:9791" in str(err.value)


async def test_vmdiag_relay_run_serves_metrics_from_its_config(tmp_path):
    sock = tmp_path / "r.sock"
    port = free_port()
    conf = tmp_path / "relay.conf"
    conf.write_text("[relay]\nhost_id = host-cli\nlibvirt_uri = test:///default\n"
                    "control_socket = %s\n[metrics]\nlisten = 127.0.0.1:%d\n" % (sock, port))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vdsm_hooks.relay.cli", "run", "--config", str(conf),
        "--foreground", cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    try:
        await until(lambda: sock.exists(), timeout=20, what="control socket")
        key = ("vmdiag_relay_libvirt_connected", ())
        got: dict = {}
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while got.get(key) != 1 and time.monotonic() < deadline:
                async with http.get("http://127.0.0.1:%d/metrics" % port) as resp:
                    got = samples(await resp.text())
                await asyncio.sleep(0.1)
        # the relay connects to libvirt after its control socket is up
        assert got[key] == 1 and got[("vmdiag_relay_vms", ())] == 0
        # a second relay cannot take the port: it says which key to change
        busy = tmp_path / "busy.conf"
        busy.write_text(conf.read_text().replace(str(sock), str(tmp_path / "other.sock")))
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vdsm_hooks.relay.cli", "run", "--config", str(busy),
            "--foreground", cwd=ROOT, stderr=asyncio.subprocess.PIPE)
        _, err2 = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 1 and "[metrics] listen" in err2.decode(), err2.decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
