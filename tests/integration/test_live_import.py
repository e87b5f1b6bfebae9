"""`hats import http://host:8123`: a real, running Home Assistant (2024.3 and 2025.4) imported over its
WebSocket API, without its database file.

The reference is Home Assistant's own REST history (`/api/history/period`, a different API from the one
the import reads): every state it reports is one raw point at its exact `last_updated`, and the same
points come from importing HA's SQLite file. A second run (through the `ws://…/api/websocket` form of
the address) changes nothing of the test's entities and dead-letters nothing twice; a run killed
(SIGKILL) after its first committed page and run again ends as one clean run; a wrong or missing token
is a settings error naming HATS_HA_TOKEN with nothing written; a full run stores the home's time zone and
imports the statistics equal to HA's statistics_during_period. Only the test's own entities are compared:
the session's HA follows MQTT discovery on the shared broker, where other sessions add entities.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack.profile import Profile
from tests.conftest import Tenant, new_tenant, wait_for
from tests.ha_peer import HaPeer
from tests.integration.test_recorder_import import (
    KINDS,
    RECORDER,
    entity_ids,
    expected_points,
    hats_import,
    hours_of,
    imports_of,
    kill_after_first_page,
    letters_of,
    nothing_written,
    progress_of,
    stored_points,
    summary_of,
)
from tests.integration.test_statistics_import import influx_rows
from tests.integration.test_worker_formats import pg_rows

pytestmark = pytest.mark.integration

HOUR_S = 3_600
KILL_STATES = 60  # states of one entity for the killed run's pages (one instant per page)


def live_import(ha: HaPeer, tenant: Tenant, *args: str, location: str | None = None,
                **env: str) -> subprocess.CompletedProcess[str]:
    return hats_import(tenant, location or ha.url, *args, **{"HATS_HA_TOKEN": ha.token, **env})


def own(rows: list[tuple[Any, ...]], owner: Tenant, at: int) -> list[tuple[Any, ...]]:
    """The rows about the test's own entities (`sensor.rec_<owner>_…`): the session's Home Assistant also
    follows MQTT discovery on the shared broker, so other sessions' entities come and go in it."""
    return [row for row in rows if f"rec_{owner.name}_" in str(row[at])]


def letter_reasons(tenant: Tenant) -> list[tuple[str, str]]:
    """(entity, reason) of each dead letter: the topic's prefix names the source, which differs."""
    return sorted((str(topic).rsplit(":", 1)[-1], str(reason)) for topic, _, reason in letters_of(tenant))


def set_bad(ha: HaPeer, entity: str) -> None:
    """Two states a unit declares numeric that are not numbers: two dead letters wherever they come from."""
    for state in ("n/a", "error"):
        ha.set_state(entity, state, {"unit_of_measurement": "kW"})


