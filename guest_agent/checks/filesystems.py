"""File system checks: fill, inode fill and file systems that should be writable but are not."""

from __future__ import annotations

from typing import Any, List, Mapping

from .result import Result, field_error, fmt_bytes, fmt_count, fmt_pct, level, result, threshold_for

#: File system types that are only read-only when something went wrong (or by explicit choice).
WRITABLE_FSTYPES = frozenset(("ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs",
                              "vfat", "exfat", "ntfs", "ntfs3", "zfs"))


def _percent(used: Any, free: Any, total: Any, given: Any) -> Any:
    if isinstance(given, (int, float)):
        return float(given)
    if isinstance(used, (int, float)) and isinstance(free, (int, float)) and used + free > 0:
        return 100.0 * used / (used + free)  # what df shows: space usable by ordinary users
    if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return 100.0 * used / total
    return None


def _fill(fs: Mapping[str, Any], mount: str, t: Mapping[str, float]) -> List[Result]:
    total, free = fs.get("total"), fs.get("free")
    pct = _percent(fs.get("used"), free, total, fs.get("percent"))
    if pct is None or not total:
        return []
    warn, crit = t["fs_warning_percent"], t["fs_critical_percent"]
    status = level(pct, warn, crit)
    text = "%s is %s full (%s free of %s)" % (mount, fmt_pct(pct), fmt_bytes(free or 0),
                                             fmt_bytes(total))
    if status != "ok":
        text += "; free space or grow the disk"
    return [result("fs.fill:" + mount, "File system fill " + mount, status, text, pct,
                   threshold_for(status, warn, crit))]


def _inodes(fs: Mapping[str, Any], mount: str, t: Mapping[str, float]) -> List[Result]:
    total, used = fs.get("inodes_total"), fs.get("inodes_used")
    if not total or not isinstance(used, (int, float)):
        return []  # btrfs and some network file systems have no fixed inode table
    pct = fs.get("inodes_percent")
    pct = float(pct) if isinstance(pct, (int, float)) else 100.0 * used / total
    warn, crit = t["inode_warning_percent"], t["inode_critical_percent"]
    status = level(pct, warn, crit)
    text = "%s has used %s of its inodes (%s of %s free)" % (
        mount, fmt_pct(pct), fmt_count(max(total - used, 0)), fmt_count(total))
    if status != "ok":
        text += ("; delete unneeded small files (caches, sessions, mail queues) or recreate "
                 "the file system with more inodes")
    return [result("fs.inodes:" + mount, "Inode fill " + mount, status, text, pct,
                   threshold_for(status, warn, crit))]


def _readonly(fs: Mapping[str, Any], mount: str) -> List[Result]:
    fstype = str(fs.get("fstype") or "")
    if fstype not in WRITABLE_FSTYPES or not isinstance(fs.get("readonly"), bool):
        return []
    if not fs["readonly"]:
        return [result("fs.readonly:" + mount, "Read-only file system " + mount, "ok",
                       "%s is mounted read-write" % mount)]
    text = ("%s (%s on %s) is mounted read-only, which usually means the kernel saw disk errors; "
            "check `dmesg`, repair it with fsck and remount it read-write"
            % (mount, fstype, fs.get("device") or "unknown device"))
    return [result("fs.readonly:" + mount, "Read-only file system " + mount, "critical", text)]


def check(sections: Mapping[str, Any], t: Mapping[str, float]) -> List[Result]:
    resources = sections.get("resources") or {}
    filesystems = (resources.get("data") or {}).get("filesystems")
    if filesystems is None:
        err = field_error(resources, "filesystems")
        if err is None:
            return []
        return [result("fs.fill", "File system fill", "unknown",
                       "Could not list file systems (%s)" % err)]
    out: List[Result] = []
    for fs in filesystems:
        mount = str(fs.get("mountpoint") or fs.get("device") or "?")
        out += _fill(fs, mount, t) + _inodes(fs, mount, t) + _readonly(fs, mount)
    return out
