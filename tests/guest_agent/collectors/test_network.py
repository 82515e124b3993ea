"""The network section on the el9 tree, and probes against real loopback servers."""

import os
import ssl
import threading
import time

import pytest
import trustme

from guest_agent.collectors import CollectorOptions, CollectorState, collect_section
from guest_agent.collectors.probes import (
    gateway_probe,
    run_probes,
    split_target,
    tcp_reach,
)
from guest_agent.collectors.state import PROBE_WORKERS

from .fakes import ManualClock, copy_tree, machine, write
from .servers import HttpServer, SilentServer, closed_port, listener


@pytest.fixture
def tree(tmp_path):
    return copy_tree("el9", str(tmp_path))


def _options(root, **kw):
    kw.setdefault("probe_gateway", False)  # the el9 gateway is not on loopback
    return CollectorOptions(machine=machine("el9", root), **kw)


def test_network_section_from_the_tree(tree):
    section = collect_section("network", _options(tree), CollectorState())
    assert section["errors"] == []
    data = section["data"]
    eth0 = next(i for i in data["interfaces"] if i["name"] == "eth0")
    assert eth0["addresses"][0] == {"family": "inet", "address": "192.168.122.15",
                                    "prefixlen": 24}
    assert eth0["rx_bps"] is None  # first sample
    assert data["default_gateway"] == {"address": "192.168.122.1", "interface": "eth0"}
    assert data["dns"]["nameservers"] == ["192.168.122.1", "192.168.122.2"]
    assert data["probes"] == []
    assert data["listening"] == [
        {"proto": "tcp", "address": "0.0.0.0", "port": 22, "pid": 812, "process": "sshd"},
        {"proto": "tcp", "address": "127.0.0.1", "port": 5432, "pid": 1234,
         "process": "postgres"},
        {"proto": "tcp6", "address": "::", "port": 22, "pid": 812, "process": "sshd"},
        {"proto": "udp", "address": "127.0.0.1", "port": 323, "pid": 901, "process": "chronyd"},
        {"proto": "udp6", "address": "::1", "port": 323, "pid": 901, "process": "chronyd"}]


def test_interface_rates_in_bits_and_error_ratios(tree):
    clock = ManualClock()
    options, state = _options(tree), CollectorState(clock=clock)
    collect_section("network", options, state)
    clock.advance(10)
    stats = os.path.join("sys/class/net/eth0/statistics")
    for name, value in (("rx_bytes", 123456789 + 1250000), ("tx_bytes", 23456789 + 125000),
                        ("rx_packets", 345678 + 900), ("tx_packets", 234567 + 100),
                        ("rx_errors", 2 + 5), ("rx_dropped", 17 + 10)):
        write(tree, os.path.join(stats, name), "%d\n" % value)
    data = collect_section("network", options, state)["data"]
    eth0 = next(i for i in data["interfaces"] if i["name"] == "eth0")
    assert (eth0["rx_bps"], eth0["tx_bps"]) == (1000000.0, 100000.0)
    assert (eth0["error_rate"], eth0["drop_rate"]) == (0.005, 0.01)
    eth1 = next(i for i in data["interfaces"] if i["name"] == "eth1")
    assert eth1["rx_bps"] == 0.0 and eth1["error_rate"] is None  # no packets: no ratio


def test_listening_sockets_follow_their_slower_cadence(tree):
    clock = ManualClock()
    options = _options(tree, listening_interval_s=60)
    state = CollectorState(clock=clock)
    first = collect_section("network", options, state)["data"]["listening"]
    write(tree, "proc/net/tcp", "header\n")
    clock.advance(30)
    assert collect_section("network", options, state)["data"]["listening"] == first
    clock.advance(31)
    later = collect_section("network", options, state)["data"]["listening"]
    assert [s["proto"] for s in later] == ["tcp6", "udp", "udp6"]


def test_missing_resolv_conf_costs_only_dns(tree):
    os.remove(os.path.join(tree, "etc/resolv.conf"))
    section = collect_section("network", _options(tree), CollectorState())
    assert [e["field"] for e in section["errors"]] == ["dns"]
    assert "routes" in section["data"] and "dns" not in section["data"]


