"""The stand-in engine honours the contracts ovirtsdk4 and vmdiag rely on.

These run the real ovirtsdk4 (pycurl, real TLS) against it, so a stand-in that drifted from
what the SDK parses fails here rather than in the engine service's tests.
"""

from __future__ import annotations

import time
import uuid

import ovirtsdk4
import pytest
from ovirtsdk4 import types

from lab.ovirt_standin import StandinEngine, TestPKI

VM_A = str(uuid.UUID(int=0xA))
VM_B = str(uuid.UUID(int=0xB))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    pki = TestPKI(str(tmp_path_factory.mktemp("pki")))
    standin = StandinEngine(pki.server(), pki.ca_file)
    standin.add_cluster("c1", "Default")
    standin.add_host("h1", "host1", "c1", address="host1.example.test")
    standin.add_vm(VM_A, "web1", "h1", "c1")
    standin.add_vm(VM_B, "db1", "h1", "c1", status="down")
    standin.add_user("admin@internal", "adminpw", admin=True)
    standin.add_user("alice@internal", "alicepw", vms=[VM_A])
    standin.add_user("vmdiag@internal", "svcpw", can_add_events=True)
    standin.start()
    yield standin
    standin.stop()


def connect(engine: StandinEngine, user: str, password: str, **kw) -> ovirtsdk4.Connection:
    return ovirtsdk4.Connection(url=engine.url, username=user, password=password,
                                ca_file=engine.ca_file, **kw)


def test_sso_password_grant_and_api_root(engine: StandinEngine) -> None:
    conn = connect(engine, "admin@internal", "adminpw")
    api = conn.system_service().get()
    assert api.product_info.name == "oVirt Engine"
    assert api.product_info.version.major == 4
    token = conn.authenticate()
    assert engine.tokens[token] == "admin@internal"
    conn.close()  # revokes the token, as the real SSO logout does
    assert token in engine.revoked and token not in engine.tokens


def test_wrong_password_is_auth_error(engine: StandinEngine) -> None:
    conn = connect(engine, "alice@internal", "wrong")
    with pytest.raises(ovirtsdk4.AuthError, match="incorrect"):
        conn.system_service().get()


def test_filter_limits_user_to_permitted_vms(engine: StandinEngine) -> None:
    conn = connect(engine, "alice@internal", "alicepw", headers={"Filter": "true"})
    vms = conn.system_service().vms_service().list(follow="cluster,host")
    assert [vm.id for vm in vms] == [VM_A]
    assert vms[0].cluster.name == "Default"
    assert vms[0].host.id == "h1" and vms[0].host.name is None  # alice may not see the host
    assert vms[0].status == types.VmStatus.UP
    with pytest.raises(ovirtsdk4.NotFoundError):
        conn.system_service().vms_service().vm_service(VM_B).get()
    conn.close(logout=False)


def test_user_without_filter_is_refused_admin_is_not(engine: StandinEngine) -> None:
    alice = connect(engine, "alice@internal", "alicepw")
    with pytest.raises(ovirtsdk4.AuthError):
        alice.system_service().vms_service().list()
    admin = connect(engine, "admin@internal", "adminpw")
    vms = admin.system_service().vms_service().list(follow="host", search="name=db*")
    assert [(vm.name, vm.host) for vm in vms] == [("db1", None)]  # a down VM has no host
    vm = admin.system_service().vms_service().vm_service(VM_A).get(follow="host")
    assert vm.host.name == "host1" and vm.host.address == "host1.example.test"
    # what the service's VM directory reads for ingest's ownership rule: as the real API, a
    # running VM links its host (<host href="/ovirt-engine/api/hosts/<id>" id="<id>">)
    placed = {vm.id: vm.host for vm in admin.system_service().vms_service().list(
        follow="cluster,host")}
    assert placed[VM_B] is None
    assert placed[VM_A].href == "/ovirt-engine/api/hosts/h1" and placed[VM_A].id == "h1"
    assert placed[VM_A].address == "host1.example.test"


def test_bad_token_is_auth_error(engine: StandinEngine) -> None:
    conn = ovirtsdk4.Connection(url=engine.url, token="not-a-token", ca_file=engine.ca_file,
                                headers={"Filter": "true"})
    with pytest.raises(ovirtsdk4.AuthError):
        conn.system_service().vms_service().vm_service(VM_A).get()


