"""Local durable spool: append-only segment files between the logger and Kafka.

Layout of ``spool_dir``::

    0000000000000001.seg   segment files, named by a growing 16-digit number
    0000000000000002.seg
    ack                    delivered position ("segment offset"), replaced atomically (write tmp, fsync, rename)

Record framing inside a segment: ``>II`` header (payload length, CRC-32 of the payload) followed by the payload.
Every record is written with a single ``os.write`` on an ``O_APPEND`` descriptor.

Durability (``fsync_policy``):

- ``always``: the segment is fsync'ed before ``append``/``append_many`` returns (group commit: one fsync per
  batch). Survives power loss; costs one fsync per writer batch.
- ``interval`` (default): fsync at most every ``fsync_interval_ms`` (on append, and from ``maybe_sync()`` that the
  writer thread calls when idle). A power loss loses at most that window; a process crash loses nothing written.
- ``none``: never fsync; the OS page cache holds the data. Survives a process crash, not a machine crash.

Restart and torn writes: on open, the last segment is scanned and truncated after its last complete record with a
valid CRC (a torn tail from a crash mid-write is dropped and counted in
``stepaudio_convlog_spool_corrupt_records_total``); appends then go to a fresh segment. A corrupt record met while
reading an older segment skips the rest of that segment (counted too), since its length field cannot be trusted.
Reading resumes from the persisted ``ack`` position, so records delivered in the last ``ack`` persist interval
may be sent again after a crash: delivery is at-least-once and consumers deduplicate on ``event_id``.

Bounded size: the total size of the segments is kept under ``max_bytes``. When an append would exceed it:

- ``drop_newest`` (default): the new record is rejected (``append`` returns False), counted in
  ``stepaudio_convlog_dropped_events_total{reason="spool_full"}``, and the alarm gauge
  ``stepaudio_convlog_spool_full`` is set to 1 until an append fits again. Already spooled data is never lost.
- ``drop_oldest``: whole oldest segments are deleted (their undelivered records are lost, counted with
  ``reason="spool_full_oldest"``) until the record fits; the alarm gauge is set too.

Segments are deleted only when every record in them is acknowledged (``ack``) or by ``drop_oldest``.
All methods are thread-safe (one writer thread and one sender thread use a spool).
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from services.convlog import metrics

HEADER = struct.Struct(">II")
_SUFFIX = ".seg"


class Position(NamedTuple):
    """A place in the spool: segment number and byte offset inside it."""

    segment: int
    offset: int


def _seg_name(n: int) -> str:
    return f"{n:016d}{_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only, crash-safe, size-bounded record log with a delivered ("ack") position."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync_policy: str = "interval",
        fsync_interval_ms: int = 50,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        full_policy: str = "drop_newest",
        ack_persist_interval_ms: int = 200,
    ) -> None:
        if fsync_policy not in ("always", "interval", "none"):
            raise ValueError(f"fsync_policy must be always|interval|none, not {fsync_policy!r}")
        if full_policy not in ("drop_newest", "drop_oldest"):
            raise ValueError(f"full_policy must be drop_newest|drop_oldest, not {full_policy!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync_policy = fsync_policy
        self.fsync_interval_s = fsync_interval_ms / 1000.0
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.full_policy = full_policy
        self.ack_persist_interval_s = ack_persist_interval_ms / 1000.0
        self._lock = threading.RLock()
        self._sizes: dict[int, int] = {}
        for p in sorted(self.dir.glob("*" + _SUFFIX)):
            try:
                self._sizes[int(p.stem)] = p.stat().st_size
            except ValueError:
                continue
        if self._sizes:
            self._recover_tail(max(self._sizes))
        self._ack = self._load_ack()
        for n in [n for n in self._sizes if n < self._ack.segment]:
            self._delete(n)
        self._ack_persisted = self._ack
        self._ack_dirty_since = 0.0
        self._dirty = False
        self._last_sync = time.monotonic()
        last = max(self._sizes) if self._sizes else 0
        if self._sizes and self._sizes[last] == 0:
            self._active = last
        else:
            self._active = last + 1
            self._sizes[self._active] = 0
        self._fd = os.open(self.dir / _seg_name(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._ack.segment not in self._sizes:
            self._ack = Position(min(self._sizes), 0)
        self.pending = self._count_from(self._ack)
        self._update_gauges()

    # ------------------------------------------------------------------ recovery
    def _recover_tail(self, n: int) -> None:
        path = self.dir / _seg_name(n)
        good = 0
        with open(path, "rb") as f:
            data = f.read()
        while good + HEADER.size <= len(data):
            length, crc = HEADER.unpack_from(data, good)
            end = good + HEADER.size + length
            if end > len(data) or zlib.crc32(data[good + HEADER.size : end]) != crc:
                break
            good = end
        if good != len(data):
            metrics.CORRUPT.inc()
            with open(path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
            self._sizes[n] = good

    def _load_ack(self) -> Position:
        try:
            seg, off = (self.dir / "ack").read_text().split()
            return Position(int(seg), int(off))
        except (OSError, ValueError):
            return Position(min(self._sizes) if self._sizes else 0, 0)

    def _count_from(self, pos: Position) -> int:
        count = 0
        while True:
            recs = self.read(pos, 10_000)
            if not recs:
                return count
            count += len(recs)
            pos = recs[-1][1]

    # ------------------------------------------------------------------ writing
    def _delete(self, n: int) -> None:
        try:
            os.unlink(self.dir / _seg_name(n))
        except FileNotFoundError:
            pass
        self._sizes.pop(n, None)

    def _roll(self) -> None:
        if self.fsync_policy != "none":
            os.fsync(self._fd)
        os.close(self._fd)
        self._active += 1
        self._sizes[self._active] = 0
        self._fd = os.open(self.dir / _seg_name(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self.fsync_policy != "none":
            _fsync_dir(self.dir)

    def total_bytes(self) -> int:
        """Bytes of all segments on disk."""
        with self._lock:
            return sum(self._sizes.values())

    def _make_room(self, size: int) -> bool:
        total = sum(self._sizes.values())
        if total + size <= self.max_bytes:
            metrics.SPOOL_FULL.set(0)
            return True
        metrics.SPOOL_FULL.set(1)
        if self.full_policy == "drop_newest":
            return False
        while total + size > self.max_bytes:
            oldest = min(self._sizes)
            if oldest == self._active:
                if self._sizes[oldest] == 0:
                    return False
                self._roll()
            start = self._ack.offset if self._ack.segment == oldest else 0
            lost = self._count_segment(oldest, start) if oldest >= self._ack.segment else 0
            self._delete(oldest)
            metrics.DROPPED.labels("spool_full_oldest").inc(lost)
            self.pending -= lost
            if self._ack.segment <= oldest:
                self._ack = Position(min(self._sizes), 0)
            total = sum(self._sizes.values())
        return True

    def _count_segment(self, n: int, start: int) -> int:
        count, pos = 0, Position(n, start)
        while True:
            recs = self.read(pos, 10_000)
            inside = [r for r in recs if r[2] == n]
            count += len(inside)
            if not inside or len(inside) < len(recs):
                return count
            pos = inside[-1][1]

    def append(self, payload: bytes) -> bool:
        """Append one record; False when it was dropped because the spool is full."""
        return self.append_many([payload])[0]

    def append_many(self, payloads: list[bytes]) -> list[bool]:
        """Append records in order (one fsync for the batch under policy 'always'); per-record accepted flag."""
        out: list[bool] = []
        with self._lock:
            for payload in payloads:
                frame = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
                if not self._make_room(len(frame)):
                    metrics.DROPPED.labels("spool_full").inc()
                    out.append(False)
                    continue
                if self._sizes[self._active] and self._sizes[self._active] + len(frame) > self.segment_bytes:
                    self._roll()
                os.write(self._fd, frame)
                self._sizes[self._active] += len(frame)
                self.pending += 1
                self._dirty = True
                out.append(True)
            if self.fsync_policy == "always":
                self._sync_locked()
            elif self.fsync_policy == "interval":
                self.maybe_sync()
            self._update_gauges()
        metrics.SPOOLED.inc(sum(out))
        return out

    def _sync_locked(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def maybe_sync(self) -> None:
        """fsync when the interval policy says it is due; also persists the ack position when it is due."""
        with self._lock:
            now = time.monotonic()
            if self.fsync_policy == "interval" and self._dirty and now - self._last_sync >= self.fsync_interval_s:
                self._sync_locked()
            if self._ack != self._ack_persisted and now - self._ack_dirty_since >= self.ack_persist_interval_s:
                self.persist_ack()

    def sync(self) -> None:
        """fsync the active segment and persist the ack position now (any policy but 'none' for data)."""
        with self._lock:
            if self.fsync_policy != "none":
                self._sync_locked()
            self.persist_ack()

    # ------------------------------------------------------------------ reading / acknowledging
    def read(self, pos: Position, max_records: int) -> list[tuple[bytes, Position, int]]:
        """Up to ``max_records`` records from ``pos``: (payload, position after the record, segment)."""
        out: list[tuple[bytes, Position, int]] = []
        with self._lock:
            segments = sorted(n for n in self._sizes if n >= pos.segment)
            sizes = dict(self._sizes)
        if not segments:
            return out
        if segments[0] != pos.segment:
            pos = Position(segments[0], 0)
        for n in segments:
            if n != pos.segment:
                pos = Position(n, 0)
            size = sizes[n]
            if pos.offset >= size:
                continue
            try:
                with open(self.dir / _seg_name(n), "rb") as f:
                    f.seek(pos.offset)
                    data = f.read(size - pos.offset)
            except FileNotFoundError:
                continue
            i = 0
            while i + HEADER.size <= len(data) and len(out) < max_records:
                length, crc = HEADER.unpack_from(data, i)
                end = i + HEADER.size + length
                if end > len(data) or zlib.crc32(data[i + HEADER.size : end]) != crc:
                    metrics.CORRUPT.inc()
                    i = len(data)  # skip the rest of this segment
                    out.append((b"", Position(n, size), n))
                    break
                out.append((data[i + HEADER.size : end], Position(n, pos.offset + end), n))
                i = end
            if len(out) >= max_records:
                break
        return out

    def acked_position(self) -> Position:
        """Position up to which every record has been acknowledged."""
        with self._lock:
            return self._ack

    def ack(self, pos: Position, count: int) -> None:
        """Mark every record before ``pos`` as delivered (``count`` of them since the last ack)."""
        with self._lock:
            if pos <= self._ack:
                return
            self._ack = pos
            self.pending = max(0, self.pending - count)
            for n in [n for n in self._sizes if n < pos.segment and n != self._active]:
                self._delete(n)
            if self._ack_dirty_since == 0.0:
                self._ack_dirty_since = time.monotonic()
            self._update_gauges()

    def persist_ack(self) -> None:
        """Write the ack position atomically (tmp file, fsync, rename)."""
        with self._lock:
            if self._ack == self._ack_persisted:
                return
            tmp = self.dir / "ack.tmp"
            with open(tmp, "w") as f:
                f.write(f"{self._ack.segment} {self._ack.offset}\n")
                if self.fsync_policy != "none":
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.dir / "ack")
            self._ack_persisted = self._ack
            self._ack_dirty_since = 0.0

    def _update_gauges(self) -> None:
        metrics.SPOOL_BYTES.set(sum(self._sizes.values()))
        metrics.SPOOL_PENDING.set(self.pending)

    def close(self) -> None:
        """fsync (unless policy 'none'), persist the ack position, close the active segment."""
        with self._lock:
            if self._fd < 0:
                return
            self.sync()
            os.close(self._fd)
            self._fd = -1
