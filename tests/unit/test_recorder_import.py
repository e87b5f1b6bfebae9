"""The recorder import's pure parts: row payloads, the recorder source, keyset SQL on a real SQLite file,
placeholders for PostgreSQL/MySQL (no MySQL server is installed by the project's scripts: its SQL is
checked here as text), the source key, and the retention setting shared with the retention assets."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ingest_worker.importers import states
from ingest_worker.importers.recorder_db import (
    RecorderError,
    open_recorder,
    placeholders,
    redact,
    source_key_of,
    to_pyformat,
)
from ingest_worker.normalise import parse_time_ns
from ingest_worker.rejections import Rejected
from ingest_worker.sources.recorder import RecorderSource, row_payload, state_topic
from ingest_worker.store.import_progress import Position
from tests.recorder_file import RecorderShape, create_recorder, snapshot


def test_a_row_becomes_the_compressed_history_form_with_its_exact_time() -> None:
    payload = row_payload("21.5", '{"unit_of_measurement":"°C"}', 1709294400.123455, None)
    assert json.loads(payload) == {"s": "21.5", "a": {"unit_of_measurement": "°C"}, "lu": 1709294400.123455}
    outcome = RecorderSource().handle(state_topic("sensor.kitchen"), payload)
    (state,) = outcome.states
    assert (state.entity_id, state.state, state.source) == ("sensor.kitchen", "21.5", "recorder")
    assert parse_time_ns(state.last_updated or "") == 1709294400_123455_000  # not int(ts * 1e9)


def test_last_changed_is_kept_only_when_it_differs_and_a_null_state_is_a_removal() -> None:
    assert json.loads(row_payload("on", None, 10.5, 10.5)) == {"s": "on", "lu": 10.5}
    assert json.loads(row_payload("on", None, 10.5, 9.25)) == {"s": "on", "lu": 10.5, "lc": 9.25}
    assert RecorderSource().handle(state_topic("light.x"), row_payload(None, "{}", 10.5, None)).ignored == \
        "entity_removed"


def test_a_broken_attributes_text_is_a_dead_letter_not_a_crash() -> None:
    with pytest.raises(Rejected) as refused:
        RecorderSource().handle(state_topic("sensor.x"), row_payload("1", '{"unit":', 10.0, None))
    assert refused.value.reason == "invalid_json"


def test_placeholders_for_drivers_with_pyformat() -> None:
    assert to_pyformat(states.PAGE_SQL).count("%(after_ts)s") == 2
    assert to_pyformat("SELECT x::text, '5%' FROM t WHERE a = :a") == "SELECT x::text, '5%%' FROM t WHERE a = %(a)s"
    marks, params = placeholders("a", [7, 9])
    assert (marks, params) == (":a0, :a1", {"a0": 7, "a1": 9})


def test_secrets_never_leave_in_the_source() -> None:
    assert redact("mysql://ha:s3cret@db.local:3307/homeassistant?charset=utf8mb4") == \
        "mysql://ha:***@db.local:3307/homeassistant?charset=utf8mb4"
    assert redact("/config/home-assistant_v2.db") == "/config/home-assistant_v2.db"


def test_the_source_key_is_the_same_whatever_the_driver_returns() -> None:
    from datetime import UTC, datetime
    text = source_key_of(48, "2024-03-01 10:00:00.123456")
    assert text == source_key_of(48, datetime(2024, 3, 1, 10, 0, 0, 123456))
    assert text == source_key_of(48, datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC))
    assert text != source_key_of(48, "2024-03-01 10:00:00.123457")


def test_a_copy_of_the_file_is_the_same_recorder(tmp_path: Path) -> None:
    original = create_recorder(tmp_path / "a.db", RecorderShape(entities=3, states_per_entity=5, start_ts=1.7e9))
    copy = snapshot(original, tmp_path / "b.db")
    with open_recorder(str(original)) as first, open_recorder(f"sqlite:///{copy}") as second:
        assert (first.source_key, first.schema_version) == (second.source_key, 48)
        assert first.source != second.source


def test_keyset_pages_cover_every_row_once_in_order_with_ties(tmp_path: Path) -> None:
    path = create_recorder(tmp_path / "r.db", RecorderShape(entities=4, states_per_entity=50, start_ts=1.7e9))
    with sqlite3.connect(path) as conn:  # ties on last_updated_ts are broken by state_id
        conn.execute("UPDATE states SET last_updated_ts = 1700000100.5 WHERE state_id BETWEEN 30 AND 45")
    with open_recorder(str(path)) as recorder:
        after, seen = Position(0.0, states.START_ID), []
        while rows := recorder.query(states.PAGE_SQL, {"after_ts": after.last_ts, "after_id": after.last_id,
                                                       "limit": 7}):
            seen += [(row[1], row[0]) for row in rows]
            after = Position(rows[-1][1], rows[-1][0])
        assert len(seen) == 200
        assert seen == sorted(seen)
        assert len(set(seen)) == 200


def test_the_attribute_cache_stays_bounded(tmp_path: Path) -> None:
    import asyncio

    path = create_recorder(tmp_path / "r.db", RecorderShape(entities=10, states_per_entity=3, start_ts=1.7e9))
    with open_recorder(str(path)) as recorder:
        cache = states.AttributeCache(recorder, limit=8)
        texts = asyncio.run(cache.load(set(range(1, 7))))
        assert json.loads(texts[1] or "")["device_class"] == "temperature"
        later = asyncio.run(cache.load(set(range(7, 13))))
        assert len(later) <= 8
        assert all(later[i] is not None for i in range(7, 13))
        assert asyncio.run(cache.load({999}))[999] is None


def test_an_old_schema_and_a_missing_file_are_clear_errors(tmp_path: Path) -> None:
    old = create_recorder(tmp_path / "old.db", RecorderShape(entities=1, states_per_entity=1, start_ts=1.7e9,
                                                              schema_version=37))
    with pytest.raises(RecorderError, match="schema version 37; hats import reads version 38 or later"):
        open_recorder(str(old))
    with pytest.raises(RecorderError, match="no such file"):
        open_recorder(str(tmp_path / "missing.db"))
    with pytest.raises(RecorderError, match="cannot read a recorder at 'oracle://u:\\*\\*\\*@h/db'"):
        open_recorder("oracle://u:pw@h/db")


def test_reading_starts_after_the_position_but_never_before_retention() -> None:
    cutoff = states.retention_cutoff(30, now=1_800_000_000.0)
    assert cutoff == 1_800_000_000.0 - 30 * 86_400 + states.RETENTION_MARGIN_S
    assert states.start_after(None, cutoff) == Position(cutoff, states.START_ID)
    assert states.start_after(Position(cutoff - 5, 9), cutoff) == Position(cutoff, states.START_ID)
    assert states.start_after(Position(cutoff + 5, 9), cutoff) == Position(cutoff + 5, 9)
