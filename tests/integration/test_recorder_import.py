"""`hats import` of a real Home Assistant's recorder (2024.3 and 2025.4, tests/ha_peer.py).

The reference is Home Assistant's own history API: every state it reports for the test's entities must be
one raw point in InfluxDB, in canonical units, at its exact `last_updated`, after importing the SQLite file
that HA is writing at that moment. A second import changes nothing; an import killed (SIGKILL) after its
first committed page and run again ends exactly as one clean run; a corrupted file and a too-old schema
are refused with a clear error before anything is written.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack.profile import PROJECT_ROOT, Profile
from ingest_worker.normalise import parse_time_ns
from tests.conftest import Tenant, new_tenant, wait_for
from tests.ha_peer import HaPeer
from tests.integration.test_worker_formats import ns, pg_rows
from tests.recorder_file import RecorderShape, add_hourly_means, create_recorder, snapshot

pytestmark = pytest.mark.integration

RECORDER = "home-assistant_v2.db"
KILL_PAGES = 200  # the killed run's page size makes the import this many pages long at least

# entity suffix → (attributes, states in order, canonical value of a state)
KINDS: dict[str, tuple[dict[str, Any], list[str], Callable[[str], float | str]]] = {
    "temp_f": ({"unit_of_measurement": "°F", "device_class": "temperature", "state_class": "measurement"},
               ["68.0", "70.7", "unavailable", "72.5"], lambda s: (float(s) - 32) * 5 / 9),
    "power_kw": ({"unit_of_measurement": "kW", "device_class": "power", "state_class": "measurement"},
                 ["1.5", "0.25", "3.125", "0"], lambda s: float(s) * 1000),
    "energy_wh": ({"unit_of_measurement": "Wh", "device_class": "energy", "state_class": "total_increasing"},
                  ["5000", "5250", "5600", "6001"], lambda s: float(s) / 1000),
    "mode": ({"device_class": "enum"}, ["eco", "comfort", "away", "eco"], lambda s: s),
    "door": ({"device_class": "door"}, ["off", "on", "off", "on"], lambda s: 1.0 if s == "on" else 0.0),
}
AVAILABILITY = ("unavailable", "unknown")


def entity_ids(tenant: Tenant) -> dict[str, str]:
    return {kind: f"{'binary_sensor' if kind == 'door' else 'sensor'}.rec_{tenant.name}_{kind}" for kind in KINDS}


def hats_import(tenant: Tenant, location: Path | str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack.cli", "import", str(location), *args], cwd=PROJECT_ROOT,
                          env={**os.environ, **tenant.env, **env}, capture_output=True, text=True, timeout=600,
                          check=False)


def _round(value: float | str) -> float | str:
    return round(value, 6) if isinstance(value, float) else value


def expected_points(ha: HaPeer, tenant: Tenant, start: datetime) -> dict[str, set[tuple[int, float | str]]]:
    """Per entity, (last_updated ns, canonical value or availability state) of every state HA's history has."""
    ids = entity_ids(tenant)
    history = ha.history(ids.values(), start, datetime.now(UTC) + timedelta(seconds=1))
    expected: dict[str, set[tuple[int, float | str]]] = {}
    for kind, entity in ids.items():
        canonical = KINDS[kind][2]
        expected[entity] = {(parse_time_ns(row.get("last_updated") or row["last_changed"]),
                             row["state"] if row["state"] in AVAILABILITY else _round(canonical(row["state"])))
                            for row in history.get(entity, [])}
    return expected


def stored_points(tenant: Tenant, entity: str) -> tuple[set[str], list[tuple[int, float | str]]]:
    series = tenant.influx(f"SELECT value, state FROM raw./.*/ WHERE entity_id = '{entity}'")
    points: list[tuple[int, float | str]] = []
    for s in series:
        value_at, state_at = s["columns"].index("value"), s["columns"].index("state")
        points += [(row[0], _round(row[value_at]) if row[value_at] is not None else row[state_at])
                   for row in s["values"]]
    return {s["name"] for s in series}, points


