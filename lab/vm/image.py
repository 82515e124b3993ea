"""Build (or reuse) the guest disk image the VM tests boot.

Usage::

    python3 -m lab.vm.image build [--out DIR] [--cache DIR] [--rebuild]

Two cached stages, so a CI run builds the slow part once and a source change costs seconds:

1. ``rootfs-<key>.tar``: debootstrap + base configuration (``rootfs``), keyed by the package
   list and recipe; about two minutes to build.
2. ``images/<key>/``: ``root.img`` (raw ext4 made with ``mkfs.ext4 -d``), ``vmlinuz``,
   ``initrd.img`` and ``manifest.json``; keyed by stage 1 and a hash of the agent sources
   (``agent_layer``); a few seconds to build.

The cache folder is $VMDIAG_TEST_CACHE or /var/cache/vmdiag-test. A file lock serialises
builders, so two test runs on one machine never build the same thing twice or half-read it.
Guests never write to ``root.img``: they boot from a qcow2 overlay on top of it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from . import agent_layer, rootfs
from .mirror import find_mirror
from .progress import log, step

CACHE_ENV = "VMDIAG_TEST_CACHE"
DEFAULT_CACHE = "/var/cache/vmdiag-test"
#: Size of the guest's root disk. An odd size, so a report of it cannot match by chance.
IMAGE_BYTES = 1536 * 2**20
KERNEL_CMDLINE = ("root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 panic=-1 "
                  "systemd.show_status=1")
#: Image folders kept besides the current one; older ones are deleted.
KEEP_IMAGES = 2
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class GuestImage:
    """A built image: what libvirt needs to boot it and what the tests compare reports with."""

    root_image: str
    kernel: str
    initrd: str
    cmdline: str
    size_bytes: int
    hostname: str
    address: str
    gateway: str
    agent_install: str
    key: str

    @classmethod
    def load(cls, folder: str) -> GuestImage:
        """Read ``manifest.json`` of an image folder."""
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
            return cls(**json.load(handle))


def cache_dir() -> str:
    """The cache folder, created if missing."""
    path = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while building into it."""
    with open(os.path.join(folder, ".lock"), "w") as handle:
        began = time.monotonic()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another process is building in %s; waiting for it" % folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
            log("lock acquired after %.0fs" % (time.monotonic() - began))
        yield


def _single(pattern: str) -> str:
    found = sorted(glob.glob(pattern))
    if not found:
        raise RuntimeError("no file matches %s: the kernel package did not install as expected"
                           % pattern)
    return found[-1]


def make_image(tarball: str, folder: str, key: str, source_root: str) -> GuestImage:
    """Unpack ``tarball``, add the agent layer, and write the image files into ``folder``."""
    work = tempfile.mkdtemp(prefix="image-", dir=os.path.dirname(folder))
    try:
        tree = os.path.join(work, "rootfs")
        os.makedirs(tree)
        with step("unpack cached root tree"):
            rootfs.run(["tar", "--numeric-owner", "--xattrs", "-C", tree, "-xf", tarball])
        with step("add the vmdiag agent and the test faults"):
            how = agent_layer.apply(tree, source_root)
            log("agent installed from %s" % how)
        out = os.path.join(work, "out")
        os.makedirs(out)
        shutil.copy(_single(os.path.join(tree, "boot/vmlinuz-*")), os.path.join(out, "vmlinuz"))
        shutil.copy(_single(os.path.join(tree, "boot/initrd.img-*")),
                    os.path.join(out, "initrd.img"))
        root_image = os.path.join(out, "root.img")
        with step("mkfs.ext4 -d: %d MiB root image" % (IMAGE_BYTES // 2**20)):
            rootfs.run(["mkfs.ext4", "-q", "-F", "-L", "vmdiag-root", "-d", tree, root_image,
                        "%dk" % (IMAGE_BYTES // 1024)])
        image = GuestImage(
            root_image=os.path.join(folder, "root.img"), kernel=os.path.join(folder, "vmlinuz"),
            initrd=os.path.join(folder, "initrd.img"), cmdline=KERNEL_CMDLINE,
            size_bytes=IMAGE_BYTES, hostname=rootfs.HOSTNAME, address=rootfs.GUEST_ADDRESS,
            gateway=rootfs.GUEST_GATEWAY, agent_install=how, key=key)
        with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as handle:
            json.dump(asdict(image), handle, indent=1)
        for name in os.listdir(out):
            os.chmod(os.path.join(out, name), 0o644)
        os.chmod(out, 0o755)
        os.replace(out, folder)
        return image
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prune_images(images_dir: str, current: str, keep: int = KEEP_IMAGES) -> None:
    """Delete all but the ``keep`` newest image folders, never ``current``."""
    folders = sorted((p for p in glob.glob(os.path.join(images_dir, "*")) if p != current),
                     key=os.path.getmtime, reverse=True)
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def ensure_image(cache: str | None = None, source_root: str = SOURCE_ROOT,
                 rebuild: bool = False) -> GuestImage:
    """Return the current guest image, building whichever stage is missing or out of date."""
    cache = cache or cache_dir()
    with cache_lock(cache):
        base_key = rootfs.rootfs_key()
        tarball = os.path.join(cache, "rootfs-%s.tar" % base_key)
        if rebuild or not os.path.exists(tarball):
            with step("build the guest root tree (stage 1, cached as %s)" % tarball):
                work = tempfile.mkdtemp(prefix="rootfs-", dir=cache)
                try:
                    rootfs.build_tarball(tarball, work, find_mirror(rootfs.SUITE))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            for stale in glob.glob(os.path.join(cache, "rootfs-*.tar")):
                if stale != tarball:
                    os.unlink(stale)
        key = "%s-%s" % (base_key, agent_layer.layer_key(source_root))
        images_dir = os.path.join(cache, "images")
        os.makedirs(images_dir, exist_ok=True)
        folder = os.path.join(images_dir, key)
        if rebuild and os.path.isdir(folder):
            shutil.rmtree(folder)
        if os.path.isdir(folder):
            log("using cached guest image %s" % folder)
            return GuestImage.load(folder)
        with step("build the guest image (stage 2) into %s" % folder):
            image = make_image(tarball, folder, key, source_root)
        prune_images(images_dir, folder)
        return image


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lab.vm.image",
                                     description="Build the vmdiag test guest image.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build or reuse the cached image")
    build.add_argument("--out", help="also copy the image files into this folder")
    build.add_argument("--cache", help="cache folder (default $%s or %s)"
                       % (CACHE_ENV, DEFAULT_CACHE))
    build.add_argument("--rebuild", action="store_true", help="ignore the cache")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("debootstrap, chroot and mkfs need root; run this as root")
    if args.cache:
        os.makedirs(args.cache, exist_ok=True)
    image = ensure_image(args.cache, rebuild=args.rebuild)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        folder = os.path.dirname(image.root_image)
        for name in os.listdir(folder):
            shutil.copy(os.path.join(folder, name), os.path.join(args.out, name))
        log("copied image files to %s" % args.out)
    print(json.dumps(asdict(image), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
