"""The receipt journal when the broker reuses a packet id before the worker records its PUBACK as written
(a busy socket defers `settled`): the soak found 966,625 entries left behind that way and the journal
rewritten on every batch."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from ingest_worker.receipts import ReceiptJournal, Settled, digest

CONNECTION = 1
PACKET_IDS = 65_535  # MQTT's packet ids: 1 … 65535, reused once acknowledged


def test_a_packet_id_reused_before_its_settle_removes_the_acknowledged_message_only() -> None:
    journal = ReceiptJournal(None)
    first, second = digest("t/a", b"1"), digest("t/b", b"2")
    at_first = journal.received(first, CONNECTION, 7, False, 1_000)
    # The PUBACK of the first is handed over; before it is recorded as written the broker reuses id 7.
    at_second = journal.received(second, CONNECTION, 7, False, 2_000)
    journal.settled([(first, (CONNECTION, 7, at_first))])
    assert len(journal) == 1  # the second message, unacknowledged, keeps its receipt time
    # Redelivered after a reconnect, the second message takes its first receipt time back.
    assert journal.received(second, CONNECTION + 1, 9, True, 9_000) == at_second == 2_000
    journal.settled([(second, (CONNECTION + 1, 9, at_second))])
    assert len(journal) == 0


def test_deferred_settles_across_packet_id_wraps_leave_only_the_unacknowledged(tmp_path: Path) -> None:
    journal = ReceiptJournal(tmp_path)
    window = 2_000  # PUBACKs handed over but not yet recorded as written
    pending: deque[Settled] = deque()
    total = 3 * PACKET_IDS + 123
    for n in range(total):
        mid = n % PACKET_IDS + 1
        key = digest(f"t/{n}", b"x")
        at = journal.received(key, CONNECTION, mid, False, n)
        journal.persist([(key, at)])
        pending.append((key, (CONNECTION, mid, at)))
        if len(pending) > window:
            journal.settled([pending.popleft() for _ in range(window // 2)])
    assert len(journal) == len(pending)  # nothing else is kept, however often the ids wrapped
    journal.settled(pending)
    assert len(journal) == 0
    journal.close()
    # The file was compacted down to what was live, not rewritten from a pile of stale entries.
    assert (tmp_path / "receipts.journal").stat().st_size <= 4 * 24 * (window + 1) + 1024 * 1024