def summary_of(tenant: Tenant) -> list[tuple[Any, ...]]:
    """Per series: measurement, entity, count, first/last time and the sum of values (all raw points)."""
    found = []
    for s in tenant.influx("SELECT count(value), sum(value), count(state) FROM raw./.*/ GROUP BY entity_id"):
        found.append((s["name"], s["tags"]["entity_id"], *s["values"][0][1:]))
    for s in tenant.influx("SELECT first(*) FROM raw./.*/ GROUP BY entity_id"):
        found.append((s["name"], s["tags"]["entity_id"], "first", s["values"][0][0]))
    return sorted(found, key=repr)


def progress_of(tenant: Tenant) -> list[tuple[Any, ...]]:
    return pg_rows(tenant, "SELECT source_key, stream, last_ts, last_id, rows_done FROM ops.import_progress "
                           "WHERE tenant_id = %s ORDER BY stream", tenant.name)


def hours_of(tenant: Tenant) -> list[tuple[Any, ...]]:
    return pg_rows(tenant, "SELECT hour, points, version FROM ops.ingest_hours WHERE tenant_id = %s ORDER BY hour",
                   tenant.name)


def imports_of(tenant: Tenant) -> list[tuple[Any, ...]]:
    return pg_rows(tenant, "SELECT status, states_read, points_written, dead_lettered FROM ops.imports "
                           "WHERE tenant_id = %s ORDER BY import_id", tenant.name)


def letters_of(tenant: Tenant) -> list[tuple[Any, ...]]:
    rows = pg_rows(tenant, "SELECT topic, payload, reason FROM ops.dead_letters WHERE tenant_id = %s", tenant.name)
    return sorted((t, bytes(p), r) for t, p, r in rows)


