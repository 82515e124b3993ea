"""The uploader against a real aiohttp ingest server over mutual TLS."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from vdsm_hooks.relay.cli import format_status
from vdsm_hooks.relay.upload import Uploader

from .support import HOST_CN, VMS, envelopes, keys_of, spool_files, until, upload_cfg


async def start_uploader(cfg):
    uploader = Uploader(cfg, HOST_CN)
    task = asyncio.create_task(uploader.run())
    return uploader, task


async def stop_uploader(uploader, task):
    await uploader.close()
    assert task.done()


async def test_delivers_in_order_in_batches_with_the_host_certificate(tmp_path, pki, server):
    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=500)
    uploader, task = await start_uploader(cfg)
    sent = envelopes(1200)
    for env in sent:
        assert uploader.submit(env)
    await until(lambda: len(server.unique) == 1200, what="1200 envelopes at the server")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert server.keys() == keys_of(sent)
    assert server.unique == sent  # nothing lost or changed on the way
    assert all(len(batch) <= 500 for batch in server.requests)
    assert len(server.requests) >= 3
    assert set(server.peers) == {HOST_CN}
    assert stats["sent"] == 1200 and stats["batches"] == len(server.requests)
    assert stats["retries"] == 0 and stats["spooled"] == 0 and stats["spool_bytes"] == 0
    assert stats["last_success_at"] is not None and stats["last_error"] is None


async def test_partial_batch_goes_after_the_interval(tmp_path, pki, server):
    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=500, batch_interval=0.3)
    uploader, task = await start_uploader(cfg)
    trickle = envelopes(3)
    for count, env in enumerate(trickle, 1):
        await asyncio.sleep(0.1)  # the loop is idle, with nothing due, before each report
        started = time.monotonic()
        uploader.submit(env)
        await asyncio.sleep(0.1)
        assert len(server.unique) == count - 1  # still waiting for company
        await until(lambda n=count: server.keys() == keys_of(trickle[:n]),
                    timeout=5, what="the trickle delivered after batch_interval")
        assert 0.25 <= time.monotonic() - started < 2.0
    await stop_uploader(uploader, task)


async def test_engine_down_then_up_spools_and_delivers_in_order_exactly_once(
        tmp_path, pki, server):
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=50, retry_max_backoff=0.3)
    uploader, task = await start_uploader(cfg)
    first = envelopes(300)
    for i in range(0, 300, 25):
        for env in first[i:i + 25]:
            uploader.submit(env)
        await asyncio.sleep(0.01)
    await until(lambda: uploader.stats()["spool_pending"] == 300 and not uploader.stats()["queued"],
                what="everything spooled while the engine is down")
    stats = uploader.stats()
    assert stats["retries"] >= 1 and stats["sent"] == 0
    assert "cannot connect" in stats["last_error"]
    assert spool_files(cfg)

    await server.start()
    later = envelopes(100, start=300)
    for env in later:  # arrives while the spool drains: must queue behind it
        uploader.submit(env)
    await until(lambda: len(server.unique) == 400, what="all 400 delivered")
    await until(lambda: uploader.stats()["spool_bytes"] == 0, what="spool emptied")
    await stop_uploader(uploader, task)
    assert server.keys() == keys_of(first + later)
    delivered = sum(len(batch) for batch in server.requests)
    assert delivered == 400  # no batch was sent twice
    assert spool_files(cfg) == []


async def test_5xx_is_retried_with_retry_after_and_a_lost_reply_is_deduplicated(
        tmp_path, pki, server):
    await server.start()
    replies = [(500, {}), (503, {"Retry-After": "0"})]
    server.respond = lambda batch: replies.pop(0) if replies else None
    server.process_before_fail = True  # the first reply is lost after the engine stored it
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=100)
    uploader, task = await start_uploader(cfg)
    sent = envelopes(100)
    for env in sent:
        uploader.submit(env)
    await until(lambda: uploader.stats()["sent"] == 100, what="delivery after two failures")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert stats["retries"] == 2
    assert len(server.requests) == 3
    assert server.keys() == keys_of(sent)  # each exactly once despite three deliveries


@pytest.mark.parametrize("status", [401, 403, 404, 422])
async def test_a_blocking_4xx_keeps_everything_backs_off_and_says_so(tmp_path, pki, server,
                                                                     caplog, status):
    await server.start()
    server.respond = lambda batch: (status, {})
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=40, retry_max_backoff=0.4)
    uploader, task = await start_uploader(cfg)
    sent = envelopes(120)
    for env in sent:
        uploader.submit(env)
    await asyncio.sleep(1.5)
    stats = uploader.stats()
    assert stats["sent"] == 0 and stats["rejected"] == 0
    assert stats["spool_pending"] + stats["queued"] == 120  # nothing dropped
    assert "HTTP %d" % status in stats["blocked"]
    # backed off: a handful of attempts in 1.5 s, not one per batch as fast as it can
    assert 2 <= len(server.requests) <= 8
    blocked_logs = [r for r in caplog.records
                    if r.levelname == "ERROR" and "upload BLOCKED" in r.getMessage()]
    assert len(blocked_logs) == 1  # loud, once, not at every attempt
    assert format_status({"vms": [], "upload": stats}).endswith(
        "UPLOAD BLOCKED: %s" % stats["blocked"])

    server.respond = None  # the operator fixed the url / certificate / proxy
    await until(lambda: len(server.unique) == 120, what="everything delivered once unblocked")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert server.keys() == keys_of(sent)
    assert stats["blocked"] is None and stats["rejected"] == 0


async def test_refused_envelopes_are_dropped_counted_per_vm_and_logged_once_per_vm(
        tmp_path, pki, server, caplog):
    await server.start()
    sent = envelopes(60)
    bad_vm = VMS[0]
    server.decide = lambda env: ({"outcome": "refused", "reason": "out_of_range",
                                  "message": "seq above 2^53 - 1"}
                                 if env["vm_id"] == bad_vm else None)
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=7)
    uploader, task = await start_uploader(cfg)
    for env in sent:
        uploader.submit(env)
    await until(lambda: uploader.stats()["sent"] + uploader.stats()["rejected"] == 60)
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert server.keys() == [k for k in keys_of(sent) if k[0] != bad_vm]
    assert stats["rejected"] == 30 and stats["stored"] == 30 and stats["retries"] == 0
    assert stats["refused_vms"] == {bad_vm: {"count": 30, "reason": "out_of_range",
                                             "message": "seq above 2^53 - 1"}}
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and bad_vm in said[0] and "out_of_range" in said[0]
    assert stats["spool_pending"] == 0 and stats["queued"] == 0


async def test_a_retry_envelope_is_retried_alone_and_holds_up_nobody(tmp_path, pki, server):
    await server.start()
    sent = envelopes(40)
    slow = keys_of(sent)[3]
    asked = []

    def decide(env):
        key = (env["vm_id"], env["report"]["run_id"], env["report"]["seq"])
        if key == slow and len(asked) < 3:
            asked.append(key)
            return {"outcome": "retry", "reason": "busy"}
        return None
    server.decide = decide
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=40, retry_max_backoff=0.2)
    uploader, task = await start_uploader(cfg)
    for env in sent:
        uploader.submit(env)
    await until(lambda: len(server.unique) == 40, what="all 40, the slow one last")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    # the first answer settled the 39 others at once
    assert keys_of(server.unique[:39]) == [k for k in keys_of(sent) if k != slow]
    assert keys_of(server.unique[39:]) == [slow]
    assert stats["retried_envelopes"] == 3 and stats["rejected"] == 0
    assert stats["stored"] == 40 and stats["duplicates"] == 0


async def test_413_splits_the_batch_and_keeps_every_envelope(tmp_path, pki, server):
    await server.start()
    server.respond = lambda batch: (413, {}) if len(batch) > 10 else None
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=64)
    uploader, task = await start_uploader(cfg)
    sent = envelopes(64)
    for env in sent:
        uploader.submit(env)
    await until(lambda: len(server.unique) == 64, what="all delivered in smaller pieces")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert server.keys() == keys_of(sent) and stats["rejected"] == 0


async def test_an_engine_without_per_envelope_results_counts_all_as_stored(
        tmp_path, pki, server):
    await server.start()
    server.legacy = True
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=10)
    uploader, task = await start_uploader(cfg)
    for env in envelopes(25):
        uploader.submit(env)
    await until(lambda: uploader.stats()["sent"] == 25)
    await stop_uploader(uploader, task)
    assert len(server.unique) == 25


async def test_one_refused_envelope_does_not_sink_its_batch(tmp_path, pki, server):
    await server.start()
    sent = envelopes(64)
    poison = keys_of(sent)[37]
    server.respond = lambda batch: (400, {}) if poison in keys_of(batch) else None
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=64)
    uploader, task = await start_uploader(cfg)
    for env in sent:
        uploader.submit(env)
    await until(lambda: uploader.stats()["sent"] + uploader.stats()["rejected"] == 64)
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert stats["rejected"] == 1 and stats["sent"] == 63
    assert server.keys() == [k for k in keys_of(sent) if k != poison]
    assert len(server.requests) <= 1 + 2 * 6  # bisection, not one request per envelope


async def test_invalid_envelope_is_refused_at_submit(tmp_path, pki, server):
    cfg = upload_cfg(tmp_path, server.url, pki)
    uploader = Uploader(cfg, HOST_CN)
    good = envelopes(1)[0]
    assert not uploader.submit(dict(good, vm_id="../../etc"))
    assert not uploader.submit(dict(good, report={"type": "report"}))
    bare = {k: v for k, v in good.items() if k != "host_id"}
    assert uploader.submit(bare)  # host_id is filled in
    stats = uploader.stats()
    assert stats["invalid"] == 2 and stats["queued"] == 1
    await uploader.close()
    assert uploader.stats()["spool_pending"] == 1


async def test_client_without_a_certificate_is_refused_and_keeps_its_data(
        tmp_path, pki, server):
    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, cert="", key="", batch_size=10)
    uploader, task = await start_uploader(cfg)
    for env in envelopes(10):
        uploader.submit(env)
    await until(lambda: uploader.stats()["retries"] >= 2, what="refused attempts")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert server.requests == []
    assert stats["sent"] == 0 and stats["spool_pending"] == 10
    assert "[upload] cert=(none) must be signed by the engine's CA" in stats["last_error"]


async def test_certificate_from_another_ca_is_refused(tmp_path, pki, server):
    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, cert=pki.other_cert, key=pki.other_key)
    uploader, task = await start_uploader(cfg)
    uploader.submit(envelopes(1)[0])
    await until(lambda: uploader.stats()["retries"] >= 1, what="a refused attempt")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert server.requests == []
    assert "[upload] cert=%s must be signed" % pki.other_cert in stats["last_error"]


async def test_engine_certificate_from_an_unknown_ca_is_not_trusted(tmp_path, pki, server):
    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, ca=pki.other_ca)
    uploader, task = await start_uploader(cfg)
    uploader.submit(envelopes(1)[0])
    await until(lambda: uploader.stats()["retries"] >= 1, what="a failed attempt")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert server.requests == []
    assert "not trusted" in stats["last_error"]


async def test_missing_certificate_file_says_which_setting(tmp_path, pki, server):
    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, cert=str(tmp_path / "absent.pem"))
    uploader, task = await start_uploader(cfg)
    uploader.submit(envelopes(1)[0])
    await until(lambda: uploader.stats()["retries"] >= 1, what="a failed attempt")
    stats = uploader.stats()
    await stop_uploader(uploader, task)
    assert "[upload] cert=%s" % (tmp_path / "absent.pem") in stats["last_error"]


async def test_without_a_usable_spool_memory_is_bounded_and_drops_are_counted(
        tmp_path, pki, server):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cfg = upload_cfg(tmp_path, server.url, pki, spool_dir=str(blocker / "spool"),
                     batch_size=50)
    sent = envelopes(200)
    sizes = [len(json.dumps(e, ensure_ascii=False, separators=(",", ":"))) + 1 for e in sent]
    uploader = Uploader(cfg, HOST_CN, max_batch_bytes=20 * max(sizes),
                        max_memory_bytes=sum(sizes[-60:]))
    assert "spool_dir" in uploader.stats()["last_error"]
    task = asyncio.create_task(uploader.run())
    for env in sent:
        uploader.submit(env)
    stats = uploader.stats()
    assert stats["dropped_oldest"] == 140 and stats["queued"] == 60
    await until(lambda: uploader.stats()["retries"] >= 1, what="a failed attempt")
    await server.start()
    await until(lambda: len(server.unique) == 60, what="the newest 60 delivered")
    await stop_uploader(uploader, task)
    assert server.keys() == keys_of(sent[-60:])
    assert all(len(batch) <= 20 for batch in server.requests)


@pytest.mark.parametrize("ahead", [0.0, 120.0, -300.0])
async def test_received_at_follows_the_engines_clock_when_this_hosts_is_off(
        tmp_path, pki, server, caplog, ahead):
    await server.start()
    server.clock_ahead = ahead
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=1)
    uploader, task = await start_uploader(cfg)
    first, second = envelopes(2)
    uploader.submit(first)  # its answer's Date header tells the engine's time
    await until(lambda: len(server.unique) == 1)
    offset = uploader.stats()["engine_clock_offset_s"]
    assert abs(offset - ahead) <= 3.0
    stamped = time.time()
    uploader.submit_report(second["vm_id"], second["report"], received_at=stamped)
    await until(lambda: len(server.unique) == 2)
    await stop_uploader(uploader, task)
    sent_at = server.unique[1]["received_at"]
    if ahead:
        assert abs(sent_at - (stamped + ahead)) <= 3.0  # never the clock it knows is wrong
        warned = [r for r in caplog.records if "host's clock is" in r.getMessage()]
        assert len(warned) == 1
    else:
        assert sent_at == stamped


async def test_a_report_is_acknowledged_once_the_engine_answered_for_good(
        tmp_path, pki, server):
    """``on_safe`` (the agent's acknowledgement) follows stored, duplicate and refused, never
    an envelope still to be retried."""
    await server.start()
    sent = envelopes(20)
    keys = keys_of(sent)
    refused, slow = keys[4], keys[7]
    retries = []

    def decide(env):
        key = (env["vm_id"], env["report"]["run_id"], env["report"]["seq"])
        if key == refused:
            return {"outcome": "refused", "reason": "invalid", "message": "no"}
        if key == slow and len(retries) < 2:
            retries.append(key)
            return {"outcome": "retry", "reason": "placement_pending"}
        return None
    server.decide = decide
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=20, retry_max_backoff=0.2)
    uploader, task = await start_uploader(cfg)
    safe = []
    for env, key in zip(sent, keys):
        uploader.submit_report(env["vm_id"], env["report"], env["received_at"], None,
                               lambda key=key: safe.append((key, len(retries),
                                                            key in server.seen)))
    await until(lambda: len(safe) == 20, what="every report acknowledged")
    await stop_uploader(uploader, task)
    assert sorted(k for k, _, _ in safe) == sorted(keys)  # each once
    for key, retried, at_engine in safe:
        if key == slow:
            # not on the answer "retry"; once it is spooled to wait for the back-off, or stored
            assert retried >= 1
        else:
            assert at_engine or key == refused  # never before the engine had it


async def test_a_report_spooled_while_the_engine_is_down_is_acknowledged_at_once(
        tmp_path, pki, server):
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=50, retry_max_backoff=5)
    uploader, task = await start_uploader(cfg)
    safe = []
    for env in envelopes(30):
        uploader.submit_report(env["vm_id"], env["report"], env["received_at"], None,
                               lambda: safe.append(uploader.stats()["spool_pending"]))
    await until(lambda: len(safe) == 30, what="acknowledged once fsynced in the spool")
    assert min(safe) == 30 and server.unique == []
    await stop_uploader(uploader, task)


async def test_a_report_encoded_by_the_cache_arrives_as_the_same_envelope(tmp_path, pki, server):
    from diag_protocol.framing import dumps_tree

    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=10)
    uploader, task = await start_uploader(cfg)
    sent = envelopes(20)
    safe = []
    for i, env in enumerate(sent):
        # as the relay's sessions hand it (the cache's encoding), and without it
        assert uploader.submit_report(env["vm_id"], env["report"], env["received_at"], "2.0",
                                      lambda i=i: safe.append(i),
                                      dumps_tree(env["report"]) if i % 2 else None)
    await until(lambda: len(server.unique) == 20 and len(safe) == 20, what="20 envelopes")
    await stop_uploader(uploader, task)
    assert server.unique == [dict(env, agent_version="2.0") for env in sent]


async def test_a_batch_larger_than_one_slice_arrives_whole(tmp_path, pki, server):
    """The body goes out in slices (the loop runs the sessions between them) with an exact
    Content-Length; a batch of several slices arrives byte for byte."""
    from vdsm_hooks.relay import upload

    await server.start()
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=500, batch_interval=0.2)
    uploader, task = await start_uploader(cfg)
    sent = envelopes(500, padding=2000)  # ~1.3 MB: about five slices
    assert sum(len(json.dumps(e)) for e in sent) > 4 * upload.SLICE_BYTES
    for env in sent:
        assert uploader.submit(env)
    await until(lambda: len(server.unique) == 500, what="500 large envelopes at the server")
    await stop_uploader(uploader, task)
    assert server.unique == sent
    assert [len(batch) for batch in server.requests] == [500]


async def test_the_sliced_body_is_the_joined_lines():
    from vdsm_hooks.relay.upload import SLICE_BYTES, _body_length, _body_slices

    for lines in ([], [b'{"a":1}\n'], [b'{"a":1}\n', b'{"b":2}'],
                  [b'{"x":"%s"}\n' % (b"y" * n) for n in (SLICE_BYTES, 10, SLICE_BYTES // 3,
                                                           0, 2 * SLICE_BYTES)]):
        body = b"".join([part async for part in _body_slices(lines)])
        expected = b'{"envelopes":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"
        assert body == expected and _body_length(lines) == len(expected)
        if lines:
            assert json.loads(body)["envelopes"][0] == json.loads(lines[0])
