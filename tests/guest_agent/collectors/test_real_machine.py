"""Every collector against the machine running the tests, validated by diag_protocol.

Only loopback traffic: the gateway probe and FQDN lookup are off, probes target local servers.
"""

import os
import time

from diag_protocol import encode, make_report, validate
from guest_agent import platform
from guest_agent.collectors import CollectorOptions, CollectorState, collect_all, prime

from .servers import HttpServer, listener


def test_collectors_on_this_machine_produce_a_valid_report():
    sock, port = listener()
    state = CollectorState()
    with sock, HttpServer() as http:
        options = CollectorOptions(
            watched_processes=[platform.process_name(platform.LOCAL, os.getpid()),
                               "vmdiag-absent"],
            watched_units=["ssh.service"], dns_names=["localhost"],
            tcp_targets=["127.0.0.1:%d" % port], http_targets=[http.url(200)],
            sysctls=["vm.swappiness", "kernel.pid_max"], probe_gateway=False,
            resolve_fqdn=False, top_n=5)
        try:
            prime(options, state)
            time.sleep(0.2)
            sections = collect_all(options, state)
        finally:
            state.close()
    for name, section in sections.items():
        assert not [e for e in section["errors"] if e["field"] == "*"], (name, section)
    res = sections["resources"]["data"]
    assert res["cpu"]["count"] == os.cpu_count()
    assert res["cpu"]["percent"] is not None  # primed: the first report has a rate
    assert res["memory"]["total"] > 0 and len(res["top_cpu"]) <= 5
    assert any(f["mountpoint"] == "/" for f in res["filesystems"]) or \
        "filesystems" in {e["field"] for e in sections["resources"]["errors"]}
    net = sections["network"]["data"]
    assert any(i["name"] == "lo" for i in net["interfaces"])
    assert all(p["ok"] for p in net["probes"]), net["probes"]
    apps = sections["applications"]["data"]
    assert apps["processes"][0]["present"] is True
    assert apps["processes"][1] == {"name": "vmdiag-absent", "present": False, "count": 0}
    settings = sections["settings"]["data"]
    assert settings["kernel"] == os.uname().release
    assert settings["hostname"] == platform.hostname(platform.LOCAL)
    sections["checks"] = {"collected_at": time.time(), "data": {"results": []}}
    report = validate(make_report(platform.boot_id(platform.LOCAL), "smoke", 0, sections))
    assert len(encode(report)) < 1 << 20


def test_interface_addresses_over_netlink_are_those_getifaddrs_gives():
    """The agent reads interface addresses over rtnetlink (sparing its start psutil); on this
    machine they must be exactly what getifaddrs(3) gives through psutil, prefixes included."""
    import socket

    import psutil

    from guest_agent.platform.linux.net import _prefixlen
    from guest_agent.platform.linux.netlink import if_addrs

    def shape(table):
        out = {}
        for name, addrs in table.items():
            got = sorted((int(a.family), a.address.split("%", 1)[0], _prefixlen(a.netmask))
                         for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
            if got:
                out[name] = got
        return out

    ours = shape(if_addrs())
    assert ours == shape(psutil.net_if_addrs())
    assert ("lo" in ours and (int(socket.AF_INET), "127.0.0.1", 8) in ours["lo"])