def test_events_contract(engine: StandinEngine) -> None:
    conn = connect(engine, "vmdiag@internal", "svcpw")
    events = conn.system_service().events_service()
    added = events.add(types.Event(origin="vmdiag", custom_id=4242, description="disk full",
                                   severity=types.LogSeverity.WARNING, vm=types.Vm(id=VM_A)))
    assert added.custom_id == 4242 and added.origin == "vmdiag"
    assert engine.events[-1]["vm_id"] == VM_A
    with pytest.raises(ovirtsdk4.Error, match="same custom ID") as dup:
        events.add(types.Event(origin="vmdiag", custom_id=4242, description="again",
                               severity=types.LogSeverity.WARNING))
    assert dup.value.code == 409
    with pytest.raises(ovirtsdk4.Error, match="Illegal origin"):
        events.add(types.Event(origin="oVirt", custom_id=1, description="spoof",
                               severity=types.LogSeverity.NORMAL))
    with pytest.raises(ovirtsdk4.Error, match="custom_id") as missing:
        events.add(types.Event(origin="vmdiag", description="no id",
                               severity=types.LogSeverity.NORMAL))
    assert missing.value.code == 400
    with pytest.raises(ovirtsdk4.Error, match="32-bit"):
        events.add(types.Event(origin="vmdiag", custom_id=2**31, description="big",
                               severity=types.LogSeverity.NORMAL))
    assert len([e for e in engine.events if e["custom_id"] == 4242]) == 1


def test_user_may_not_add_events(engine: StandinEngine) -> None:
    conn = connect(engine, "alice@internal", "alicepw")
    with pytest.raises(ovirtsdk4.AuthError):
        conn.system_service().events_service().add(types.Event(
            origin="vmdiag", custom_id=77, description="x", severity=types.LogSeverity.NORMAL))


def test_outage_refuses_connections_then_recovers(engine: StandinEngine) -> None:
    port = engine.port
    engine.stop()
    conn = connect(engine, "admin@internal", "adminpw", timeout=5)
    with pytest.raises(ovirtsdk4.Error):
        conn.system_service().get()
    engine.start()
    assert engine.port == port
    assert conn.system_service().get().product_info.name == "oVirt Engine"


def test_vms_page_with_max_and_search_page_sorted_by_name(tmp_path) -> None:
    # How oVirt's VM portal pages: GET /vms;max=N?search=SORTBY NAME ASC page P
    pki = TestPKI(str(tmp_path / "pki"))
    standin = StandinEngine(pki.server(), pki.ca_file)
    standin.add_cluster("c1", "Default")
    ids = [str(uuid.UUID(int=0x100 + i)) for i in range(25)]
    for i, vm_id in enumerate(ids):
        standin.add_vm(vm_id, "vm-%02d" % (24 - i), None, "c1", status="down")
    standin.add_user("alice@internal", "alicepw", vms=ids[:12])
    standin.start()
    try:
        conn = connect(standin, "alice@internal", "alicepw", headers={"Filter": "true"})
        service = conn.system_service().vms_service()
        pages = [[vm.name for vm in service.list(max=5, search="sortby name asc page %d" % p)]
                 for p in (1, 2, 3, 4)]
        assert pages == [["vm-13", "vm-14", "vm-15", "vm-16", "vm-17"],
                         ["vm-18", "vm-19", "vm-20", "vm-21", "vm-22"],
                         ["vm-23", "vm-24"], []]
        desc = [vm.name for vm in service.list(max=3, search="name=vm-1* sortby name desc")]
        assert desc == ["vm-19", "vm-18", "vm-17"]
        assert len(service.list()) == 12  # no max: every VM the user may see
        with pytest.raises(ovirtsdk4.Error):
            service.list(search="sortby status")
        conn.close()
    finally:
        standin.stop()


def test_only_an_administrator_may_read_the_system_permissions(engine: StandinEngine) -> None:
    # What oVirt's VM portal asks to tell an administrator (shown every VM) from a user.
    for user, password, allowed in (("admin@internal", "adminpw", True),
                                    ("alice@internal", "alicepw", False)):
        conn = connect(engine, user, password, headers={"Filter": "false"})
        service = conn.system_service().permissions_service()
        if allowed:
            permissions = service.list()
            assert permissions and all(p.vm is None and p.cluster is None
                                       for p in permissions)
            assert all(p.role.id == "00000000-0000-0000-0000-000000000001" for p in permissions)
        else:
            with pytest.raises(ovirtsdk4.Error, match="not authorized"):
                service.list()
        conn.close(logout=False)


def test_real_engine_speed_costs_per_request_and_per_vm_listed(tmp_path) -> None:
    pki = TestPKI(str(tmp_path / "pki"))
    standin = StandinEngine(pki.server(), pki.ca_file, request_cost_s=0.2, vm_cost_s=0.01)
    standin.add_cluster("c1", "Default")
    for i in range(60):
        standin.add_vm(str(uuid.UUID(int=0x200 + i)), "vm-%d" % i, None, "c1", status="down")
    standin.add_user("admin@internal", "adminpw", admin=True)
    standin.start()
    try:
        conn = connect(standin, "admin@internal", "adminpw")
        conn.authenticate()
        service = conn.system_service().vms_service()
        timings = {}
        for label, call in (("root", conn.system_service().get),
                            ("page", lambda: service.list(max=5)),
                            ("all", service.list)):
            started = time.monotonic()
            call()
            timings[label] = time.monotonic() - started
        assert timings["root"] >= 0.2
        assert timings["page"] >= 0.2 + 5 * 0.01
        assert timings["all"] >= 0.2 + 60 * 0.01
        conn.close()
    finally:
        standin.stop()
