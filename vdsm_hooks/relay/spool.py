"""A bounded on-disk queue of envelopes for the time the engine cannot be reached.

Layout of ``spool_dir``::

    00000000000000000001.seg   append-only segments, one JSON envelope per line
    00000000000000000002.seg
    cursor.json                {"segment": "...001.seg", "offset": <bytes already delivered>}

The cursor names the oldest segment still to deliver, or, once everything is delivered, the
segment that will be written next (offset 0). Segment numbers only grow, across restarts too:
a new segment is numbered after every segment and after the cursor, so a segment written
after a restart can never sort before a cursor left by a crash.

Each ``append`` writes whole lines and fsyncs before returning, so a crash loses at most the
batch being written, and then only as a partial last line, which is skipped and counted as
corrupt when the spool is re-read. A restarted process never appends to an old segment (it
could end in such a partial line); it opens a new one. Segments roll at ``segment_bytes`` so
that the bound (``max_bytes``) can be kept by deleting whole segments, oldest first; the
envelopes lost that way are counted in ``dropped_oldest``. Under pressure a VM holding far
more than its share loses its own new envelopes instead (``dropped_share``; see ``_fair``), so
one VM cannot push the others' reports out. Reading goes oldest first from the
cursor, and ``commit`` moves the cursor (written atomically) and deletes finished segments, so
delivery is in order and, across restarts, at least once; the engine deduplicates on
(vm_id, run_id, seq), which makes it exactly once. A finished segment is deleted only after
the cursor has moved past it: a crash in between leaves a segment older than the cursor, which
the next start deletes. ``benchmarks/spool_crash.py`` kills a process using the spool with
SIGKILL at random instants and counts what was lost (none) or committed twice (none).

Public methods take a lock: the uploader calls them from worker threads (fsync blocks).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import threading
from typing import Any, Callable, Dict, List, Tuple, TypeVar

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_SEGMENT = re.compile(r"^(\d{20})\.seg$")
CURSOR = "cursor.json"
#: Smallest and largest segment; between them a segment is 1/16 of the bound.
MIN_SEGMENT = 4096
MAX_SEGMENT = 32 * 1024 * 1024
#: How far above its even share of the bound a VM may hold envelopes under pressure.
SHARE_SLACK = 1.5


def _locked(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Spool, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class SpoolError(OSError):
    """The spool directory cannot be used; the message says which path and what to check."""


@dataclasses.dataclass
class _Segment:
    number: int
    path: str
    size: int
    #: Complete lines not yet delivered (corrupt ones included until they are read).
    records: int
    #: Bytes of those lines per VM (the fair share's bookkeeping).
    vm_bytes: Dict[str, int] = dataclasses.field(default_factory=dict)
    #: Written by this process, which checked every line before appending it: read back
    #: without decoding and validating each line again (a 10 MB batch costs ~0.3 s of CPU
    #: that way, on the relay's one core). Segments found at start are checked line by line.
    written_here: bool = False


@dataclasses.dataclass(frozen=True)
class SpoolBatch:
    """Lines read from one segment; hand it back to ``commit`` once they are delivered."""

    lines: List[bytes]
    segment: int
    end_offset: int
    corrupt: int
    #: For each line: the offset right after it, and the corrupt lines skipped before it.
    ends: List[int] = dataclasses.field(default_factory=list)
    corrupt_before: List[int] = dataclasses.field(default_factory=list)


class Spool:
    """See the module docstring. ``validate`` checks each line read back from a segment found
    at start (JSON already parsed); a line it rejects is skipped and counted in ``corrupt``.
    Lines this process appended were checked before (``Uploader`` validates what it queues)
    and are read back as written."""

    def __init__(self, directory: str, max_bytes: int, segment_bytes: int | None = None,
                 validate: Callable[[Any], Any] | None = None,
                 share_pressure: float | None = None,
                 on_share_drop: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.share_pressure = share_pressure
        self.on_share_drop = on_share_drop
        self.dropped_share = 0
        self._vm_bytes: Dict[str, int] = {}
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(MAX_SEGMENT, max(MIN_SEGMENT, max_bytes // 16))
        self.validate = validate
        self.dropped_oldest = 0
        self.corrupt = 0
        self.spooled = 0
        self._segments: List[_Segment] = []
        self._offset = 0  # delivered bytes of the oldest segment
        self._writing: _Segment | None = None
        self._next_number = 1  # of the next new segment; never goes back
        self._lock = threading.Lock()
        self._load()

    # --- state -----------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def pending(self) -> int:
        """Envelopes waiting on disk (lines found corrupt on reading are not counted)."""
        return sum(s.records for s in self._segments)

    @_locked
    def stats(self) -> Dict[str, int]:
        return {"spool_bytes": self.size_bytes, "spool_pending": self.pending,
                "spool_segments": len(self._segments), "spooled": self.spooled,
                "dropped_oldest": self.dropped_oldest, "dropped_share": self.dropped_share,
                "spool_vms": len(self._vm_bytes), "spool_corrupt": self.corrupt}

    def vm_bytes(self, vm_id: str) -> int:
        """Bytes of ``vm_id``'s envelopes waiting in the spool."""
        return self._vm_bytes.get(vm_id, 0)

    # --- writing ---------------------------------------------------------------------------

    @_locked
    def append(self, lines: List[bytes]) -> int:
        """Append envelope lines (each ending in a newline) durably; return how many older
        envelopes were dropped to stay within ``max_bytes``."""
        lines, vms = self._fair(lines)
        if not lines:
            return 0
        data = b"".join(lines)
        segment = self._writing
        if segment is None or (segment.size and segment.size + len(data) > self.segment_bytes):
            segment = self._new_segment()
        try:
            fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if segment.size == 0:
                _fsync_dir(self.directory)  # the new file's name must survive a crash too
        except OSError as err:
            # What reached the file is unknown: never append after it again.
            segment.size = _file_size(segment.path)
            self._writing = None
            raise SpoolError("cannot write %s: %s; check free space and permissions of %s"
                             % (segment.path, err.strerror or err, self.directory)) from err
        segment.size += len(data)
        segment.records += len(lines)
        self.spooled += len(lines)
        for vm, line in zip(vms, lines):
            _add(segment.vm_bytes, vm, len(line))
            _add(self._vm_bytes, vm, len(line))
        return self._enforce_bound()

    def _fair(self, lines: List[bytes]) -> Tuple[List[bytes], List[str]]:
        """The lines within their VM's share, and their VMs. Once the spool is over
        ``share_pressure`` of its bound, a VM may hold at most ``SHARE_SLACK`` times its share
        (``max_bytes / VMs with envelopes here``); past that its new envelopes are dropped
        (``dropped_share``), so a VM that sends far more than the others loses its own reports,
        not theirs. VMs that send alike never reach the slack: for them the oldest go first."""
        vms = [_vm_of(line) for line in lines]
        if self.share_pressure is None:
            return lines, vms
        total = self.size_bytes
        pending: Dict[str, int] = {}
        kept: List[bytes] = []
        kept_vms: List[str] = []
        for vm, line in zip(vms, lines):
            size = len(line)
            held = self._vm_bytes.get(vm, 0) + pending.get(vm, 0)
            if total + size > self.max_bytes * self.share_pressure:
                active = len(self._vm_bytes.keys() | pending.keys() | {vm})
                if held + size > SHARE_SLACK * self.max_bytes / active:
                    self.dropped_share += 1
                    if self.on_share_drop is not None:
                        self.on_share_drop(vm)
                    continue
            pending[vm] = pending.get(vm, 0) + size
            total += size
            kept.append(line)
            kept_vms.append(vm)
        return kept, kept_vms

    def _new_segment(self) -> _Segment:
        number = self._next_number
        self._next_number += 1
        path = os.path.join(self.directory, _name(number))
        segment = _Segment(number, path, 0, 0, written_here=True)
        self._segments.append(segment)
        self._writing = segment
        if len(self._segments) == 1:
            self._offset = 0
        return segment

    def _enforce_bound(self) -> int:
        dropped = 0
        while self.size_bytes > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments[0]
            dropped += oldest.records
            self._remove_oldest()
        if dropped:
            self.dropped_oldest += dropped
            log.warning("spool over %d bytes: dropped the %d oldest envelopes (%d so far)",
                        self.max_bytes, dropped, self.dropped_oldest)
        return dropped

    # --- reading ---------------------------------------------------------------------------

    @_locked
    def read(self, max_records: int, max_bytes: int) -> SpoolBatch | None:
        """The oldest undelivered lines of the oldest segment (at least one line, if any), or
        None when the spool is empty. Nothing changes until ``commit``."""
        while self._segments:
            segment = self._segments[0]
            lines: List[bytes] = []
            ends: List[int] = []
            corrupt_before: List[int] = []
            corrupt = 0
            size = 0
            offset = self._offset
            try:
                with open(segment.path, "rb") as f:
                    f.seek(offset)
                    while len(lines) < max_records:
                        line = f.readline()
                        if not line.endswith(b"\n"):
                            break  # end of file, or a partial tail counted at load
                        if lines and size + len(line) > max_bytes:
                            break
                        offset += len(line)
                        if segment.written_here or self._line_ok(line):
                            lines.append(line)
                            ends.append(offset)
                            corrupt_before.append(corrupt)
                            size += len(line)
                        else:
                            corrupt += 1
            except FileNotFoundError:
                log.warning("spool segment %s vanished; skipping it", segment.path)
                segment.records = 0
                segment.size = 0
                offset = 0
            if lines or corrupt:
                return SpoolBatch(lines, segment.number, offset, corrupt, ends, corrupt_before)
            # Consumed, or only a partial tail left: finished.
            self._remove_oldest()
        return None

    @_locked
    def commit(self, batch: SpoolBatch, count: int | None = None) -> None:
        """Mark ``batch`` (or its first ``count`` lines) delivered or given up: move the cursor,
        delete finished segments."""
        if not self._segments or self._segments[0].number != batch.segment:
            return  # its segment was dropped for space meanwhile
        if count is None or count >= len(batch.lines):
            done, corrupt, end = len(batch.lines), batch.corrupt, batch.end_offset
        elif count <= 0:
            return
        else:
            done, corrupt, end = count, batch.corrupt_before[count - 1], batch.ends[count - 1]
        segment = self._segments[0]
        for line in batch.lines[:done]:
            vm = _vm_of(line)
            _add(segment.vm_bytes, vm, -len(line))
            _add(self._vm_bytes, vm, -len(line))
        segment.records = max(0, segment.records - done - corrupt)
        self.corrupt += corrupt
        self._offset = end
        if self._offset >= segment.size or segment.records == 0:
            # Done; what may be left is a partial line from a crash. Appends open a new one.
            self._remove_oldest()
        else:
            self._write_cursor()

    def _line_ok(self, line: bytes) -> bool:
        try:
            value = json.loads(line)
            if self.validate is not None:
                self.validate(value)
            return isinstance(value, dict)
        except ValueError:
            return False

    # --- housekeeping ----------------------------------------------------------------------

    def _remove_oldest(self) -> None:
        oldest = self._segments.pop(0)
        for vm, size in oldest.vm_bytes.items():
            _add(self._vm_bytes, vm, -size)
        if oldest is self._writing:
            self._writing = None
        self._offset = 0
        # The cursor first: a crash before the unlink leaves a segment older than the cursor,
        # which _load recognises as delivered.
        self._write_cursor()
        try:
            os.unlink(oldest.path)
        except FileNotFoundError:
            pass

    def _write_cursor(self) -> None:
        """Point the cursor at the oldest segment, or at the next one to be written."""
        path = os.path.join(self.directory, CURSOR)
        segment = (os.path.basename(self._segments[0].path) if self._segments
                   else _name(self._next_number))
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"segment": segment, "offset": self._offset}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _load(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            names = sorted(n for n in os.listdir(self.directory) if _SEGMENT.match(n))
        except OSError as err:
            raise SpoolError("cannot use spool directory %s: %s; create it writable for the "
                             "relay user or set [upload] spool_dir"
                             % (self.directory, err.strerror or err)) from err
        for name in names:
            path = os.path.join(self.directory, name)
            records, size, partial = _scan(path)
            if partial:
                self.corrupt += 1
                log.warning("spool segment %s ends in a partial line (%d bytes), "
                            "probably from a crash; it will be skipped", path, partial)
            self._segments.append(_Segment(int(name[:20]), path, size, records))
        cursor = self._read_cursor()
        numbers = [s.number for s in self._segments]
        if cursor is not None and _SEGMENT.match(cursor[0]):
            numbers.append(int(cursor[0][:20]))  # what it names may have existed
        self._next_number = max(numbers, default=0) + 1
        if cursor and self._segments:
            segment_name, offset = cursor
            while self._segments and os.path.basename(self._segments[0].path) < segment_name:
                done = self._segments.pop(0)  # delivered before a crash, deletion not done
                try:
                    os.unlink(done.path)
                except OSError:
                    pass
            first = self._segments[0] if self._segments else None
            if first is not None and os.path.basename(first.path) == segment_name:
                offset = min(offset, first.size)
                first.records = max(0, first.records - _count_lines(first.path, offset))
                self._offset = offset
        for i, segment in enumerate(self._segments):
            segment.vm_bytes = _vm_bytes_of(segment.path, self._offset if i == 0 else 0)
            for vm, size in segment.vm_bytes.items():
                _add(self._vm_bytes, vm, size)
        if self._segments:
            log.info("spool %s: %d envelopes, %d bytes waiting from before",
                     self.directory, self.pending, self.size_bytes)

    def _read_cursor(self) -> Tuple[str, int] | None:
        try:
            with open(os.path.join(self.directory, CURSOR), encoding="utf-8") as f:
                data = json.load(f)
            return str(data["segment"]), max(0, int(data["offset"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("spool cursor unreadable (%s); delivering from the oldest segment "
                        "(the engine drops duplicates)", err)
            return None


#: The envelope's own vm_id: encoded envelopes start with host_id (at most 256 characters)
#: then vm_id, so the first match within the head of a line is the envelope's.
_VM_ID = re.compile(rb'"vm_id":"([0-9A-Za-z-]{1,64})"')
_VM_HEAD = 1024


def _vm_of(line: bytes) -> str:
    match = _VM_ID.search(line, 0, _VM_HEAD)
    return match.group(1).decode("ascii") if match else "?"


def _add(counts: Dict[str, int], key: str, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)


def _vm_bytes_of(path: str, offset: int) -> Dict[str, int]:
    """Bytes per VM of the complete lines of a segment from ``offset`` on."""
    counts: Dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f:
                if line.endswith(b"\n"):
                    _add(counts, _vm_of(line), len(line))
    except OSError:
        pass
    return counts


def _name(number: int) -> str:
    return "%020d.seg" % number


def _scan(path: str) -> Tuple[int, int, int]:
    """(complete lines, size, bytes of a partial last line) of one segment."""
    records = 0
    size = 0
    end_of_last_line = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            newlines = chunk.count(b"\n")
            if newlines:
                records += newlines
                end_of_last_line = size + chunk.rfind(b"\n") + 1
            size += len(chunk)
    return records, size, size - end_of_last_line


def _count_lines(path: str, upto: int) -> int:
    count = 0
    with open(path, "rb") as f:
        left = upto
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            left -= len(chunk)
    return count


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
