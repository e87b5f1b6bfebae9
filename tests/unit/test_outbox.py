"""The outbox survives crashes: order, torn tails, cursor, segment rollover, size bound."""

from __future__ import annotations

from pathlib import Path

from ingest_worker.outbox import HEADER, Outbox


def drain(outbox: Outbox) -> list[bytes]:
    out = []
    while (record := outbox.peek()) is not None:
        out.append(record.body)
        outbox.commit(record)
    return out


def test_replays_in_order_across_segments_and_restarts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_bytes=10**9, segment_bytes=100)
    bodies = [f"batch-{i}".encode() * 5 for i in range(20)]
    for body in bodies[:10]:
        outbox.append(body)
    first = outbox.peek()
    assert first is not None
    outbox.commit(first)
    reopened = Outbox(tmp_path, max_bytes=10**9, segment_bytes=100)  # a restart
    assert reopened.pending_records == 9
    for body in bodies[10:]:
        reopened.append(body)
    assert drain(reopened) == bodies[1:]
    assert reopened.empty
    assert reopened.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # replayed segments are deleted, the live one stays


def test_torn_tail_is_cut_and_earlier_records_survive(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_bytes=10**9)
    outbox.append(b"complete-1")
    outbox.append(b"complete-2")
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as handle:  # a crash halfway through the third append
        handle.write(HEADER.pack(100, 12345) + b"only part of it")
    recovered = Outbox(tmp_path, max_bytes=10**9)
    assert recovered.pending_records == 2
    assert drain(recovered) == [b"complete-1", b"complete-2"]
    recovered.append(b"after-crash")
    assert drain(Outbox(tmp_path, max_bytes=10**9)) == [b"after-crash"]


def test_corrupted_record_is_not_replayed(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_bytes=10**9)
    outbox.append(b"good")
    outbox.append(b"flipped")
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert drain(Outbox(tmp_path, max_bytes=10**9)) == [b"good"]


def test_full_when_pending_bytes_reach_the_bound(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_bytes=100)
    outbox.append(b"x" * 50)
    assert not outbox.full()
    outbox.append(b"x" * 50)
    assert outbox.full()
    record = outbox.peek()
    assert record is not None
    outbox.commit(record)
    assert not outbox.full()


def test_a_record_is_its_header_and_body_on_disk(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_bytes=10**9)
    outbox.append(b"durable")
    (segment,) = tmp_path.glob("*.seg")
    assert segment.read_bytes()[HEADER.size:] == b"durable"
    assert segment.stat().st_size == HEADER.size + len(b"durable")
