"""Home Assistant's long-term statistics imported from a real recorder (HA 2024.3 and 2025.4): from its
SQLite file and over its WebSocket API, every hourly row equal to HA's own `statistics_during_period`.

A year of hourly statistics is seeded with `recorder/import_statistics`: a °F measurement, a Wh meter with
a reset (and three rows from 800 days ago, beyond the 730-day rollup policy), a statistic in kWh for an
entity core.entities knows as a temperature (a dead letter), and an external one. The reference asks HA
for the same hours in our canonical units (`units`: °C, kWh), so HA's own converter checks ours.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from ingest_worker.contract import ROLLUP_RP
from ingest_worker.ha_client import HaClient, HaLinkSettings
from ingest_worker.importers.home_config import import_time_zone
from ingest_worker.importers.recorder_db import open_recorder
from ingest_worker.importers.statistics import Key, Page, StatisticsReader, StatisticsReport, import_statistics
from ingest_worker.importers.statistics_db import RecorderStatistics
from ingest_worker.importers.statistics_rows import Row, StatisticMeta
from ingest_worker.importers.statistics_ws import WebsocketStatistics
from ingest_worker.store.import_progress import Position
from ingest_worker.store.influx import InfluxWriter
from ingest_worker.tls import client_context
from tests.conftest import Tenant, wait_for
from tests.ha_peer import HaPeer

pytestmark = pytest.mark.integration

HOUR_S = 3_600
DAYS = 364
OLD_DAYS = 800  # beyond the test tenants' 730-day rollup policy
RETENTION_S = 730 * 86_400
RESET_AT = 5_000  # index of the meter's reset hour in the year


@dataclass(frozen=True)
class Seeded:
    temp: str
    energy: str
    bad: str
    external: str
    first: float  # start of the year's first hour
    reset: float
    old: tuple[float, ...]
    hours: int


def _ha_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


@pytest.fixture(scope="module")
def seeded(home_assistant: HaPeer) -> Seeded:
    tag = uuid.uuid4().hex[:8]
    last = (time.time() // HOUR_S - 2) * HOUR_S
    hours = DAYS * 24
    first = last - (hours - 1) * HOUR_S
    ids = Seeded(f"sensor.stats_{tag}_temp", f"sensor.stats_{tag}_energy", f"sensor.stats_{tag}_bad",
                 f"stats{tag}:cost", first, first + RESET_AT * HOUR_S,
                 tuple(first - OLD_DAYS * 86_400 + i * HOUR_S for i in range(3)), hours)
    temps = []
    for i in range(hours):
        mean = 50.0 + 20.0 * math.sin(i / 24 * 2 * math.pi) + i * 0.001
        temps.append({"start": _ha_time(first + i * HOUR_S), "mean": mean, "min": mean - 3.25, "max": mean + 4.5})
    meter = [{"start": _ha_time(start), "state": 1_000.0 + 100 * i, "sum": 100.0 * i}
             for i, start in enumerate(ids.old)]
    reading, total = 1_200.0, 200.0
    for i in range(hours):
        step = 150.0 + (i * 37) % 200
        reading = step if i == RESET_AT else reading + step  # the meter restarts from 0
        total += step
        row: dict[str, Any] = {"start": _ha_time(first + i * HOUR_S), "state": reading, "sum": total}
        if i >= RESET_AT:
            row["last_reset"] = _ha_time(ids.reset)
        meter.append(row)
    bad = [{"start": _ha_time(first + i * HOUR_S), "mean": 1.0, "min": 0.5, "max": 2.0} for i in range(24)]
    cost = [{"start": _ha_time(first + i * HOUR_S), "state": float(i), "sum": float(i)} for i in range(24)]
    for statistic_id, unit, has_mean, stats, source in (
            (ids.temp, "°F", True, temps, "recorder"), (ids.energy, "Wh", False, meter, "recorder"),
            (ids.bad, "kWh", True, bad, "recorder"), (ids.external, "EUR", False, cost, f"stats{tag}")):
        home_assistant.ws_call("recorder/import_statistics", metadata={
            "has_mean": has_mean, "has_sum": not has_mean, "name": None, "source": source,
            "statistic_id": statistic_id, "unit_of_measurement": unit}, stats=stats)
    expected = {ids.temp: hours, ids.energy: hours + 3, ids.bad: 24, ids.external: 24}

    def imported() -> bool:
        found = home_assistant.ws_call("recorder/statistics_during_period", start_time=_ha_time(ids.old[0]),
                                       statistic_ids=list(expected), period="hour", types=["sum", "mean"])
        return {k: len(v) for k, v in found.items()} == expected
    wait_for(imported, "Home Assistant's recorder to hold the imported statistics", timeout=120)
    return ids


def reference(ha: HaPeer, seeded: Seeded) -> dict[str, dict[int, dict[str, Any]]]:
    """HA's own hours, in canonical units, by start (ns), within the rollup policy."""
    answer = ha.ws_call("recorder/statistics_during_period", start_time=_ha_time(seeded.old[0]),
                        statistic_ids=[seeded.temp, seeded.energy], period="hour",
                        units={"temperature": "°C", "energy": "kWh"},
                        types=["mean", "min", "max", "change", "state", "sum", "last_reset"])
    cutoff = time.time() - RETENTION_S
    return {statistic_id: {int(row["start"]) * 1_000_000: row for row in rows if row["start"] / 1_000 >= cutoff}
            for statistic_id, rows in answer.items()}


