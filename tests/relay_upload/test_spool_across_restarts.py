"""The spool through the uploader: bound, restart, corrupt tails, with a real TLS server."""

from __future__ import annotations

import asyncio
import json

from vdsm_hooks.relay.upload import Uploader

from .support import HOST_CN, envelopes, keys_of, spool_files, until, upload_cfg


async def fill_spool_while_down(cfg, sent, chunk):
    """Submit while nothing listens, then close: everything lands in the spool."""
    uploader = Uploader(cfg, HOST_CN)
    task = asyncio.create_task(uploader.run())
    for i in range(0, len(sent), chunk):
        for env in sent[i:i + chunk]:
            uploader.submit(env)
        await until(lambda: not uploader.stats()["queued"], what="chunk spooled")
    await uploader.close()
    assert task.done()
    return uploader.stats()


async def drain(cfg, expected_count, server):
    uploader = Uploader(cfg, HOST_CN)
    task = asyncio.create_task(uploader.run())
    await until(lambda: len(server.unique) >= expected_count and
                uploader.stats()["spool_pending"] == 0, what="spool delivered")
    stats = uploader.stats()
    await uploader.close()
    assert task.done()
    return stats


async def test_restart_rereads_the_spool_and_delivers_in_order(tmp_path, pki, server):
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=30)
    sent = envelopes(150)
    before = await fill_spool_while_down(cfg, sent, 30)
    assert before["spool_pending"] == 150 and before["sent"] == 0
    assert spool_files(cfg)

    await server.start()
    after = await drain(cfg, 150, server)
    assert server.keys() == keys_of(sent)
    assert sum(len(b) for b in server.requests) == 150
    assert after["sent"] == 150 and after["spool_bytes"] == 0
    assert spool_files(cfg) == []


async def test_spool_bound_drops_the_oldest_and_counts_them(tmp_path, pki, server):
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=20, spool_max_bytes=64 * 1024)
    sent = envelopes(400, padding=300)  # about 600 bytes each: ~240 KB in all
    line = len(json.dumps(sent[0], separators=(",", ":")))
    stats = await fill_spool_while_down(cfg, sent, 20)
    assert stats["dropped_oldest"] > 0
    assert stats["spool_bytes"] <= 64 * 1024
    assert stats["spool_pending"] + stats["dropped_oldest"] == 400
    assert stats["spool_pending"] * line > 40 * 1024  # the bound is used, not wasted

    await server.start()
    await drain(cfg, stats["spool_pending"], server)
    kept = stats["spool_pending"]
    assert server.keys() == keys_of(sent[-kept:])  # the newest survive, in order


async def test_corrupt_and_partial_lines_are_skipped_and_counted(tmp_path, pki, server):
    cfg = upload_cfg(tmp_path, server.url, pki, batch_size=25)
    sent = envelopes(50)
    await fill_spool_while_down(cfg, sent, 25)
    [first, *rest] = spool_files(cfg)
    data = first.read_bytes().splitlines(keepends=True)
    # bit rot in the middle, not JSON and JSON that is no envelope, and a crash mid-write
    damaged = data[:10] + [b"\x00\x00\x00garbage\n", b'{"vm_id": 1}\n'] + data[10:]
    first.write_bytes(b"".join(damaged))
    last = (rest or [first])[-1]
    last.write_bytes(last.read_bytes() + b'{"host_id":"host-7.lab.exa')

    await server.start()
    stats = await drain(cfg, 50, server)
    assert server.keys() == keys_of(sent)
    assert stats["spool_corrupt"] == 3
    assert spool_files(cfg) == []
