"""Recorder-shaped SQLite files for the import's tests and bench (`bench/recorder_import.py`).

The tables and indexes `hats import` reads, as Home Assistant's recorder creates them (schema 38+:
`states_meta`, `state_attributes.shared_attrs`, float epoch `last_updated_ts`), filled in chunks with
`executemany` so millions of rows take seconds and bounded memory. Entities share a few attribute sets
each, as a real recorder's do (attributes change far less often than states).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE schema_changes (change_id INTEGER PRIMARY KEY, schema_version INTEGER, changed DATETIME NOT NULL);
CREATE TABLE recorder_runs (run_id INTEGER PRIMARY KEY, start DATETIME NOT NULL, "end" DATETIME,
    closed_incorrect BOOLEAN NOT NULL, created DATETIME NOT NULL);
CREATE TABLE states_meta (metadata_id INTEGER PRIMARY KEY, entity_id VARCHAR(255));
CREATE UNIQUE INDEX ix_states_meta_entity_id ON states_meta (entity_id);
CREATE TABLE state_attributes (attributes_id INTEGER PRIMARY KEY, hash BIGINT, shared_attrs TEXT);
CREATE INDEX ix_state_attributes_hash ON state_attributes (hash);
CREATE TABLE states (state_id INTEGER PRIMARY KEY, entity_id CHAR(0), state VARCHAR(255), attributes CHAR(0),
    event_id SMALLINT, last_changed CHAR(0), last_changed_ts FLOAT, last_reported_ts FLOAT, last_updated CHAR(0),
    last_updated_ts FLOAT, old_state_id INTEGER, attributes_id INTEGER, origin_idx SMALLINT,
    metadata_id INTEGER);
CREATE INDEX ix_states_last_updated_ts ON states (last_updated_ts);
CREATE INDEX ix_states_metadata_id_last_updated_ts ON states (metadata_id, last_updated_ts);
CREATE INDEX ix_states_attributes_id ON states (attributes_id);
CREATE INDEX ix_states_old_state_id ON states (old_state_id);
"""
# The long-term statistics tables as schema 38-48 has them (no mean_type, no mean_weight).
STATISTICS_SCHEMA = """
CREATE TABLE IF NOT EXISTS statistics_meta (id INTEGER PRIMARY KEY, statistic_id VARCHAR(255), source VARCHAR(32),
    unit_of_measurement VARCHAR(255), has_mean BOOLEAN, has_sum BOOLEAN, name VARCHAR(255));
CREATE TABLE IF NOT EXISTS statistics (id INTEGER PRIMARY KEY, created CHAR(0), created_ts FLOAT, metadata_id INTEGER,
    start CHAR(0), start_ts FLOAT, mean FLOAT, min FLOAT, max FLOAT, last_reset CHAR(0), last_reset_ts FLOAT,
    state FLOAT, sum FLOAT);
CREATE INDEX IF NOT EXISTS ix_statistics_start_ts ON statistics (start_ts);
CREATE TABLE IF NOT EXISTS statistics_short_term (id INTEGER PRIMARY KEY, created CHAR(0), created_ts FLOAT,
    metadata_id INTEGER, start CHAR(0), start_ts FLOAT, mean FLOAT, min FLOAT, max FLOAT, last_reset CHAR(0),
    last_reset_ts FLOAT, state FLOAT, sum FLOAT);
CREATE INDEX IF NOT EXISTS ix_statistics_short_term_start_ts ON statistics_short_term (start_ts);
"""
CHUNK = 50_000
# (domain, attributes, state of step i): the kinds a home has most of.
KINDS: tuple[tuple[str, dict[str, object], str], ...] = (
    ("sensor", {"state_class": "measurement", "unit_of_measurement": "°C", "device_class": "temperature"}, "temp"),
    ("sensor", {"state_class": "measurement", "unit_of_measurement": "W", "device_class": "power"}, "power"),
    ("sensor", {"state_class": "total_increasing", "unit_of_measurement": "kWh", "device_class": "energy"}, "energy"),
    ("sensor", {"state_class": "measurement", "unit_of_measurement": "%", "device_class": "humidity"}, "humidity"),
    ("binary_sensor", {"device_class": "motion"}, "motion"),
    ("switch", {}, "switch"),
)


@dataclass(frozen=True)
class RecorderShape:
    entities: int
    states_per_entity: int
    start_ts: float
    step_s: float = 30.0
    attribute_sets: int = 3  # per entity (a renamed entity, an icon change…)
    schema_version: int = 48


