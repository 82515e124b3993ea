"""The on-disk spool by itself: order, cursor, bound, and damage, on a real directory."""

from __future__ import annotations

import json
import os

import pytest

from vdsm_hooks.relay.spool import Spool, SpoolError


def lines(start, count, size=100):
    out = []
    for i in range(start, start + count):
        body = json.dumps({"n": i, "pad": ""}, separators=(",", ":"))
        pad = max(0, size - len(body) - 1)
        out.append(json.dumps({"n": i, "pad": "p" * pad}, separators=(",", ":")).encode() + b"\n")
    return out


def numbers(batch):
    return [json.loads(line)["n"] for line in batch.lines]


def drain(spool, per_read=7):
    got = []
    while True:
        batch = spool.read(per_read, 1 << 20)
        if batch is None:
            return got
        got += numbers(batch)
        spool.commit(batch)


def test_reads_in_order_across_segments_and_deletes_what_is_done(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=1000)
    for i in range(0, 50, 5):
        spool.append(lines(i, 5))
    assert spool.pending == 50 and len(os.listdir(tmp_path)) >= 5
    assert drain(spool) == list(range(50))
    assert spool.pending == 0 and spool.size_bytes == 0
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".seg")]


def test_read_respects_record_and_byte_limits_but_returns_at_least_one(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    spool.append(lines(0, 10, size=100))
    assert len(spool.read(3, 1 << 20).lines) == 3
    assert len(spool.read(100, 250).lines) == 2
    assert len(spool.read(100, 10).lines) == 1


def test_cursor_survives_a_restart_and_partial_commits_count(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    spool.append(lines(0, 20))
    batch = spool.read(10, 1 << 20)
    spool.commit(batch, 4)  # only the first four went through
    assert spool.pending == 16
    again = Spool(str(tmp_path), max_bytes=1 << 20)
    assert again.pending == 16
    assert drain(again) == list(range(4, 20))


def test_restart_appends_to_a_new_segment(tmp_path):
    Spool(str(tmp_path), max_bytes=1 << 20).append(lines(0, 3))
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    spool.append(lines(3, 3))
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".seg")]) == 2
    assert drain(spool) == list(range(6))


def test_over_the_bound_the_oldest_segments_go_and_are_counted(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=4096, segment_bytes=1000)
    for i in range(0, 100, 5):
        dropped = spool.append(lines(i, 5))
        assert dropped % 5 == 0
    assert spool.size_bytes <= 4096
    assert spool.dropped_oldest + spool.pending == 100
    got = drain(spool)
    assert got == list(range(100 - len(got), 100))


def test_dropping_the_segment_being_read_keeps_counts_right(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=2000, segment_bytes=1000)
    spool.append(lines(0, 9))
    batch = spool.read(3, 1 << 20)
    spool.commit(batch)
    stale = spool.read(3, 1 << 20)
    for i in range(9, 40, 9):
        spool.append(lines(i, 9))
    spool.commit(stale)  # its segment is gone: ignored
    assert spool.dropped_oldest + spool.pending + 3 == 45
    got = drain(spool)
    assert got == list(range(45 - len(got), 45))


def must_have_n(value):
    if "n" not in value:
        raise ValueError("no n")  # like diag_protocol.ProtocolError


def test_damage_is_skipped_and_counted(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20, validate=must_have_n)
    spool.append(lines(0, 4))
    [seg] = [tmp_path / n for n in os.listdir(tmp_path) if n.endswith(".seg")]
    seg.write_bytes(seg.read_bytes() + b"{not json\n" + b'{"other":1}\n' + lines(4, 1)[0]
                    + b'{"n":5,"pa')
    spool = Spool(str(tmp_path), max_bytes=1 << 20, validate=must_have_n)
    assert spool.corrupt == 1  # the partial tail, found when loading
    assert drain(spool) == [0, 1, 2, 3, 4]
    assert spool.corrupt == 3  # plus the two bad lines, found when reading
    assert spool.pending == 0 and spool.size_bytes == 0


def test_unusable_directory_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match=r"set \[upload\] spool_dir"):
        Spool(str(blocker / "spool"), max_bytes=4096)




@pytest.mark.parametrize("segment_left, cursor", [(False, "stale"), (True, "stale"),
                                                  (True, "absent"), (False, "absent")])
def test_a_crash_while_the_last_segment_goes_never_loses_what_comes_after(
        tmp_path, segment_left, cursor):
    directory = tmp_path / "spool"
    spool = Spool(str(directory), max_bytes=1 << 20, segment_bytes=1000)
    for i in range(0, 20, 5):
        spool.append(lines(i, 5))
    segments = sorted(n for n in os.listdir(directory) if n.endswith(".seg"))
    assert len(segments) >= 2
    last = segments[-1]
    while True:  # deliver all but the last segment, cleanly
        batch = spool.read(1000, 1 << 20)
        assert batch is not None
        spool.commit(batch)
        if sorted(n for n in os.listdir(directory) if n.endswith(".seg")) == [last]:
            break
    # Now the crash, between deleting the last segment and its cursor: recreate what the disk
    # holds then. Its lines count as delivered (the engine has them) when the cursor says so.
    size = os.path.getsize(directory / last)
    delivered_line_count = len((directory / last).read_bytes().splitlines())
    if not segment_left:
        os.unlink(directory / last)
    if cursor == "stale":
        (directory / "cursor.json").write_text(json.dumps({"segment": last, "offset": size}))
    elif (directory / "cursor.json").exists():
        os.unlink(directory / "cursor.json")
    restarted = Spool(str(directory), max_bytes=1 << 20, segment_bytes=1000)
    restarted.append(lines(100, 5))  # new reports after the restart
    again = Spool(str(directory), max_bytes=1 << 20, segment_bytes=1000)  # and another one
    got = drain(again)
    assert got[-5:] == list(range(100, 105)), got  # never silently discarded
    # at most the finished segment again (at least once), never anything else
    assert len(got) - 5 in (0, delivered_line_count)


def vm_lines(vm, start, count, size=200):
    out = []
    for i in range(start, start + count):
        head = '{"host_id":"h","vm_id":"%s","n":%d,"pad":"' % (vm, i)
        out.append((head + "p" * (size - len(head) - 3) + '"}').encode() + b"\n")
    return out


def test_a_flooding_vm_loses_its_own_reports_not_the_others(tmp_path):
    flooder, calm, quiet = ("aaaaaaaa-0000-4000-8000-00000000000%d" % i for i in (1, 2, 3))
    dropped = []
    spool = Spool(str(tmp_path), max_bytes=128 * 1024, segment_bytes=4096,
                  share_pressure=0.5, on_share_drop=dropped.append)
    for round_ in range(100):  # the engine is down: everything stays
        spool.append(vm_lines(flooder, round_ * 20, 20) + vm_lines(calm, round_, 1))
        spool.append(vm_lines(quiet, round_, 1))
    stats = spool.stats()
    assert stats["spool_bytes"] <= 128 * 1024
    assert stats["dropped_share"] > 1000 and set(dropped) == {flooder}
    assert stats["dropped_oldest"] == 0  # nobody else's report was pushed out
    assert spool.vm_bytes(flooder) <= 1.5 * 128 * 1024 / 3 + 200
    assert spool.vm_bytes(calm) == spool.vm_bytes(quiet) == 100 * 200

    restarted = Spool(str(tmp_path), max_bytes=128 * 1024, segment_bytes=4096,
                      share_pressure=0.5)
    for vm in (flooder, calm, quiet):  # the bookkeeping is rebuilt from the files
        assert restarted.vm_bytes(vm) == spool.vm_bytes(vm)
    got = []
    while True:
        batch = restarted.read(50, 1 << 20)
        if batch is None:
            break
        got += [(json.loads(line)["vm_id"], json.loads(line)["n"]) for line in batch.lines]
        restarted.commit(batch)
    assert [n for vm, n in got if vm == calm] == list(range(100))
    assert [n for vm, n in got if vm == quiet] == list(range(100))
    assert restarted.vm_bytes(flooder) == 0 and restarted.stats()["spool_vms"] == 0


def test_vms_that_send_alike_keep_oldest_first_eviction(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=32 * 1024, segment_bytes=4096, share_pressure=0.5)
    vms = ["bbbbbbbb-0000-4000-8000-00000000000%d" % i for i in range(4)]
    for round_ in range(200):
        spool.append([line for vm in vms for line in vm_lines(vm, round_, 1)])
    stats = spool.stats()
    assert stats["dropped_share"] == 0 and stats["dropped_oldest"] > 0


def test_lines_appended_here_are_not_validated_again_but_found_ones_are(tmp_path):
    checked = []

    def validate(value):
        checked.append(value["n"])
        must_have_n(value)

    spool = Spool(str(tmp_path), max_bytes=1 << 20, validate=validate)
    spool.append(lines(0, 3))
    batch = spool.read(10, 1 << 20)
    assert [json.loads(line)["n"] for line in batch.lines] == [0, 1, 2] and checked == []
    # after a restart the segment is read line by line, as anything found on disk
    spool = Spool(str(tmp_path), max_bytes=1 << 20, validate=validate)
    assert drain(spool) == [0, 1, 2] and checked == [0, 1, 2]
