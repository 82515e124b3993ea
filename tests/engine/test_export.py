"""The fleet list as CSV: the view's filters and order, the user's own VMs, no formulas."""

from __future__ import annotations

import csv
import io
import time
import uuid

from engine_plugin.service.export import COLUMNS
from tests.engine.conftest import (
    CLUSTER,
    HOST_1,
    HOST_1_CN,
    VM_ALICE,
    VM_BOB,
    VM_SHARED,
    api_get,
    relay_ssl,
    upload,
)
from tests.engine.reports import envelope

VM_FORMULA = str(uuid.UUID("44444444-4444-4444-8444-444444444444"))
HOSTILE_CHECK = [{"id": "app.probe", "name": "probe", "status": "critical",
                  "message": '-2+3,"quoted"\n=cmd|\' /C calc\'!A0', "value": None,
                  "threshold": None}]


def parse(body: bytes):
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


async def test_csv_export_keeps_filters_order_and_neutralises_formulas(make_service, pki,
                                                                     standin):
    standin.add_vm(VM_FORMULA, '=HYPERLINK("http://evil.example","x")', HOST_1, CLUSTER)
    service = await make_service()
    now = time.time()
    batch = [envelope(VM_ALICE, HOST_1_CN, 0, now=now),
             envelope(VM_SHARED, HOST_1_CN, 0, now=now, checks=HOSTILE_CHECK),
             envelope(VM_FORMULA, HOST_1_CN, 0, now=now, checks=HOSTILE_CHECK)]
    assert (await upload(service, relay_ssl(pki), {"envelopes": batch})).status == 200
    await service.health.drain()

    admin = standin.issue_token("admin@internal")
    reply = await api_get(service, "/api/v1/vms.csv", admin, sort="name", dir="desc",
                          per_page="1", page="2")  # paging is ignored: every matching VM
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("text/csv")
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="vmdiag-fleet-')
    header, rows = parse(reply.body)
    assert tuple(header) == COLUMNS
    names = [r[1] for r in rows]
    assert names == ["shared-app", "bob-db", "alice-web",
                     "'=HYPERLINK(\"http://evil.example\",\"x\")"]
    shared = rows[0]
    assert shared[2] == "critical" and shared[4] == "check:app.probe"
    assert shared[5] == "'" + HOSTILE_CHECK[0]["message"]  # kept whole, made inert
    assert not any(c.startswith(("=", "+", "-", "@")) for r in rows for c in r)

    # The view's filters apply; another user's VMs are neither listed nor hinted at.
    critical = parse((await api_get(service, "/api/v1/vms.csv", admin,
                                    health="critical", q="probe")).body)[1]
    assert sorted(r[0] for r in critical) == sorted([VM_SHARED, VM_FORMULA])
    alice = parse((await api_get(service, "/api/v1/vms.csv",
                                 standin.issue_token("alice@internal"))).body)[1]
    assert sorted(r[0] for r in alice) == sorted([VM_ALICE, VM_SHARED])
    assert all(VM_BOB not in ",".join(r) for r in alice)
    assert (await api_get(service, "/api/v1/vms.csv", "forged")).status == 401
    assert (await api_get(service, "/api/v1/vms.csv", admin, sort="evil")).status == 400
