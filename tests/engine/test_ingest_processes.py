"""``[ingest] processes``: a real ``vmdiag-engine serve`` with an ingest process beside its own.

Real components: the service process and the ingest process it starts (TLS ingest with the
test engine CA, the API), on a real SQLite file and a real PostgreSQL server; uploads over
real TLS, each on a new connection, so the kernel (SO_REUSEPORT) hands them to both
processes. Checked: every report lands whichever process took it and is evaluated by the
service's health pass; both processes took some; an ingest process killed outright is replaced
and costs at most the connections it held (the uploaders retry those, as the relay does);
SIGTERM stops both; an ingest process stops when its service is killed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
import urllib.request
from typing import Any, Callable, Dict, List

import pytest

from engine_plugin import config as config_mod
from engine_plugin.service.ingest_processes import FORWARD_S, process_count
from engine_plugin.storage import StorageConfig, open_store
from lab.engine_process import EngineProcess, alive, free_port
from tests.engine.conftest import HOST_1_CN, relay_ssl
from tests.engine.reports import envelope

LIGHT = "[evaluation]\nworkers = 0\n"  # the health pass in the service's own process
SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? ([0-9.e+-]+)$')


def vm_id(n: int) -> str:
    return "00000000-0000-4000-8000-%012d" % n


def post(port: int, ctx: Any, envelopes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One upload on a new TLS connection (so each goes to the process the kernel picks)."""
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=60)
    try:
        conn.request("POST", "/ingest/v1/reports", body=json.dumps({"envelopes": envelopes}),
                     headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200, (reply.status, body[:300])
        answer: Dict[str, Any] = json.loads(body)
        return answer
    finally:
        conn.close()


def counter(engine: EngineProcess, name: str) -> Dict[str, float]:
    """A counter's samples on the service's /vmdiag/metrics, by their labels."""
    with urllib.request.urlopen("http://127.0.0.1:%d/vmdiag/metrics" % engine.api_port,
                                timeout=10) as reply:
        text = reply.read().decode()
    out: Dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == name:
            out[match.group(2) or ""] = float(match.group(3))
    return out


def by_process(engine: EngineProcess) -> Dict[str, float]:
    return {labels.split('"')[1]: value for labels, value in
            counter(engine, "vmdiag_ingest_process_requests_total").items()}


def wait_until(what: str, condition: Callable[[], Any], engine: EngineProcess,
               timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "%s: not within %.0f s\n%s" % (what, timeout,
                                                                           engine.tail())
        time.sleep(0.2)


def test_processes_setting() -> None:
    assert config_mod.load("/nonexistent").ingest.processes == -1  # auto
    assert process_count(-1) == len(os.sched_getaffinity(0))
    assert process_count(3) == 3


def test_processes_setting_errors_name_the_file_and_what_is_allowed(tmp_path) -> None:
    conf = tmp_path / "engine.conf"
    for value in ("0", "many", "-2"):
        conf.write_text("[ingest]\nprocesses = %s\n" % value)
        with pytest.raises(config_mod.ConfigError) as err:
            config_mod.load(str(conf))
        message = str(err.value)
        assert str(conf) in message and "[ingest] processes" in message
        assert "auto or a number of processes, 1 or more" in message


def test_ingest_processes_share_the_address_survive_a_kill_and_stop_with_the_service(
        pki, store_url: str, tmp_path) -> None:
    engine = EngineProcess(str(tmp_path), "multi", pki, store_url, free_port(), False,
                           sections=LIGHT, processes=2)
    store = open_store(StorageConfig(url=store_url))
    ctx = relay_ssl(pki, HOST_1_CN)
    try:
        first = engine.ingest_children()
        assert len(first) == 1, engine.tail()

        # 1. 40 uploads of 5 new VMs each, each on a new connection
        for i in range(40):
            answer = post(engine.ingest_port, ctx,
                          [envelope(vm_id(5 * i + k), HOST_1_CN, 0) for k in range(5)])
            assert answer["stored"] == 5, answer
        counts = wait_until("every request counted", lambda: (
            lambda c: c if sum(c.values()) == 40 else None)(by_process(engine)), engine)
        assert counts.get("0", 0) > 0 and counts.get("1", 0) > 0, counts
        wait_until("every envelope counted", lambda: counter(
            engine, "vmdiag_ingest_envelopes_total").get('result="stored"') == 200, engine)
        assert len(store.vm_ids()) == 200
        # VMs the ingest process stored are evaluated by the service's health pass too
        wait_until("a verdict for every VM", lambda: len(store.verdicts()) == 200, engine)

        # 2. the ingest process is killed while two uploaders send report 1 of every VM
        failures: List[str] = []
        done = [0]
        lock = threading.Lock()

        def uploader(start: int) -> None:
            for i in range(start, 40, 2):
                batch = [envelope(vm_id(5 * i + k), HOST_1_CN, 1) for k in range(5)]
                while True:
                    try:
                        answer = post(engine.ingest_port, ctx, batch)
                    except (OSError, http.client.HTTPException) as err:
                        with lock:
                            failures.append(repr(err))
                        time.sleep(0.2)
                        continue  # sent again, as the relay does with an unanswered batch
                    assert answer["stored"] + answer["duplicates"] == 5, answer
                    break
                with lock:
                    done[0] += 1

        threads = [threading.Thread(target=uploader, args=(s,)) for s in (0, 1)]
        for thread in threads:
            thread.start()
        wait_until("some uploads", lambda: done[0] >= 6, engine)
        os.kill(first[0], signal.SIGKILL)
        for thread in threads:
            thread.join(180)
        assert done[0] == 40
        # each uploader held at most one connection when the process died
        assert len(failures) <= len(threads), failures
        for n in range(200):
            latest = store.latest(vm_id(n))
            assert latest is not None and latest.report["seq"] == 1, n
        second = wait_until("a new ingest process", lambda: [
            pid for pid in engine.ingest_children() if pid != first[0]], engine)
        assert not alive(first[0])
        assert sum(counter(engine, "vmdiag_ingest_process_restarts_total").values()) == 1

        # 3. the new one takes connections
        time.sleep(2 * FORWARD_S)  # what it counted so far has arrived
        before = by_process(engine)
        for i in range(40):
            post(engine.ingest_port, ctx, [envelope(vm_id(5 * i), HOST_1_CN, 2)])
        after = wait_until("every request counted", lambda: (
            lambda c: c if sum(c.values()) - sum(before.values()) == 40 else None
        )(by_process(engine)), engine)
        assert after.get("1", 0) > before.get("1", 0), (before, after)

        # 4. SIGTERM stops the service and its ingest process
        engine.proc.send_signal(signal.SIGTERM)
        assert engine.proc.wait(120) == 0, engine.tail()
        wait_until("the ingest process ended", lambda: not alive(second[0]), engine, 30)
    finally:
        engine.stop()
        store.close()


def test_ingest_process_stops_when_its_service_is_killed(pki, store_url: str,
                                                         tmp_path) -> None:
    engine = EngineProcess(str(tmp_path), "killed", pki, store_url, free_port(), False,
                           sections=LIGHT, processes=2)
    try:
        children = engine.ingest_children()
        assert len(children) == 1
        if store_url.startswith("sqlite"):
            # the SQLite instance lock stays with the service: a second one is still refused
            with pytest.raises(SystemExit, match="already serves the SQLite store"):
                EngineProcess(str(tmp_path), "second", pki, store_url, free_port(), False,
                              sections=LIGHT, processes=2)
        engine.proc.kill()
        engine.proc.wait(30)
        wait_until("the ingest process ended", lambda: not alive(children[0]), engine, 60)
    finally:
        engine.stop()