def test_every_state_in_home_assistants_history_is_one_raw_point(home_assistant: HaPeer, tenant: Tenant) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    ids = entity_ids(tenant)
    for step in range(4):
        for kind, entity in ids.items():
            attributes, states, _ = KINDS[kind]
            home_assistant.set_state(entity, states[step], {**attributes, "friendly_name": f"{kind} {step}"})
    expected = wait_for(lambda: (found := expected_points(home_assistant, tenant, start))
                        and all(len(points) == 4 for points in found.values()) and found,
                        "HA's history to show every state")
    live = home_assistant.config_dir / RECORDER

    done = hats_import(tenant, live, "--no-statistics")  # read in place while Home Assistant writes it
    assert done.returncode == 0, done.stderr
    assert "complete:" in done.stderr
    for entity in ids.values():
        measurements, stored = stored_points(tenant, entity)
        assert len(measurements) == 1, f"{entity} in {measurements}"
        assert sorted(stored) == sorted(expected[entity]), entity  # every state once, exact time, nothing else
    assert {kind: stored_points(tenant, entity)[0] for kind, entity in ids.items()} == {
        "temp_f": {"temperature"}, "power_kw": {"power"}, "energy_wh": {"energy"}, "mode": {"enum"},
        "door": {"binary"}}
    entities = pg_rows(tenant, "SELECT entity_id, unit_canonical, conversion, source FROM core.entities "
                               "WHERE tenant_id = %s AND entity_id = ANY(%s) ORDER BY 1",
                       tenant.name, list(ids.values()))
    assert [row[1:] for row in entities] == [(None, None, "recorder"), ("kWh", "Wh->kWh", "recorder"),
                                             (None, None, "recorder"), ("W", "kW->W", "recorder"),
                                             ("°C", "degF->degC", "recorder")]
    (status, read, written, lettered), = imports_of(tenant)
    assert (status, read >= 20, written + lettered <= read) == ("complete", True, True)
    hour = ns(start) // (3_600 * 10**9)
    assert any(h for h, points, _ in hours_of(tenant) if int(h.timestamp()) // 3_600 == hour and points >= 20)

    before = (summary_of(tenant), hours_of(tenant), progress_of(tenant), letters_of(tenant))
    again = hats_import(tenant, live, "--no-statistics")
    assert again.returncode == 0, again.stderr
    assert (summary_of(tenant), hours_of(tenant), progress_of(tenant), letters_of(tenant)) == before
    assert imports_of(tenant)[-1][:3] == ("complete", 0, 0)


def kill_after_first_page(location: str, env: dict[str, str], tenant: Tenant) -> None:
    """Start `hats import` of `location`'s states and SIGKILL it once its first page is committed."""
    proc = subprocess.Popen([sys.executable, "-m", "devstack.cli", "import", location, "--no-statistics"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: progress_of(tenant) or proc.poll() is not None, "the first committed page", interval=0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_an_import_killed_midway_and_run_again_ends_as_one_clean_run(
        home_assistant: HaPeer, tenant: Tenant, profile: Profile, stack_env: dict[str, str], secrets: dict[str, str],
        tmp_path: Path) -> None:
    home_assistant.set_state(f"sensor.rec_{tenant.name}_kill", "1.5", {"unit_of_measurement": "kW"})
    copy = snapshot(home_assistant.config_dir / RECORDER, tmp_path / RECORDER)
    clean = hats_import(tenant, copy, "--no-statistics")
    assert clean.returncode == 0, clean.stderr

    other = new_tenant(profile, stack_env, secrets)
    total = progress_of(tenant)[0][4]
    page = str(max(1, total // KILL_PAGES))
    env = {**os.environ, **other.env, "HATS_BATCH_MAX_POINTS": page}
    kill_after_first_page(str(copy), env, other)
    assert 0 < progress_of(other)[0][4] < total, "the kill must come before the import has finished"
    assert imports_of(other)[0][0] == "running"

    rerun = hats_import(other, copy, "--no-statistics", HATS_BATCH_MAX_POINTS=page)
    assert rerun.returncode == 0, rerun.stderr
    assert [row[0] for row in imports_of(other)] == ["interrupted", "complete"]
    assert summary_of(other) == summary_of(tenant)
    assert progress_of(other) == progress_of(tenant)
    assert letters_of(other) == letters_of(tenant)
    # Hours are counted at least once (a page written but not committed when killed is counted again).
    assert [row[0] for row in hours_of(other)] == [row[0] for row in hours_of(tenant)]
    assert all(a[1] >= b[1] for a, b in zip(hours_of(other), hours_of(tenant), strict=True))


def nothing_written(tenant: Tenant) -> bool:
    return (imports_of(tenant) == [] and progress_of(tenant) == [] and hours_of(tenant) == []
            and letters_of(tenant) == [] and tenant.influx("SELECT count(*) FROM raw./.*/") == [])


def test_a_corrupted_file_and_an_old_schema_are_refused_before_anything_is_written(tenant: Tenant,
                                                                                   tmp_path: Path) -> None:
    good = create_recorder(tmp_path / "good.db", RecorderShape(entities=12, states_per_entity=400, step_s=10,
                                                                start_ts=datetime.now(UTC).timestamp() - 7_200))
    data = bytearray(good.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for offset in range(4 * page_size, len(data) - page_size, 3 * page_size):  # damage pages, keep the header
        data[offset + 8:offset + 200] = b"\xa5" * 192
    corrupted = tmp_path / "corrupted.db"
    corrupted.write_bytes(bytes(data))
    refused = hats_import(tenant, corrupted)
    assert refused.returncode == 1
    assert ("corrupted" in refused.stderr, "nothing was imported" in refused.stderr) == (True, True), refused.stderr

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all\n" * 200)
    refused = hats_import(tenant, garbage)
    assert (refused.returncode, "is not a readable SQLite database" in refused.stderr) == (1, True), refused.stderr

    old = create_recorder(tmp_path / "old.db", RecorderShape(entities=2, states_per_entity=3, start_ts=1.7e9,
                                                              schema_version=30))
    refused = hats_import(tenant, old)
    assert refused.returncode == 1
    assert "has recorder schema version 30; hats import reads version 38 or later" in refused.stderr, refused.stderr
    assert nothing_written(tenant)

    assert hats_import(tenant, good, "--no-statistics").returncode == 0  # the undamaged file imports
    assert not nothing_written(tenant)


def test_states_older_than_the_homes_raw_retention_are_left_to_the_statistics(tenant: Tenant,
                                                                               tmp_path: Path) -> None:
    """The cut is the home's own tier (`core.tenants.raw_days`), not a setting: a home that keeps 3 days of
    raw points gets as raw points exactly the states of its last 3 days less the 1 h margin."""
    raw_days, margin_s, spacing_s = 3, 3_600, 600  # states every 10 min (6 entities, hourly each)
    pg_rows(tenant, "UPDATE core.tenants SET raw_days = %s WHERE tenant_id = %s RETURNING 1", raw_days, tenant.name)
    started = datetime.now(UTC).timestamp()
    cut = started - raw_days * 86_400 + margin_s  # the import takes its cut a moment after this
    # Every state half a spacing away from the cut: the few seconds before the import reads the clock never
    # move the cut past one, so the count below is exact.
    start_ts = cut - 8 * 86_400 + spacing_s / 2
    shape = RecorderShape(entities=6, states_per_entity=9 * 24, step_s=3_600, start_ts=start_ts)
    path = create_recorder(tmp_path / "nine_days.db", shape)
    with sqlite3.connect(path) as conn:
        stamps = [row[0] for row in conn.execute("SELECT last_updated_ts FROM states")]
    done = hats_import(tenant, path, "--no-statistics")
    assert done.returncode == 0, done.stderr
    assert datetime.now(UTC).timestamp() - started < spacing_s / 2
    kept = sum(1 for ts in stamps if ts >= cut)
    assert 0 < kept < len(stamps)
    stored = sum(int(s["values"][0][1]) for s in tenant.influx("SELECT count(value) FROM raw./.*/"))
    assert stored == kept
    older = len(stamps) - kept
    assert f"{older:,} states older than the home's raw retention ({raw_days} d" in done.stdout + done.stderr


def test_cells_that_are_not_numbers_are_dead_letters_and_the_rest_imports(tenant: Tenant, tmp_path: Path) -> None:
    """A damaged recorder (SQLite keeps text or a blob in a REAL column): each such row is one dead letter
    naming the column, every other state and statistic is imported, and the run completes."""
    now = datetime.now(UTC).timestamp()
    path = create_recorder(tmp_path / "damaged.db", RecorderShape(entities=2, states_per_entity=20,
                                                                   start_ts=now - 7_200))
    first_hour = (now - 30 * 3_600) // 3_600 * 3_600
    statistic = f"sensor.rec_{tenant.name}_stat"
    add_hourly_means(path, statistic, "°C", first_hour, [20.0 + i / 4 for i in range(12)])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE states SET last_changed_ts = 'garbage' WHERE state_id = 3")
        conn.execute("UPDATE states SET last_updated_ts = 'yesterday' WHERE state_id = 5")
        conn.execute("UPDATE statistics SET mean = X'ff00' WHERE start_ts = ?", (first_hour + 4 * 3_600,))
        conn.execute("UPDATE statistics SET max = 'n/a' WHERE start_ts = ?", (first_hour + 7 * 3_600,))
        states_total = conn.execute("SELECT count(*) FROM states").fetchone()[0]
        entity_of = dict(conn.execute("SELECT s.state_id, m.entity_id FROM states s JOIN states_meta m "
                                      "ON m.metadata_id = s.metadata_id WHERE s.state_id IN (3, 5)").fetchall())

    done = hats_import(tenant, path)
    assert done.returncode == 0, done.stderr
    assert "complete:" in done.stderr, done.stderr
    letters = pg_rows(tenant, "SELECT topic, reason, detail FROM ops.dead_letters WHERE tenant_id = %s ORDER BY topic, "
                              "detail", tenant.name)
    assert [(topic, reason) for topic, reason, _ in letters] == sorted([
        *[(f"import:statistics:{statistic}", "non_numeric_value")] * 2,
        (f"recorder:state:{entity_of[3]}", "bad_timestamp"), (f"recorder:state:{entity_of[5]}", "bad_timestamp")])
    details = " | ".join(detail for _, _, detail in letters)
    for named in ("statistics.mean", "statistics.max", '"n/a"', "lc (last_changed)",
                  "lu (last_updated) is str"):
        assert named in details, (named, details)
    stored = sum(int(s["values"][0][1]) for s in tenant.influx("SELECT count(value) FROM raw./.*/"))
    assert stored == states_total - 2
    hours = tenant.influx(f"SELECT count(*) FROM rollup./.*_1h/ WHERE entity_id = '{statistic}'")
    assert max(count for s in hours for count in s["values"][0][1:]) == 12 - 2
