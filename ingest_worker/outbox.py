"""The on-disk outbox: batches InfluxDB could not take yet, durable before their messages are acked.

Append-only segment files of length-prefixed, CRC-checked records (one record = one gzip'd
line-protocol batch, exactly the HTTP body to replay), fsync'd on every append; a cursor file
(replaced atomically) says how far replay has got. After a crash a torn last record fails its CRC and
is cut off (it was never acknowledged to the broker, which redelivers it). Replay is in order; a batch
replayed twice is harmless because InfluxDB writes are idempotent (same series, same timestamp).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct(">II")  # body length, crc32 of body
SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    segment: int
    offset: int
    end: int
    body: bytes


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._cursor = self._read_cursor()
        self._segments = sorted(int(p.stem) for p in self._dir.glob(f"*{SEGMENT_SUFFIX}"))
        self.pending_records = 0
        self.pending_bytes = 0
        self._recover()

    # -- state ------------------------------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self._dir / f"{segment:020d}{SEGMENT_SUFFIX}"

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (self._dir / CURSOR_FILE).read_text().split()
            return int(segment), int(offset)
        except (FileNotFoundError, ValueError):
            return 0, 0

    def _write_cursor(self) -> None:
        tmp = self._dir / f"{CURSOR_FILE}.tmp"
        with tmp.open("w") as handle:
            handle.write(f"{self._cursor[0]} {self._cursor[1]}\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self._dir / CURSOR_FILE)
        _fsync_dir(self._dir)

    def _recover(self) -> None:
        """Count what is pending and cut a torn tail left by a crash mid-append."""
        for segment in list(self._segments):
            if segment < self._cursor[0]:
                self._path(segment).unlink(missing_ok=True)
                self._segments.remove(segment)
                continue
            start = self._cursor[1] if segment == self._cursor[0] else 0
            for record in self._scan(segment, start, repair=True):
                self.pending_records += 1
                self.pending_bytes += record.end - record.offset
        if self.pending_records:
            log.info("outbox holds %d batch(es), %d bytes to replay", self.pending_records, self.pending_bytes)

    def _scan(self, segment: int, start: int, repair: bool = False) -> list[Record]:
        path = self._path(segment)
        data = path.read_bytes()
        records, offset = [], start
        while offset + HEADER.size <= len(data):
            length, crc = HEADER.unpack_from(data, offset)
            end = offset + HEADER.size + length
            body = data[offset + HEADER.size:end]
            if end > len(data) or zlib.crc32(body) != crc:
                break
            records.append(Record(segment, offset, end, body))
            offset = end
        if repair and offset < len(data):
            log.warning("outbox segment %s: cutting a torn record at byte %d (crash during append)", path, offset)
            with path.open("r+b") as handle:
                handle.truncate(offset)
                os.fsync(handle.fileno())
        return records

    # -- API --------------------------------------------------------------------------------------
    @property
    def empty(self) -> bool:
        return self.pending_records == 0

    def full(self) -> bool:
        return self.pending_bytes >= self.max_bytes

    def append(self, body: bytes) -> None:
        """Durably add one batch; returns after fsync."""
        if not self._segments or self._path(self._segments[-1]).stat().st_size >= self._segment_bytes:
            self._segments.append(self._segments[-1] + 1 if self._segments else self._cursor[0] + 1)
            self._path(self._segments[-1]).touch()
            _fsync_dir(self._dir)
        record = HEADER.pack(len(body), zlib.crc32(body)) + body
        with self._path(self._segments[-1]).open("ab") as handle:
            handle.write(record)
            handle.flush()
            os.fsync(handle.fileno())
        self.pending_records += 1
        self.pending_bytes += len(record)

    def peek(self) -> Record | None:
        """The oldest batch not yet replayed (reads one record, not the segment)."""
        for segment in self._segments:
            start = self._cursor[1] if segment == self._cursor[0] else 0
            with self._path(segment).open("rb") as handle:
                handle.seek(start)
                header = handle.read(HEADER.size)
                if len(header) < HEADER.size:
                    continue
                length, crc = HEADER.unpack(header)
                body = handle.read(length)
            if len(body) == length and zlib.crc32(body) == crc:
                return Record(segment, start, start + HEADER.size + length, body)
        return None

    def commit(self, record: Record) -> None:
        """Mark `record` replayed; a segment fully replayed (and not being appended to) is deleted."""
        self._cursor = (record.segment, record.end)
        self._write_cursor()
        self.pending_records -= 1
        self.pending_bytes -= record.end - record.offset
        for segment in list(self._segments):
            if segment < record.segment or (segment == record.segment and segment != self._segments[-1]
                                            and record.end >= self._path(segment).stat().st_size):
                self._path(segment).unlink(missing_ok=True)
                self._segments.remove(segment)