def test_gateway_on_loopback_answers(tree):
    write(tree, "proc/net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\t"
                                  "Mask\tMTU\tWindow\tIRTT\n"
                                  "lo\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    state = CollectorState()
    try:
        data = collect_section("network", _options(tree, probe_gateway=True), state)["data"]
    finally:
        state.close()
    probe = data["probes"][0]
    assert probe["kind"] == "gateway" and probe["target"] == "127.0.0.1"
    assert probe["ok"] is True, probe
    assert probe["method"] in ("icmp", "tcp") and probe["latency_ms"] >= 0


def test_tcp_fallback_counts_a_refusal_as_reachable():
    result = tcp_reach("127.0.0.1", closed_port(), 1.0)
    assert result["method"] == "tcp" and result["latency_ms"] >= 0


def test_gateway_probe_icmp_or_fallback_on_ipv6_loopback():
    result = gateway_probe("::1", 1.0)
    assert result["method"] in ("icmp", "tcp")


def test_probes_against_real_loopback_services():
    sock, port = listener()
    state = CollectorState()
    with sock, HttpServer() as http:
        options = CollectorOptions(
            dns_names=["localhost"],
            tcp_targets=["127.0.0.1:%d" % port, "127.0.0.1:%d" % closed_port(),
                         "[::1]:%d" % closed_port()],
            http_targets=[http.url(200), http.url(404), http.url(503),
                          "http://127.0.0.1:%d/" % closed_port()],
            probe_timeout_s=2.0)
        try:
            probes = run_probes(options, state, None)
        finally:
            state.close()
    by_target = {p["target"]: p for p in probes}
    assert [p["kind"] for p in probes] == ["dns", "tcp", "tcp", "tcp", "http", "http", "http",
                                           "http"]
    assert by_target["localhost"]["ok"] is True
    assert "127.0.0.1" in by_target["localhost"]["addresses"] or \
        "::1" in by_target["localhost"]["addresses"]
    assert by_target["127.0.0.1:%d" % port]["ok"] is True
    refused = probes[2]
    assert refused["ok"] is False and refused["error"].startswith("connection refused")
    assert refused["latency_ms"] is None
    assert probes[3]["ok"] is False  # IPv6 literal parsed, nothing listening
    assert by_target[http.url(200)]["ok"] is True and by_target[http.url(200)]["status"] == 200
    assert by_target[http.url(404)]["ok"] is True  # the server answered
    assert by_target[http.url(503)] | {"latency_ms": None} == {
        "kind": "http", "target": http.url(503), "ok": False, "latency_ms": None,
        "error": "server answered HTTP 503", "status": 503}
    assert "request failed" in probes[7]["error"]


def test_a_hung_service_costs_at_most_the_probe_timeout():
    state = CollectorState()
    with SilentServer() as silent:
        options = CollectorOptions(http_targets=["http://127.0.0.1:%d/" % silent.port],
                                   probe_timeout_s=0.5)
        start = time.monotonic()
        try:
            probes = run_probes(options, state, None)
        finally:
            state.close()
        elapsed = time.monotonic() - start
    assert probes[0]["ok"] is False and "0.5s" in probes[0]["error"]
    assert elapsed < 0.5 + 0.25 + 0.3


def test_probes_never_wait_for_stuck_workers():
    """Every worker stuck (a hung resolver): the report still comes back on time."""
    state = CollectorState()
    release = threading.Event()
    for _ in range(PROBE_WORKERS):
        state.executor.submit(release.wait, 30)
    sock, port = listener()
    try:
        start = time.monotonic()
        probes = run_probes(CollectorOptions(tcp_targets=["127.0.0.1:%d" % port],
                                             probe_timeout_s=0.3), state, None)
        elapsed = time.monotonic() - start
    finally:
        release.set()
        state.close()
        sock.close()
    assert probes == [{"kind": "tcp", "target": "127.0.0.1:%d" % port, "ok": False,
                       "latency_ms": None, "error": "no answer within 0.3s"}]
    assert elapsed < 0.3 + 0.25 + 0.3


@pytest.mark.parametrize("target,expected", [
    ("db:5432", ("db", 5432)), ("[fd00::1]:443", ("fd00::1", 443)),
    ("10.0.0.1:1", ("10.0.0.1", 1))])
def test_split_target(target, expected):
    assert split_target(target) == expected


@pytest.mark.parametrize("target", ["db", "db:", ":80", "db:99999", "db:x"])
def test_split_target_rejects(target):
    with pytest.raises(ValueError):
        split_target(target)


def test_https_probe_reports_an_untrusted_certificate():
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    state = CollectorState()
    with HttpServer(tls) as https:
        try:
            probes = run_probes(CollectorOptions(http_targets=[https.url(200)]), state, None)
        finally:
            state.close()
    assert probes[0]["ok"] is False
    assert "CERTIFICATE_VERIFY_FAILED" in probes[0]["error"]
