"""Receipt times that survive a crash, so a redelivered message becomes the same point again.

A message whose payload carries no timestamp (discovery states, statestream's fallback) is stamped with
the time the worker received it. If the worker dies after its batch became durable (InfluxDB or the
outbox) but before the PUBACKs reached the broker, the broker resends those messages (DUP set) on the
next connection; stamped anew they would be second points. So every QoS>0 message's receipt time is
kept, keyed by a digest of (topic, payload), until its PUBACK is on the wire: in memory on the network
thread, and on disk (`receipts.journal` beside the client id's outbox, one append per batch, before
the batch's write) for a restarted process. A redelivered message takes the receipt time of the
unacknowledged message with its digest from an earlier connection or process: the point is the same
point, and InfluxDB overwrites it.

Bounded by the unacknowledged window: an entry goes once its PUBACK was written to the socket (it
reaches the broker even if the process is killed next: the kernel still sends it), or, for entries of
an earlier connection or process, once the broker sends its first new (non-DUP) message on the current
connection (a broker resends every in-flight message first, so what it did not resend was acked). The
file is rewritten from what is still live when it grows past a few times that. Appends are not
fsync'd: a SIGKILL keeps the page cache; a power loss could lose the last appends, and then a redelivered
message is a second point rather than a lost one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import struct
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "receipts.journal"
RECORD = struct.Struct("<16sq")  # digest of topic and payload, receipt time (epoch ns)
COMPACT_MIN_BYTES = 1024 * 1024  # the file is rewritten only past this and COMPACT_FACTOR × the live entries
COMPACT_FACTOR = 4
LOADED = 0  # the connection number of entries read from the file (a previous process's)

Entry = tuple[int, int, int]  # connection, packet id (negative for loaded entries), receipt time
Settled = tuple[bytes, Entry]  # an acknowledged message's digest and entry, exactly as `received` made it


def digest(topic: str, payload: bytes) -> bytes:
    return hashlib.blake2b(topic.encode("utf-8", "surrogateescape") + b"\0" + payload, digest_size=16).digest()


class ReceiptJournal:
    """The receipt times of unacknowledged messages. `received` and `settled` run on the network thread
    (they own the in-memory index); `persist` runs on the pipeline's side; the file is guarded by a lock."""

    def __init__(self, directory: Path | None) -> None:
        self._by_digest: dict[bytes, list[Entry]] = {}
        self._live = 0  # entries in _by_digest
        self._stale_before = 0  # entries of connections below this one are dropped at `redelivery_over`
        self._file_lock = threading.Lock()
        self._path = directory / FILE_NAME if directory is not None else None
        self._file_bytes = 0
        self.reused = 0  # redelivered messages that took their original receipt time
        if directory is not None and self._path is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load(self._path)
            self._file = self._path.open("ab")
            self._file_bytes = self._file.tell()

    def _load(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            whole = len(data) - len(data) % RECORD.size  # a torn last record (killed mid-append) is dropped
            for i, (key, received_ns) in enumerate(RECORD.iter_unpack(data[:whole])):
                self._add(key, (LOADED, -1 - i, received_ns))
            if whole:
                log.info("receipt journal %s: %d receipt time(s) of unacknowledged messages", path,
                         whole // RECORD.size)

    def _add(self, key: bytes, entry: Entry) -> None:
        self._by_digest.setdefault(key, []).append(entry)
        self._live += 1

    def _remove(self, key: bytes, entry: Entry) -> None:
        entries = self._by_digest[key]
        entries.remove(entry)
        if not entries:
            del self._by_digest[key]
        self._live -= 1

    def __len__(self) -> int:
        return self._live

    # -- the network thread ----------------------------------------------------------------------
    def received(self, key: bytes, connection: int, mid: int, dup: bool, now_ns: int) -> int:
        """The receipt time of a QoS>0 message: its original one if it is a redelivery."""
        received_ns = now_ns
        if dup:
            for entry in self._by_digest.get(key, ()):
                if entry[0] < connection:  # the unacknowledged copy an earlier connection or process got
                    self._remove(key, entry)
                    received_ns = entry[2]
                    self.reused += 1
                    break
        elif connection > self._stale_before:
            self.redelivery_over(connection)
        self._add(key, (connection, mid, received_ns))
        return received_ns

    def redelivery_over(self, connection: int) -> None:
        """The broker sent a new message on `connection`: it has resent all it had in flight, so what an
        earlier connection or process left here was acknowledged after all."""
        self._stale_before = connection
        for key, entries in list(self._by_digest.items()):
            for entry in [e for e in entries if e[0] < connection]:
                self._remove(key, entry)
        self._compact_if_large()

    def settled(self, acked: Iterable[Settled]) -> None:
        """These messages' PUBACKs were written to the broker's socket. Each is named by its exact entry, not
        by (connection, packet id): once a PUBACK is handed over the broker may reuse its packet id for the
        next message before this runs (a busy socket defers it), and an id would then name the new message:
        its entry removed too early, the old one kept for ever (measured in the soak: 966,625 entries, the
        journal rewritten on every call, the worker down to ~1,000 msg/s)."""
        for key, entry in acked:
            entries = self._by_digest.get(key)
            if entries is not None and entry in entries:
                self._remove(key, entry)
        self._compact_if_large()

    def _compact_if_large(self) -> None:
        if self._path is None or self._file.closed:
            return
        if self._file_bytes <= max(COMPACT_MIN_BYTES, COMPACT_FACTOR * RECORD.size * self._live):
            return
        live = [(key, entry[2]) for key, entries in self._by_digest.items() for entry in entries]
        body = b"".join(RECORD.pack(key, received_ns) for key, received_ns in live)
        tmp = self._path.with_suffix(".tmp")
        with self._file_lock:
            tmp.write_bytes(body)
            tmp.replace(self._path)
            self._file.close()
            self._file = self._path.open("ab")
            self._file_bytes = len(body)

    # -- the pipeline's side ----------------------------------------------------------------------
    def persist(self, records: Sequence[tuple[bytes, int]]) -> None:
        """Append a batch's (digest, receipt time)s: called before the batch's write becomes durable."""
        if self._path is None or not records:
            return
        body = b"".join(RECORD.pack(key, received_ns) for key, received_ns in records)
        with self._file_lock:
            self._file.write(body)
            self._file.flush()  # into the page cache: survives the process being killed
            self._file_bytes += len(body)

    def close(self) -> None:
        if self._path is not None:
            with self._file_lock:
                self._file.close()