def _state(kind: str, i: int, n: int) -> str:
    if kind == "temp":
        return f"{18 + (i * 7 + n) % 80 / 10:.1f}"
    if kind == "power":
        return f"{(i * 13 + n * 7) % 3000 / 10:.1f}"
    if kind == "energy":
        return f"{1000 + i * 0.01 + n:.2f}"
    if kind == "humidity":
        return f"{40 + (i + n) % 30}"
    if kind == "motion":
        return "on" if (i + n) % 2 else "off"
    return "unavailable" if i % 997 == 0 else ("on" if (i // 3) % 2 else "off")


def entity_ids(shape: RecorderShape) -> list[str]:
    return [f"{KINDS[n % len(KINDS)][0]}.{KINDS[n % len(KINDS)][2]}_{n}" for n in range(shape.entities)]


def _rows(shape: RecorderShape) -> Iterator[tuple[object, ...]]:
    """States in time order, entities interleaved, as a recorder appends them."""
    state_id = 0
    for i in range(shape.states_per_entity):
        for n in range(shape.entities):
            state_id += 1
            kind = KINDS[n % len(KINDS)][2]
            updated = shape.start_ts + i * shape.step_s + n * shape.step_s / shape.entities
            attributes_id = n * shape.attribute_sets + (i * shape.attribute_sets) // shape.states_per_entity + 1
            yield (state_id, _state(kind, i, n), updated, None, attributes_id, n + 1)


def create_recorder(path: Path, shape: RecorderShape) -> Path:
    """Write a recorder database of `shape` at `path` (replaced); returns `path`."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        conn.execute("INSERT INTO schema_changes (schema_version, changed) VALUES (?, '2024-03-01 10:00:00.123456')",
                     (shape.schema_version,))
        conn.execute("INSERT INTO recorder_runs (start, closed_incorrect, created) VALUES "
                     "('2024-03-01 10:00:00', 0, '2024-03-01 10:00:00')")
        ids = entity_ids(shape)
        conn.executemany("INSERT INTO states_meta (metadata_id, entity_id) VALUES (?, ?)",
                         [(n + 1, entity) for n, entity in enumerate(ids)])
        attributes = []
        for n, entity in enumerate(ids):
            base = KINDS[n % len(KINDS)][1]
            for a in range(shape.attribute_sets):
                shared = {**base, "friendly_name": f"{entity.split('.')[1].replace('_', ' ')} ({a})"}
                attributes.append((n * shape.attribute_sets + a + 1, hash(entity) & 0xFFFFFFFF,
                                   json.dumps(shared, ensure_ascii=False, separators=(",", ":"))))
        conn.executemany("INSERT INTO state_attributes (attributes_id, hash, shared_attrs) VALUES (?, ?, ?)",
                         attributes)
        chunk: list[tuple[object, ...]] = []
        insert = ("INSERT INTO states (state_id, state, last_updated_ts, last_changed_ts, attributes_id, metadata_id) "
                  "VALUES (?, ?, ?, ?, ?, ?)")
        for row in _rows(shape):
            chunk.append(row)
            if len(chunk) >= CHUNK:
                conn.executemany(insert, chunk)
                chunk.clear()
        conn.executemany(insert, chunk)
        conn.commit()
    finally:
        conn.close()
    return path


def add_hourly_means(path: Path, statistic_id: str, unit: str, first_ts: float, means: list[float]) -> None:
    """Add a measurement's hourly statistics (mean, min and max of each hour) from `first_ts` on."""
    with sqlite3.connect(path) as conn:
        conn.executescript(STATISTICS_SCHEMA)
        meta = conn.execute("INSERT INTO statistics_meta (statistic_id, source, unit_of_measurement, has_mean, "
                            "has_sum) VALUES (?, 'recorder', ?, 1, 0)", (statistic_id, unit)).lastrowid
        conn.executemany("INSERT INTO statistics (metadata_id, start_ts, mean, min, max) VALUES (?, ?, ?, ?, ?)",
                         [(meta, first_ts + i * 3_600, mean, mean - 1, mean + 1) for i, mean in enumerate(means)])


def set_schema_version(path: Path, version: int) -> None:
    """Record a later schema change (the newest row is the version the recorder is at)."""
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_changes (schema_version, changed) VALUES (?, '2024-03-02 10:00:00')",
                     (version,))


def snapshot(live: Path, copy: Path) -> Path:
    """A consistent copy of a recorder a running Home Assistant writes (SQLite's backup API)."""
    source = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy
