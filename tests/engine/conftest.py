"""Fixtures of the engine tests: test PKI, the stand-in oVirt engine, the real service.

Everything is real except oVirt itself: TLS with a test engine CA, the SQLite (or
PostgreSQL) store, aiohttp listeners on loopback, ovirtsdk4 talking HTTPS to the stand-in.
"""

from __future__ import annotations

import json
import ssl
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Iterator

import aiohttp
import pytest

from engine_plugin import config as config_mod
from engine_plugin.service.app import EngineService
from lab.ovirt_standin import StandinEngine, TestPKI

CLUSTER = "00000000-0000-4000-8000-0000000000c1"
HOST_1 = "00000000-0000-4000-8000-0000000000a1"
HOST_2 = "00000000-0000-4000-8000-0000000000a2"
VM_ALICE = str(uuid.UUID("11111111-1111-4111-8111-111111111111"))
VM_BOB = str(uuid.UUID("22222222-2222-4222-8222-222222222222"))
VM_SHARED = str(uuid.UUID("33333333-3333-4333-8333-333333333333"))
HOST_1_CN = "host1.example.test"
HOST_2_CN = "host2.example.test"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(str(tmp_path_factory.mktemp("engine-pki")))


@pytest.fixture
def standin(pki: TestPKI) -> Iterator[StandinEngine]:
    """A fresh stand-in engine: two hosts, three VMs, alice, bob, admin, the service user."""
    engine = StandinEngine(pki.server("standin"), pki.ca_file)
    engine.add_cluster(CLUSTER, "Production")
    engine.add_host(HOST_1, "host1", CLUSTER, address=HOST_1_CN)
    engine.add_host(HOST_2, "host2", CLUSTER, address=HOST_2_CN)
    engine.add_vm(VM_ALICE, "alice-web", HOST_1, CLUSTER)
    engine.add_vm(VM_BOB, "bob-db", HOST_2, CLUSTER)
    engine.add_vm(VM_SHARED, "shared-app", HOST_1, CLUSTER)
    engine.add_user("admin@internal", "adminpw", admin=True)
    engine.add_user("alice@internal", "alicepw", vms=[VM_ALICE, VM_SHARED], hosts=[HOST_1])
    engine.add_user("bob@internal", "bobpw", vms=[VM_BOB, VM_SHARED])
    # the service account: adds events and lists VMs (a read-only administrator role)
    engine.add_user("vmdiag@internal", "svcpw", admin=True, can_add_events=True)
    engine.start()
    yield engine
    engine.stop()


def service_config(pki: TestPKI, standin: StandinEngine, store_url: str,
                   **sections: Dict[str, str]) -> config_mod.Config:
    server = pki.server("ingest")
    overrides: Dict[str, Dict[str, str]] = {
        "api": {"listen": "127.0.0.1", "port": "0"},
        # one ingest process: these tests read the service's own counters and state right
        # after an upload (tests/engine/test_ingest_processes.py runs several)
        "ingest": {"listen": "127.0.0.1", "port": "0", "cert": server.cert, "key": server.key,
                   "ca": pki.ca_file, "processes": "1"},
        "storage": {"url": store_url},
        "ovirt": {"url": standin.url, "ca_file": pki.ca_file, "user": "vmdiag@internal",
                  "password": "svcpw", "visibility_cache_ttl": "30", "timeout": "5"},
        "events": {"retry_interval": "3600"},
        "health": {"warning_min_duration_s": "0"},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return config_mod.load("/nonexistent/engine.conf", overrides=overrides)


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql",
                                     marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Every service test runs on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return "sqlite:///%s/vmdiag.db" % tmp_path
    return request.getfixturevalue("pg_cluster").create_database()


@pytest.fixture
async def make_service(pki: TestPKI, standin: StandinEngine, store_url: str
                       ) -> AsyncIterator[Callable[..., Any]]:
    """``await make_service(**overrides)`` starts a real service; all are stopped at the end."""
    started = []

    async def make(**sections: Dict[str, str]) -> EngineService:
        service = EngineService(service_config(pki, standin, store_url, **sections))
        await service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        await service.stop()


def relay_ssl(pki: TestPKI, cn: str = HOST_1_CN, foreign: bool = False,
              with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    if with_cert:
        files = pki.host(cn, foreign=foreign)
        ctx.load_cert_chain(files.cert, files.key)
    return ctx


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


async def _request(method: str, url: str, **kw: Any) -> Reply:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kw) as resp:
        return Reply(resp.status, await resp.read(), dict(resp.headers))


async def upload(service: EngineService, ctx: ssl.SSLContext, body: Any) -> Reply:
    url = "https://localhost:%d/ingest/v1/reports" % service.ingest_port
    return await _request("POST", url, json=body, ssl=ctx)


async def api_get(service: EngineService, path: str, token: str | None = None,
                  **params: Any) -> Reply:
    headers = {"Authorization": "Bearer %s" % token} if token else {}
    url = "http://127.0.0.1:%d/vmdiag%s" % (service.api_port, path)
    return await _request("GET", url, headers=headers, params=params)