def influx_rows(tenant: Tenant, measurement: str, entity_id: str) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for series in tenant.influx(f"SELECT * FROM \"{ROLLUP_RP}\".\"{measurement}\" WHERE entity_id = '{entity_id}'"):
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=True))
            found[int(row.pop("time"))] = row
    return found


def assert_equals_home_assistant(tenant: Tenant, ha: HaPeer, seeded: Seeded) -> None:
    ref = reference(ha, seeded)
    gauges = influx_rows(tenant, "imported_gauge_1h", seeded.temp)
    assert set(gauges) == set(ref[seeded.temp])
    assert len(gauges) == seeded.hours
    for at, row in ref[seeded.temp].items():
        got = gauges[at]
        assert [got["mean"], got["min"], got["max"]] == pytest.approx([row["mean"], row["min"], row["max"]], rel=1e-9)
        assert (got["count"], got["available_s"], got["quantity"]) == (0, 3600.0, "temperature")
    meters = influx_rows(tenant, "imported_counter_1h", seeded.energy)
    assert set(meters) == set(ref[seeded.energy])
    assert len(meters) == seeded.hours  # the three old rows are beyond the policy
    for at, row in ref[seeded.energy].items():
        got = meters[at]
        assert [got["consumption"], got["last"], got["sum"]] == pytest.approx(
            [row["change"], row["state"], row["sum"]], rel=1e-9, abs=1e-9)
        assert got["resets"] == (1 if at == int(seeded.reset) * 1_000_000_000 else 0)
        assert got["quantity"] == "energy"
    for measurement in ("imported_gauge_1h", "imported_counter_1h"):
        assert influx_rows(tenant, measurement, seeded.bad) == {}
        assert influx_rows(tenant, measurement, seeded.external) == {}


class Counting:
    """A reader that counts the rows it hands over per statistic, and can stop after some pages."""

    def __init__(self, inner: StatisticsReader, stop_after_pages: int | None = None) -> None:
        self.inner = inner
        self.stop_after = stop_after_pages
        self.rows: dict[Key, int] = {}
        self.metas_by_key: dict[Key, str] = {}

    async def metas(self) -> Sequence[StatisticMeta]:
        metas = await self.inner.metas()
        self.metas_by_key = {meta.key: meta.statistic_id for meta in metas}
        return metas

    async def pages(self, stream: str, after: Position | None) -> AsyncIterator[Page]:
        served = 0
        async for page in self.inner.pages(stream, after):
            if self.stop_after is not None and served == self.stop_after:
                return  # the run ends here, as an interrupted one would: the next one resumes
            for key, _ in page.rows:
                self.rows[key] = self.rows.get(key, 0) + 1
            served += 1
            yield page

    async def previous(self, stream: str, key: Key, before_ts: float) -> Row | None:
        return await self.inner.previous(stream, key, before_ts)

    def of(self, statistic_id: str) -> int:
        return sum(n for key, n in self.rows.items() if self.metas_by_key.get(key) == statistic_id)


async def run_import(tenant: Tenant, reader: StatisticsReader, source_key: str,
                     retention_s: float | None) -> StatisticsReport:
    env = tenant.env
    influx = InfluxWriter(env["HATS_INFLUX_WRITE_URL"], tenant.database, env["HATS_INFLUX_USERNAME"],
                          env["HATS_INFLUX_PASSWORD"], 30.0, rp=ROLLUP_RP,
                          verify=client_context(env["HATS_INFLUX_CA_FILE"]))
    conn = await psycopg.AsyncConnection.connect(env["HATS_INGEST_DSN"], autocommit=True)
    try:
        return await import_statistics(conn, influx, tenant.name, source_key, reader, retention_s=retention_s,
                                       streams=("statistics",))
    finally:
        await influx.aclose()
        await conn.close()


def know_bad_as_temperature(tenant: Tenant, seeded: Seeded) -> None:
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, device_class, "
                     "unit_original, unit_canonical, source) VALUES (%s, %s, 'sensor', 'temperature', "
                     "'temperature', '°C', '°C', 'eventstream')", (tenant.name, seeded.bad))


