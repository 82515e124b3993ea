"""Fleet patterns: hundreds of VMs whose findings change together and apart.

Nothing may be grouped by chance: a shared finding makes a pattern only on >= 5 VMs that are
>= 80 % of their host (or cluster) and began within 10 minutes of each other.
"""

from __future__ import annotations

import asyncio
import random
import time

from diag_protocol.vocabulary import finding
from engine_plugin.service import patterns
from lab.big_fleet import BigFleet
from tests.engine.conftest import api_get

T0 = 1_780_000_000.0
GATEWAY = ("check:net.gateway", "critical", "the gateway 192.0.2.1 does not answer")
DNS = ("check:net.dns", "warning", "names do not resolve")


def fleet(hosts: int = 12, per_host: int = 40):
    rows, every, onsets = [], {}, {}
    for h in range(hosts):
        for i in range(per_host):
            vm_id = "vm-%02d-%02d" % (h, i)
            rows.append({"id": vm_id, "name": vm_id, "host_id": "h%02d" % h,
                         "host_name": "hv-%02d" % h, "cluster_id": "c%d" % (h // 4),
                         "cluster": "cl-%d" % (h // 4)})
            every[vm_id], onsets[vm_id] = [], None
    return rows, every, onsets


def give(every, onsets, vm_id, what, since):
    every[vm_id].append(finding(*what))
    onsets[vm_id] = since


def test_most_vms_of_one_host_failing_together_is_one_host_pattern():
    rows, every, onsets = fleet()
    rng = random.Random(1)
    for i in range(38):  # 38 of 40 on host 3, within 4 minutes
        give(every, onsets, "vm-03-%02d" % i, GATEWAY, T0 + rng.uniform(0, 240))
    for h in (0, 5, 9):  # the same finding, scattered and at other times, elsewhere
        for i in range(3):
            give(every, onsets, "vm-%02d-%02d" % (h, i), GATEWAY, T0 - 3600 * (h + 1))
    found = patterns.find(rows, every, onsets)
    (p,) = found["patterns"]
    assert (p["scope"], p["name"], p["code"], p["vms"], p["of"]) == (
        "host", "hv-03", "check:net.gateway", 38, 40)
    assert p["since"] == min(onsets["vm-03-%02d" % i] for i in range(38))
    assert patterns.sentence(p, "10:02") == (
        "38 of 40 VMs on host hv-03 cannot reach their gateway since 10:02: look at the "
        "host's network.")
    (group,) = found["groups"]
    assert group["vms"] == 47 and group["hosts"][0] == {"id": "h03", "name": "hv-03",
                                                        "vms": 38}


def test_findings_that_began_apart_are_never_a_pattern():
    rows, every, onsets = fleet()
    for i in range(40):  # every VM of host 2 has it, but one every 15 minutes
        give(every, onsets, "vm-02-%02d" % i, GATEWAY, T0 + 900 * i)
    for i in range(31):  # 31 of 40 on host 4 at once: 77.5 %, under the share
        give(every, onsets, "vm-04-%02d" % i, DNS, T0)
    for i in range(4):  # all VMs of a tiny host would be 100 %, but 4 < 5 VMs
        rows.append({"id": "tiny-%d" % i, "name": "t", "host_id": "tiny",
                     "host_name": "tiny", "cluster_id": "c9", "cluster": "cl-9"})
        every["tiny-%d" % i] = [finding(*GATEWAY)]
        onsets["tiny-%d" % i] = T0
    found = patterns.find(rows, every, onsets)
    assert found["patterns"] == []
    assert {g["code"]: g["vms"] for g in found["groups"]} == {"check:net.gateway": 44,
                                                             "check:net.dns": 31}


def test_a_cluster_wide_pattern_replaces_its_hosts_patterns():
    rows, every, onsets = fleet()
    rng = random.Random(2)
    for h in range(4, 8):  # cluster 1 is hosts 4-7: 150 of its 160 VMs, within 9 minutes
        for i in range(40 if h != 7 else 30):
            give(every, onsets, "vm-%02d-%02d" % (h, i), DNS, T0 + rng.uniform(0, 540))
    (p,) = patterns.find(rows, every, onsets)["patterns"]
    assert (p["scope"], p["name"], p["vms"], p["of"]) == ("cluster", "cl-1", 150, 160)
    assert p["advice"] == "look at the DNS server they use"


def test_changing_together_then_apart():
    """The host recovers except for stragglers: the pattern goes away with it."""
    rows, every, onsets = fleet(hosts=3, per_host=100)
    for i in range(95):
        give(every, onsets, "vm-01-%02d" % i, GATEWAY, T0 + i)
    assert len(patterns.find(rows, every, onsets)["patterns"]) == 1
    for i in range(20, 95):  # 75 recover; 20 keep it
        every["vm-01-%02d" % i] = []
    assert patterns.find(rows, every, onsets)["patterns"] == []


async def test_the_service_lists_patterns_of_what_the_user_may_see(pki,
                                                                  tmp_path):
    """Hundreds of VMs in the real service and stand-in engine; a user who sees only a few
    VMs of the failing host gets no pattern (counts never reveal the others)."""
    from lab.ovirt_standin import StandinEngine

    big = BigFleet(240, hosts=6)
    engine = StandinEngine(pki.server("standin-patterns"), pki.ca_file)
    big.add_to_standin(engine)
    host = big.host_ids[2]
    on_host = [v for v in big.vm_ids if big.host_of[v] == host]
    engine.add_user("admin@internal", "pw", admin=True)
    engine.add_user("erin@internal", "pw", vms=on_host[:3])
    engine.add_user("vmdiag@internal", "svcpw", admin=True, can_add_events=True)
    engine.start()
    try:
        from engine_plugin.service.app import EngineService
        from tests.engine.conftest import service_config
        service = EngineService(service_config(pki, engine, "sqlite:///%s/p.db" % tmp_path,
                                               events={"enabled": "no"}))
        await service.start()
        try:
            now = time.time()
            big.fill_store(service.store, now)
            for n, vm_id in enumerate(on_host[:36]):  # 36 of 40, within 6 minutes
                verdict = big.verdict(vm_id, now)
                verdict.update(status="critical", since=now - 900 + 10 * n,
                               findings=[finding(*GATEWAY)])
                service.store.set_verdict(vm_id, verdict, now)
            admin = (await api_get(service, "/api/v1/vms", engine.issue_token(
                "admin@internal"), per_page="10")).json()
            (p,) = admin["patterns"]
            assert (p["name"], p["vms"], p["of"], p["code"]) == ("hv-002", 36, 40,
                                                                  GATEWAY[0])
            assert admin["finding_groups"][0]["code"] == GATEWAY[0]
            page = (await api_get(service, "/ui/fleet/fragment", engine.issue_token(
                "admin@internal"))).body.decode()
            assert "36 of 40 VMs on host hv-002 cannot reach their gateway since" in page
            assert "look at the host&#39;s network." in page
            assert 'href="/vmdiag/ui/fleet?q=check%3Anet.gateway&amp;host=' + host + '"' in page
            host_page = (await api_get(service, "/ui/hosts/%s/fragment" % host,
                                       engine.issue_token("admin@internal"))).body.decode()
            assert "36 of 40 VMs on host hv-002" in host_page
            erin = (await api_get(service, "/api/v1/vms", engine.issue_token(
                "erin@internal"))).json()
            assert erin["patterns"] == [] and erin["total"] == 3
            assert erin["finding_groups"][0]["vms"] == 3
        finally:
            await service.stop()
    finally:
        engine.stop()


GATEWAY_CHECK = [{"id": "net.gateway", "name": "Gateway", "status": "critical",
                  "message": "the gateway 192.0.2.1 does not answer", "value": None,
                  "threshold": None}]


async def test_one_ovirt_event_for_the_host_not_one_per_vm(pki, tmp_path):
    """60 VMs on two hosts report through TLS ingest; 28 of host 0's 30 lose their gateway at
    once: the engine gets one event attached to that host, none for those VMs; the VM that
    fails alone on host 1 gets its own."""
    from engine_plugin.service.app import EngineService
    from lab.ovirt_standin import StandinEngine
    from tests.engine.conftest import relay_ssl, service_config, upload
    from tests.engine.reports import envelope

    big = BigFleet(60, hosts=2)
    engine = StandinEngine(pki.server("standin-events"), pki.ca_file)
    big.add_to_standin(engine)
    engine.add_user("vmdiag@internal", "svcpw", admin=True, can_add_events=True)
    engine.start()
    host0, host1 = big.host_ids
    service = EngineService(service_config(pki, engine, "sqlite:///%s/e.db" % tmp_path,
                                           events={"retry_interval": "3600"}))
    await service.start()
    service.health.after_pass.__self__.min_interval = 0.0  # look after every pass
    try:
        now = time.time()
        failing = [v for v in big.vm_ids if big.host_of[v] == host0][:28]
        alone = next(v for v in big.vm_ids if big.host_of[v] == host1)
        for host in (host0, host1):
            cn = big.host_names[host] + ".example.test"
            batch = [envelope(v, cn, 0, now=now, checks=GATEWAY_CHECK
                              if v in failing or v == alone else None)
                     for v in big.vm_ids if big.host_of[v] == host]
            reply = await upload(service, relay_ssl(pki, cn), {"envelopes": batch})
            assert reply.status == 200, reply.body
        await service.health.drain()
        for _ in range(200):  # the dispatcher, woken by the health pass, empties the outbox
            if not service.outbox.pending():
                break
            await asyncio.sleep(0.05)
        assert service.outbox.pending() == []
        sent = list(engine.events)
        host_events = [e for e in sent if e["host_id"]]
        assert len(host_events) == 1, sent
        (event,) = host_events
        assert event["host_id"] == host0 and event["severity"] == "error"
        assert event["description"].startswith("vmdiag: 28 of 30 VMs on host "
                                               "hv-000.example.test cannot reach their gateway "
                                               "since")
        assert [e["vm_id"] for e in sent if e["vm_id"]] == [alone]
        assert engine.rejected_events == []
        # The VM pages of the failing VMs link to the pattern; the lone failure's does not.
        from tests.engine.conftest import api_get
        token = engine.issue_token("vmdiag@internal")
        page = (await api_get(service, "/ui/vms/%s/fragment" % failing[0], token)).body
        assert b"Shared: most VMs on host hv-000 have <code>check:net.gateway</code>" in page
        assert ('href="/vmdiag/ui/fleet?q=check%3Anet.gateway&amp;host=' + host0
                + '">See the fleet pattern</a>').encode() in page
        doc = (await api_get(service, "/api/v1/vms/%s" % failing[0], token)).json()
        assert doc["patterns"] == [{"scope": "host", "id": host0, "code": "check:net.gateway",
                                    "name": "hv-000"}]
        lone = (await api_get(service, "/ui/vms/%s/fragment" % alone, token)).body
        assert b"See the fleet pattern" not in lone
    finally:
        await service.stop()
        engine.stop()