def test_every_state_of_the_live_history_is_one_raw_point_as_from_the_file_and_a_second_run_changes_nothing(
        home_assistant: HaPeer, tenant: Tenant, profile: Profile, stack_env: dict[str, str],
        secrets: dict[str, str]) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    ids = entity_ids(tenant)
    for step in range(4):
        for kind, entity in ids.items():
            attributes, states, _ = KINDS[kind]
            home_assistant.set_state(entity, states[step], {**attributes, "friendly_name": f"{kind} {step}"})
    bad = f"sensor.rec_{tenant.name}_bad"
    set_bad(home_assistant, bad)
    expected = wait_for(lambda: (found := expected_points(home_assistant, tenant, start))
                        and all(len(points) == 4 for points in found.values())
                        and len(home_assistant.history([bad], start, datetime.now(UTC))[bad]) == 2 and found,
                        "HA's history to show every state")

    done = live_import(home_assistant, tenant, "--no-statistics")
    assert done.returncode == 0, done.stderr
    assert "complete:" in done.stderr, done.stderr
    assert f"Home Assistant {home_assistant.version}" in done.stderr
    for entity in ids.values():
        measurements, stored = stored_points(tenant, entity)
        assert len(measurements) == 1, f"{entity} in {measurements}"
        assert sorted(stored) == sorted(expected[entity]), entity  # every state once, exact time, nothing else
    entities = pg_rows(tenant, "SELECT entity_id, unit_canonical, conversion, source FROM core.entities "
                               "WHERE tenant_id = %s AND entity_id = ANY(%s) ORDER BY 1",
                       tenant.name, list(ids.values()))
    assert [row[1:] for row in entities] == [(None, None, "websocket"), ("kWh", "Wh->kWh", "websocket"),
                                             (None, None, "websocket"), ("W", "kW->W", "websocket"),
                                             ("°C", "degF->degC", "websocket")]
    assert [r for r in letter_reasons(tenant) if r[0] == bad] == [(bad, "non_numeric_value")] * 2
    (kind, source, key, status), = pg_rows(tenant, "SELECT source_kind, source, source_key, status FROM ops.imports "
                                                   "WHERE tenant_id = %s", tenant.name)
    assert (kind, source, key.startswith("websocket-"), status) == ("websocket", home_assistant.url, True, "complete")

    from_file = new_tenant(profile, stack_env, secrets)
    filed = hats_import(from_file, home_assistant.config_dir / RECORDER, "--no-statistics")
    assert filed.returncode == 0, filed.stderr
    for entity in ids.values():
        live_measurements, live_points = stored_points(tenant, entity)
        file_measurements, file_points = stored_points(from_file, entity)
        assert (live_measurements, sorted(live_points)) == (file_measurements, sorted(file_points)), entity
    assert [r for r in letter_reasons(from_file) if r[0] == bad] == [(bad, "non_numeric_value")] * 2

    before = (own(summary_of(tenant), tenant, 1), letters_of(tenant), progress_of(tenant))
    again = live_import(home_assistant, tenant, "--no-statistics",
                        location=home_assistant.url.replace("http://", "ws://", 1) + "/api/websocket")
    assert again.returncode == 0, again.stderr
    assert (own(summary_of(tenant), tenant, 1), letters_of(tenant)) == before[:2]  # nothing read twice
    (_, _, last_ts, _, rows_done), = progress_of(tenant)
    assert last_ts >= before[2][0][2]
    assert imports_of(tenant)[-1][:2] == ("complete", rows_done - before[2][0][4])  # only what HA added since


def test_a_live_import_killed_midway_and_run_again_ends_as_one_clean_run(
        home_assistant: HaPeer, tenant: Tenant, profile: Profile, stack_env: dict[str, str],
        secrets: dict[str, str]) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    entity = f"sensor.rec_{tenant.name}_kill"
    for step in range(KILL_STATES):
        home_assistant.set_state(entity, str(step / 4), {"unit_of_measurement": "kW"})
    set_bad(home_assistant, f"sensor.rec_{tenant.name}_bad")
    wait_for(lambda: len(home_assistant.history([entity], start, datetime.now(UTC))[entity]) == KILL_STATES,
             "HA's history to show every state")
    clean = live_import(home_assistant, tenant, "--no-statistics")
    assert clean.returncode == 0, clean.stderr
    total = progress_of(tenant)[0][4]
    assert total >= KILL_STATES + 2

    other = new_tenant(profile, stack_env, secrets)
    env = {**os.environ, **other.env, "HATS_HA_TOKEN": home_assistant.token, "HATS_BATCH_MAX_POINTS": "1"}
    kill_after_first_page(home_assistant.url, env, other)
    at_kill = progress_of(other)[0][4]
    assert 0 < at_kill < total, "the kill must come before the import has finished"
    assert imports_of(other)[0][0] == "running"

    rerun = live_import(home_assistant, other, "--no-statistics", HATS_BATCH_MAX_POINTS="7")
    assert rerun.returncode == 0, rerun.stderr
    assert [row[0] for row in imports_of(other)] == ["interrupted", "complete"]
    assert own(summary_of(other), tenant, 1) == own(summary_of(tenant), tenant, 1)
    assert len(stored_points(other, entity)[1]) == KILL_STATES
    assert own(letters_of(other), tenant, 0) == own(letters_of(tenant), tenant, 0)  # dead letters exactly once
    assert len(own(letters_of(other), tenant, 0)) == 2
    # every row read once: the killed run's committed pages, then the rest
    assert progress_of(other)[0][4] == at_kill + imports_of(other)[1][1]
    assert progress_of(other)[0][2] >= progress_of(tenant)[0][2]
    # Hours are counted at least once (a page written but not committed when killed is counted again).
    clean_hours = {row[0]: row[1] for row in hours_of(tenant)}
    assert all(points >= clean_hours.get(hour, 0) for hour, points, _ in hours_of(other))