def dead_letters(tenant: Tenant, seeded: Seeded) -> list[tuple[str, str]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        rows = conn.execute("SELECT topic, reason FROM ops.dead_letters WHERE tenant_id = %s AND topic LIKE %s",
                            (tenant.name, f"%{seeded.bad}")).fetchall()
    return [(str(topic), str(reason)) for topic, reason in rows]


def rows_older_than(recorder: Any, cutoff: float) -> int:
    """The recorder's own count (a session's HA keeps its database: earlier sessions' seeds are in it)."""
    return int(recorder.qmark("SELECT count(*) FROM statistics WHERE start_ts < ?", (cutoff,))[0][0])


@pytest.fixture
def recorder(home_assistant: HaPeer) -> Iterator[Any]:
    with open_recorder(str(home_assistant.config_dir / "home-assistant_v2.db")) as opened:
        yield opened


def test_sqlite_import_equals_home_assistants_statistics_resumes_and_is_idempotent(
        tenant: Tenant, home_assistant: HaPeer, seeded: Seeded, recorder: Any) -> None:
    know_bad_as_temperature(tenant, seeded)
    stopped = Counting(RecorderStatistics(recorder.qmark, recorder.schema_version, page_rows=2_000), 3)
    first = asyncio.run(run_import(tenant, stopped, recorder.source_key, None))
    assert 0 < stopped.of(seeded.energy) < seeded.hours  # stopped inside the series: the resume needs its carry
    # InfluxDB's answer, counted, not dead letters: our three old rows, and those of earlier sessions
    assert first.streams["statistics"].beyond_retention == rows_older_than(recorder, time.time() - RETENTION_S)
    assert seeded.external in first.external_statistics
    assert first.hours_from is not None
    assert first.hours_from.timestamp() <= seeded.first
    rest = Counting(RecorderStatistics(recorder.qmark, recorder.schema_version, page_rows=2_000))
    report = asyncio.run(run_import(tenant, rest, recorder.source_key, None))
    assert stopped.of(seeded.energy) + rest.of(seeded.energy) == seeded.hours + 3  # each row read once
    assert report.hours_to is not None
    assert report.hours_to.timestamp() >= seeded.first + seeded.hours * HOUR_S
    assert_equals_home_assistant(tenant, home_assistant, seeded)
    assert dead_letters(tenant, seeded) == [(f"import:statistics:{seeded.bad}", "unconvertible_unit")]
    before = {m: influx_rows(tenant, m, e) for m, e in before_keys(seeded)}
    again = Counting(RecorderStatistics(recorder.qmark, recorder.schema_version))
    asyncio.run(run_import(tenant, again, recorder.source_key, None))
    assert [again.of(s) for s in (seeded.temp, seeded.energy, seeded.bad, seeded.external)] == [0, 0, 0, 0]
    assert {m: influx_rows(tenant, m, e) for m, e in before_keys(seeded)} == before
    assert len(dead_letters(tenant, seeded)) == 1


def before_keys(seeded: Seeded) -> list[tuple[str, str]]:
    return [("imported_gauge_1h", seeded.temp), ("imported_counter_1h", seeded.energy)]


def test_websocket_import_gives_the_same_rows_and_stores_the_time_zone(
        tenant: Tenant, home_assistant: HaPeer, seeded: Seeded, recorder: Any) -> None:
    know_bad_as_temperature(tenant, seeded)
    ha_zone = home_assistant.ws_call("get_config")["time_zone"]

    async def run() -> StatisticsReport:
        async with HaClient(HaLinkSettings(home_assistant.url, home_assistant.token)) as ha:
            conn = await psycopg.AsyncConnection.connect(tenant.env["HATS_INGEST_DSN"], autocommit=True)
            try:
                assert await import_time_zone(ha, conn, tenant.name) == ha_zone
            finally:
                await conn.close()
            return await run_import(tenant, WebsocketStatistics(ha), f"websocket-{tenant.name}", RETENTION_S)

    report = asyncio.run(run())
    older = rows_older_than(recorder, time.time() - RETENTION_S)
    assert older >= 3
    assert report.streams["statistics"].beyond_retention == older  # not sent: older than the policy
    assert_equals_home_assistant(tenant, home_assistant, seeded)
    assert dead_letters(tenant, seeded) == [(f"import:statistics:{seeded.bad}", "unconvertible_unit")]
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        zone = conn.execute("SELECT time_zone, time_zone_source FROM core.tenants WHERE tenant_id = %s",
                            (tenant.name,)).fetchone()
    assert zone == (ha_zone, "home_assistant")
