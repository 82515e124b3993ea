"""Channel pieces that need no host: port discovery, the bounded queue, request salvage."""

from __future__ import annotations

import os
from pathlib import Path

from diag_protocol import encode, make_request
from guest_agent.channel import Channel, RequestDecoder, device_resolver, find_port


def port_tree(root: Path, ports: dict, udev: bool = False) -> None:
    """Lay out /sys/class/virtio-ports/<vport>/name and /dev/<vport> like the kernel does."""
    for vport, name in ports.items():
        sysdir = root / "sys/class/virtio-ports" / vport
        sysdir.mkdir(parents=True)
        (sysdir / "name").write_text(name + "\n")
        (root / "dev").mkdir(exist_ok=True)
        (root / "dev" / vport).write_text("")
        if udev:
            (root / "dev/virtio-ports").mkdir(exist_ok=True)
            os.symlink("../" + vport, root / "dev/virtio-ports" / name)


def test_udev_symlink_is_preferred(tmp_path: Path) -> None:
    port_tree(tmp_path, {"vport1p1": "org.qemu.guest_agent.0", "vport1p2": "org.vmdiag.agent.0"},
              udev=True)
    assert find_port(str(tmp_path)) == str(tmp_path / "dev/virtio-ports/org.vmdiag.agent.0")


def test_sysfs_scan_finds_the_port_without_udev(tmp_path: Path) -> None:
    port_tree(tmp_path, {"vport1p1": "org.qemu.guest_agent.0", "vport2p3": "org.vmdiag.agent.0"})
    assert find_port(str(tmp_path)) == str(tmp_path / "dev/vport2p3")
    assert device_resolver("/dev/virtio-ports/org.vmdiag.agent.0", str(tmp_path))() == str(
        tmp_path / "dev/vport2p3")


def test_no_matching_port_or_no_device_node(tmp_path: Path) -> None:
    port_tree(tmp_path, {"vport1p1": "org.qemu.guest_agent.0"})
    assert find_port(str(tmp_path)) is None
    (tmp_path / "sys/class/virtio-ports/vport9p9").mkdir()
    (tmp_path / "sys/class/virtio-ports/vport9p9/name").write_text("org.vmdiag.agent.0")
    assert find_port(str(tmp_path)) is None  # named in sysfs, but no /dev node (yet)


def test_explicit_device_is_used_as_given(tmp_path: Path) -> None:
    dev = tmp_path / "port"
    resolve = device_resolver(str(dev))
    assert resolve() is None
    dev.write_text("")
    assert resolve() == str(dev)


def test_queue_drops_oldest_reports_first_and_counts_them() -> None:
    ch = Channel(lambda: None, max_messages=3, max_bytes=1 << 20)
    try:
        for i in range(10):
            ch.send(b"report %d\n" % i, "report")
        ch.send(b"reply\n", "reply", urgent=True)
        assert ch.queued == 3
        assert ch.stats.dropped["report"] == 8
        assert ch.stats.dropped["reply"] == 0
        ch.discard(("reply",))
        assert ch.queued == 2 and ch.stats.dropped["stale_reply"] == 1
    finally:
        ch.close()


def test_queue_byte_cap_and_oversize_message() -> None:
    ch = Channel(lambda: None, max_messages=100, max_bytes=1000)
    try:
        for _ in range(5):
            ch.send(b"x" * 299 + b"\n", "report")
        assert ch.queued == 3 and ch.queued_bytes == 900
        ch.send(b"y" * 2000, "report")
        assert ch.stats.dropped == {"report": 2, "oversize": 1}
    finally:
        ch.close()


def test_request_decoder_keeps_refused_requests_for_a_reply() -> None:
    dec = RequestDecoder()
    good = encode(make_request("a1", "ping"))
    bad = b'{"type":"request","v":1,"id":"a2","method":"shell.exec","params":{}}\n'
    nameless = b'{"type":"request","v":1,"id":"bad id!","method":"x"}\n'
    out = dec.feed(good + bad + nameless + b"not json\n")
    assert [m["id"] for m in out] == ["a1"]
    assert dec.rejected == [("a2", "shell.exec")]
    assert dec.drops["invalid"] == 2 and dec.drops["bad_json"] == 1