def _ha_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def seed_meter(ha: HaPeer) -> tuple[str, float]:
    """A day of hourly statistics of a kWh meter, through HA's own recorder/import_statistics."""
    statistic_id = f"sensor.live_{uuid.uuid4().hex[:8]}_energy"
    first = (time.time() // HOUR_S - 30) * HOUR_S
    stats = [{"start": _ha_time(first + i * HOUR_S), "state": 100.0 + 1.5 * i * i, "sum": 1.5 * i * i}
             for i in range(24)]
    ha.ws_call("recorder/import_statistics", metadata={
        "has_mean": False, "has_sum": True, "name": None, "source": "recorder", "statistic_id": statistic_id,
        "unit_of_measurement": "kWh"}, stats=stats)
    wait_for(lambda: len(ha.ws_call("recorder/statistics_during_period", start_time=_ha_time(first),
                                    statistic_ids=[statistic_id], period="hour",
                                    types=["sum"]).get(statistic_id, [])) == 24,
             "Home Assistant's recorder to hold the imported statistics", timeout=120)
    return statistic_id, first


def test_a_wrong_token_writes_nothing_and_a_full_run_stores_the_time_zone_and_the_statistics(
        home_assistant: HaPeer, tenant: Tenant) -> None:
    for token in ("not-a-valid-token", ""):
        refused = live_import(home_assistant, tenant, HATS_HA_TOKEN=token)
        assert refused.returncode == 2, refused.stderr
        assert "HATS_HA_TOKEN" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert "refused the access token" in live_import(home_assistant, tenant, HATS_HA_TOKEN="wrong").stderr
    assert nothing_written(tenant)
    assert pg_rows(tenant, "SELECT time_zone_source FROM core.tenants WHERE tenant_id = %s",
                   tenant.name) == [("default",)]

    statistic_id, first = seed_meter(home_assistant)
    zone = home_assistant.ws_call("get_config")["time_zone"]
    done = live_import(home_assistant, tenant)  # states and statistics
    assert done.returncode == 0, done.stderr
    assert "statistics:" in done.stderr, done.stderr
    assert pg_rows(tenant, "SELECT time_zone, time_zone_source FROM core.tenants WHERE tenant_id = %s",
                   tenant.name) == [(zone, "home_assistant")]
    reference = home_assistant.ws_call("recorder/statistics_during_period", start_time=_ha_time(first),
                                       statistic_ids=[statistic_id], period="hour",
                                       types=["change", "state", "sum"])[statistic_id]
    meters = influx_rows(tenant, "imported_counter_1h", statistic_id)
    assert sorted(meters) == [int(row["start"]) * 1_000_000 for row in reference]
    for row in reference:
        got: dict[str, Any] = meters[int(row["start"]) * 1_000_000]
        assert [got["consumption"], got["last"], got["sum"]] == pytest.approx(
            [row["change"], row["state"], row["sum"]], rel=1e-9, abs=1e-9)
    (kind, status, statistic_rows), = pg_rows(tenant, "SELECT source_kind, status, statistic_rows FROM ops.imports "
                                                      "WHERE tenant_id = %s", tenant.name)
    assert (kind, status, statistic_rows >= 24) == ("websocket", "complete", True)
