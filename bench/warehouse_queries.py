"""Warehouse queries: the analyst views over 12 months of hourly rollups for 1,000 entities, in one run.

Loads 365 days (ending at the last complete UTC day) x 24 hours x 1,000 entities = 8.76 M rows into
``analytics.hourly_rollup`` as the loader role (binary COPY of numpy-generated rows, month partitions
made with the loader's own ``month_partition``), builds ``daily_rollup`` with the loader's
``daily_from_hourly.sql``, vacuums and analyzes both. Then, as the analyst role and through the views
only, times each analyst query (random day / entity / month, fixed seed) twice per run, interleaved:
ours (partition pruning on, the default) and the baseline (the same query on the same data with
``SET enable_partition_pruning = off``, i.e. what the partitioned layout would cost without pruning).
Finally it checks with EXPLAIN (ANALYZE, BUFFERS) that each query touches only the partitions its
period needs, and prints PASS/FAIL against the p95 target (exit status 1 on any FAIL).

Usage: .venv/bin/python bench/warehouse_queries.py [--days 365] [--runs 200] [--keep] [--reuse] [--clean]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import stack  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from hats_assets.defs.warehouse.assets import (  # noqa: E402
    COMPUTED,
    DAILY_FROM_HOURLY,
    HOURLY_COLUMNS,
)
from hats_assets.defs.warehouse.tables import month_partition  # noqa: E402

TENANT = "bench_wh"
BENCH_COMMENT = f"created by bench/warehouse_queries.py for tenant {TENANT}; it drops this partition when empty"
TARGET_P95_MS = 20.0
SLOW_INFO_MS = 100.0
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
ORIGIN = COMPUTED.encode()  # analytics.hourly_rollup.origin (0009): these rows stand for our rollups
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def progress(message: str) -> None:
    print(f"  - {message}", file=sys.stderr, flush=True)


# -- the tenant's catalogue: 250 devices, 1,000 entities ------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """How a gauge behaves: level across entities, daily and yearly swing, noise, points per hour."""

    base: float
    base_sd: float
    daily: float
    season: float
    noise: float
    spread: float
    rate: float
    lo: float
    hi: float
    peak_hour: float = 15.0


PROFILES = {
    "indoor_temperature": Profile(21.0, 1.5, 1.0, 1.5, 0.3, 0.4, 12, -40, 60),
    "outdoor_temperature": Profile(11.0, 2.0, 4.0, 8.0, 0.8, 0.8, 12, -40, 60),
    "humidity": Profile(48.0, 6.0, 5.0, 10.0, 2.0, 2.0, 12, 0, 100, peak_hour=5),
    "pressure": Profile(1013.0, 3.0, 0.5, 4.0, 3.0, 0.5, 6, 900, 1100),
    "voltage": Profile(230.0, 2.0, 1.5, 0.0, 0.8, 1.5, 60, 200, 250, peak_hour=4),
    "plug_power": Profile(40.0, 30.0, 30.0, 5.0, 10.0, 50.0, 120, 0, 3600, peak_hour=19),
    "derived_power": Profile(400.0, 150.0, 250.0, 80.0, 60.0, 200.0, 60, 0, 20000, peak_hour=19),
    "carbon_dioxide": Profile(600.0, 80.0, 250.0, 50.0, 40.0, 80.0, 12, 350, 5000, peak_hour=21),
    "illuminance": Profile(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30, 0, 100000),  # daylight curve, see gauge_block
    "battery": Profile(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1, 0, 100),  # slow discharge, see gauge_block
}


@dataclass(frozen=True)
class Entity:
    entity_id: str
    device_id: str | None
    measurement: str
    unit: str
    device_class: str
    state_class: str
    profile: str  # a PROFILES key, or "energy" for the kWh meters
    friendly_name: str

    @property
    def kind(self) -> str:
        return "counter" if self.profile == "energy" else "gauge"


@dataclass(frozen=True)
class Device:
    device_id: str
    name: str
    manufacturer: str
    model: str


def catalogue() -> tuple[list[Device], list[Entity]]:
    """150 smart plugs (power, voltage, energy), 100 climate sensors (temperature, humidity, battery,
    illuminance or pressure) and 150 entities without a device (CO2, weather temperature, derived power):
    850 gauges and 150 kWh meters (state_class total_increasing)."""
    devices: list[Device] = []
    entities: list[Entity] = []

    def add(device: Device | None, name: str, measurement: str, unit: str, profile: str,
            state_class: str = "measurement") -> None:
        suffix = {"carbon_dioxide": "co2"}.get(measurement, measurement)
        entities.append(Entity(f"sensor.{name}_{suffix}", device.device_id if device else None, measurement, unit,
                               measurement, state_class, profile, f"{name} {suffix.capitalize()}"))

    for i in range(150):
        plug = Device(f"zigbee2mqtt_0x{0xa4c1380000000000 + i:016x}", f"plug_{i:05d}", "TuYa",
                      "Smart plug (TS011F_plug_1)")
        devices.append(plug)
        add(plug, plug.name, "power", "W", "plug_power")
        add(plug, plug.name, "voltage", "V", "voltage")
        add(plug, plug.name, "energy", "kWh", "energy", "total_increasing")
    for i in range(100):
        sensor = Device(f"zigbee2mqtt_0x{0x00124b0000000000 + i:016x}", f"climate_{i:05d}", "SONOFF",
                        "Temperature and humidity sensor (SNZB-02)")
        devices.append(sensor)
        add(sensor, sensor.name, "temperature", "°C", "indoor_temperature")
        add(sensor, sensor.name, "humidity", "%", "humidity")
        add(sensor, sensor.name, "battery", "%", "battery")
        if i % 2:
            add(sensor, sensor.name, "pressure", "hPa", "pressure")
        else:
            add(sensor, sensor.name, "illuminance", "lx", "illuminance")
    for i in range(50):
        add(None, f"room_{i:05d}", "carbon_dioxide", "ppm", "carbon_dioxide")
        add(None, f"weather_{i:05d}", "temperature", "°C", "outdoor_temperature")
        add(None, f"derived_{i:05d}", "power", "W", "derived_power")
    return devices, entities


# -- row generation: binary COPY records built with numpy, one dtype per group of same-width rows ----------
def _field(name: str, dtype: str | None) -> list[tuple[str, str]]:
    """A COPY BINARY field: its int32 length, then the value (absent when NULL)."""
    return [(f"{name}_len", ">i4")] + ([(name, dtype)] if dtype else [])


@dataclass
class Group:
    """Entities of one kind, quantity and profile whose entity ids have the same length: one fixed-size record."""

    kind: str
    quantity: str
    entities: list[Entity]
    rng: np.random.Generator
    dtype: np.dtype[Any] = field(init=False)
    params: dict[str, NDArray[np.float64]] = field(init=False)
    meter: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        width = len(self.entities[0].entity_id)
        gauge = self.kind == "gauge"
        f8 = ">f8"
        spec: list[tuple[str, str]] = [("fields", ">i2")]
        for name, dtype in (
                ("tenant_id", f"S{len(TENANT)}"), ("entity_id", f"S{width}"),
                ("quantity", f"S{len(self.quantity.encode())}"), ("kind", f"S{len(self.kind)}"), ("hour", ">i8"),
                ("mean", f8 if gauge else None), ("min", f8 if gauge else None), ("max", f8 if gauge else None),
                ("count", ">i8"), ("last", f8), ("available_s", f8), ("value_s", f8 if gauge else None),
                ("consumption", None if gauge else f8), ("resets", None if gauge else ">i4"), ("last_seen", ">i8"),
                ("origin", f"S{len(ORIGIN)}")):
            spec += _field(name, dtype)
        assert [name.removesuffix("_len") for name, _ in spec if name.endswith("_len")] == list(HOURLY_COLUMNS)
        self.dtype = np.dtype(spec)
        n = len(self.entities)
        self.params = {
            "offset": self.rng.normal(0.0, 1.0, n),
            "phase": self.rng.normal(0.0, 1.0, n),
            "scale": self.rng.uniform(0.5, 1.5, n),
        }
        # kWh meters: a reading that started somewhere, rising by a per-meter base load
        self.meter = self.rng.uniform(100.0, 20_000.0, n)

    def records(self, start: datetime, hours: int) -> NDArray[Any]:
        """Records for `hours` hours from `start`, shape (entities, hours)."""
        n = len(self.entities)
        rec = np.zeros((n, hours), dtype=self.dtype)
        rec["fields"] = len(HOURLY_COLUMNS)
        for name in self.dtype.names or ():
            if name.endswith("_len"):
                value = name.removesuffix("_len")
                rec[name] = self.dtype[value].itemsize if value in (self.dtype.names or ()) else -1
        rec["tenant_id"] = TENANT.encode()
        rec["entity_id"] = np.array([e.entity_id.encode() for e in self.entities])[:, None]
        rec["quantity"] = self.quantity.encode()
        rec["kind"] = self.kind.encode()
        rec["origin"] = ORIGIN
        first = int((start - PG_EPOCH).total_seconds()) * 1_000_000
        hour_us = first + np.arange(hours, dtype=np.int64) * HOUR_US
        rec["hour"] = hour_us[None, :]
        rec["last_seen"] = hour_us[None, :] + self.rng.integers(3_000_000_000, HOUR_US, (n, hours))
        available = np.full((n, hours), 3600.0)
        partial = self.rng.random((n, hours)) < 0.015  # 1.5 % of hours: the entity was unavailable a while
        available[partial] = self.rng.uniform(300.0, 3600.0, int(partial.sum()))
        rec["available_s"] = available
        hour_of_day = (np.arange(hours) + start.hour) % 24
        day_of_year = (start.timetuple().tm_yday + (np.arange(hours) + start.hour) // 24) % 365.25
        if self.kind == "gauge":
            self.gauge_block(rec, hours, hour_of_day, day_of_year, available)
        else:
            self.counter_block(rec, hours, hour_of_day)
        return rec

    def gauge_block(self, rec: NDArray[Any], hours: int, hour_of_day: NDArray[Any], day_of_year: NDArray[Any],
                    available: NDArray[np.float64]) -> None:
        n, p, rng = len(self.entities), PROFILES[self.entities[0].profile], self.rng
        offset, phase, scale = (self.params[k][:, None] for k in ("offset", "phase", "scale"))
        season = np.cos(2 * np.pi * (day_of_year - 200) / 365.25)[None, :]
        if self.quantity == "battery":  # discharges 0.05-0.2 %/day, replaced at 20 %
            days = (rec["hour"] // HOUR_US / 24.0).astype(np.float64)
            mean = 100.0 - np.mod(40 * (offset + 2) + 0.125 * scale * days, 80.0)
            spread = np.zeros((n, hours))
        elif self.quantity == "illuminance":  # daylight, longer and brighter in summer, 200-2000 lx peak
            daylight = np.clip(np.sin(np.pi * (hour_of_day[None, :] - 6 + season) / (12 + 2 * season)), 0, None)
            mean = daylight * 1000 * scale * (1 + 0.4 * season) * rng.lognormal(0, 0.3, (n, hours))
            spread = mean * 0.3
        else:
            daily = np.sin(2 * np.pi * (hour_of_day[None, :] - p.peak_hour + 6 + phase) / 24)
            mean = (p.base + p.base_sd * offset + p.daily * scale * daily + p.season * season
                    + rng.normal(0.0, p.noise, (n, hours)))
            spread = np.abs(rng.normal(0.0, p.spread, (n, hours)))
        low = np.clip(mean - spread * rng.random((n, hours)), p.lo, p.hi)
        high = np.clip(mean + spread * rng.random((n, hours)), p.lo, p.hi)
        mean = np.clip(mean, p.lo, p.hi)
        rec["mean"], rec["min"], rec["max"] = mean, low, high
        rec["last"] = low + (high - low) * rng.random((n, hours))
        rec["count"] = rng.poisson(p.rate, (n, hours)) + 1
        rec["value_s"] = mean * available

    def counter_block(self, rec: NDArray[Any], hours: int, hour_of_day: NDArray[Any]) -> None:
        n, rng = len(self.entities), self.rng
        load = 0.01 + 0.15 * self.params["scale"][:, None] ** 3  # kWh per hour: 0.03-0.5 on average
        profile = 1 + 0.6 * np.sin(2 * np.pi * (hour_of_day[None, :] - 13) / 24)
        consumption = load * profile * rng.lognormal(0, 0.4, (n, hours))
        reset = rng.random((n, hours)) < 2e-4  # about 1.75 meter resets per meter and year
        total = np.cumsum(consumption, axis=1)
        index = np.where(reset, np.arange(hours)[None, :], -1)
        last_reset = np.maximum.accumulate(index, axis=1)
        before = np.take_along_axis(total, np.clip(last_reset - 1, 0, None), axis=1)
        before = np.where(last_reset > 0, before, 0.0)
        reading = np.where(last_reset >= 0, total - before, self.meter[:, None] + total)
        self.meter = reading[:, -1].copy()
        rec["consumption"], rec["last"], rec["resets"] = consumption, reading, reset.astype(np.int32)
        rec["count"] = rng.poisson(60, (n, hours)) + 1


def groups_for(entities: Sequence[Entity], seed: int) -> list[Group]:
    keyed: dict[tuple[str, str, str, int], list[Entity]] = {}
    for e in entities:
        keyed.setdefault((e.kind, e.measurement, e.profile, len(e.entity_id)), []).append(e)
    rng = np.random.default_rng(seed)
    return [Group(kind, quantity, members, np.random.default_rng(rng.integers(1 << 32)))
            for (kind, quantity, _, _), members in keyed.items()]


def month_chunks(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    at = start
    while at < end:
        following = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
        yield at, min(following, end)
        at = following


def day_major(groups: Sequence[Group], start: datetime, hours: int) -> Iterator[bytes]:
    """One buffer per day in the loader's order: the day's rows, entity by entity, 24 hours each."""
    blocks = [np.ascontiguousarray(g.records(start, hours).reshape(len(g.entities), hours // 24, 24)
                                   .transpose(1, 0, 2)) for g in groups]
    for day in range(hours // 24):
        yield b"".join(block[day].tobytes() for block in blocks)


# -- the bench --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    name: str
    text: str
    params: Callable[[random.Random], tuple[Any, ...]]
    expected: Callable[[tuple[Any, ...]], set[str]] | None  # partitions the plan may touch; None: no check
    target: bool  # held to the p95 target


def percentile(values: Sequence[float], share: float) -> float:
    ranked = sorted(values)
    return ranked[max(0, math.ceil(share * len(ranked)) - 1)]


def plan_relations(node: dict[str, Any]) -> list[str]:
    found = [node["Relation Name"]] if "Relation Name" in node else []
    for child in node.get("Plans", []):
        found += plan_relations(child)
    return found


def touched(plan: dict[str, Any]) -> set[str]:
    return {r for r in plan_relations(plan["Plan"]) if r.startswith(("hourly_rollup_p", "daily_rollup_p"))}


def months_between(start: date, end: date) -> Iterator[date]:
    """First days of the months that [start, end) overlaps."""
    at = date(start.year, start.month, 1)
    while at < end:
        yield at
        at = date(at.year + (at.month == 12), at.month % 12 + 1, 1)


class Bench:
    def __init__(self, days: int, seed: int) -> None:
        self.env = stack.up(load_profile("test"))
        self.days, self.seed = days, seed
        self.end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)  # last complete UTC day
        self.start = self.end - timedelta(days=days)
        self.devices, self.entities = catalogue()

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.env["HATS_PG_DSN"], autocommit=True)

    def loader(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.env["HATS_DAGSTER_DSN"], autocommit=True)

    def analyst(self) -> psycopg.Connection[tuple[Any, ...]]:
        # An analyst's tool sends literal SQL: no client-side prepared statements, each query planned
        # with its values (plan-time pruning, what EXPLAIN shows below).
        return psycopg.connect(self.env["HATS_ANALYST_DSN"], autocommit=True, prepare_threshold=None)

    # -- setup and cleanup ----------------------------------------------------------------------------
    def loaded(self) -> tuple[Any, ...]:
        """The tenant's hourly and daily rows: count, first and last period of each."""
        with self.loader() as conn:
            row = conn.execute(
                "SELECT * FROM (SELECT count(*), min(hour), max(hour) FROM analytics.hourly_rollup "
                "WHERE tenant_id = %(t)s) h, (SELECT count(*), min(day), max(day) FROM analytics.daily_rollup "
                "WHERE tenant_id = %(t)s) d", {"t": TENANT}).fetchone()
        assert row is not None
        return tuple(row)

    def expected(self) -> tuple[Any, ...]:
        n = len(self.entities)
        return (self.days * 24 * n, self.start, self.end - timedelta(hours=1),
                self.days * n, self.start.date(), self.end.date() - timedelta(days=1))

    def cleanup(self) -> None:
        """Drop the partitions this bench made that hold no other tenant's rows, delete the tenant's rows
        from the others, then its catalogue (devices and entities go with the tenant, ON DELETE CASCADE)."""
        began = time.monotonic()
        dropped: list[str] = []
        with self.loader() as conn:
            mine = [row[0] for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                "WHERE n.nspname = 'analytics' AND p.relname IN ('hourly_rollup', 'daily_rollup') "
                "AND obj_description(c.oid, 'pg_class') = %s ORDER BY 1", (BENCH_COMMENT,))]
            for name in mine:
                with conn.transaction():
                    table = sql.Identifier("analytics", name)
                    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
                    # two index range probes (tenant_id leads the primary key) instead of a scan
                    others = conn.execute(sql.SQL(
                        "SELECT EXISTS (SELECT 1 FROM {t} WHERE tenant_id < %(t)s) "
                        "OR EXISTS (SELECT 1 FROM {t} WHERE tenant_id > %(t)s)").format(t=table),
                        {"t": TENANT}).fetchone()
                    if others and not others[0]:
                        conn.execute(sql.SQL("DROP TABLE {}").format(table))
                        dropped.append(name)
            deleted = 0
            for parent in ("hourly_rollup", "daily_rollup"):
                deleted += conn.execute(sql.SQL("DELETE FROM analytics.{} WHERE tenant_id = %s").format(
                    sql.Identifier(parent)), (TENANT,)).rowcount
        with self.admin() as conn:
            conn.execute("DELETE FROM core.tenants WHERE tenant_id = %s", (TENANT,))
        progress(f"cleaned up tenant {TENANT}: dropped {len(dropped)} bench partitions, deleted {deleted:,} rows "
                 f"elsewhere ({time.monotonic() - began:.1f} s)")

    def catalogue_rows(self) -> None:
        with self.admin() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("INSERT INTO core.tenants (tenant_id, name) VALUES (%s, %s)",
                        (TENANT, "warehouse query benchmark"))
            cur.executemany("INSERT INTO core.devices (tenant_id, device_id, name, manufacturer, model, identifiers) "
                            "VALUES (%s, %s, %s, %s, %s, %s)",
                            [(TENANT, d.device_id, d.name, d.manufacturer, d.model, json.dumps([d.device_id]))
                             for d in self.devices])
            cur.executemany(
                "INSERT INTO core.entities (tenant_id, entity_id, device_id, domain, measurement, device_class, "
                "state_class, unit_original, unit_canonical, friendly_name, source, first_seen) "
                "VALUES (%s, %s, %s, 'sensor', %s, %s, %s, %s, %s, %s, 'eventstream', %s)",
                [(TENANT, e.entity_id, e.device_id, e.measurement, e.device_class, e.state_class, e.unit, e.unit,
                  e.friendly_name, self.start) for e in self.entities])
        gauges = sum(e.kind == "gauge" for e in self.entities)
        progress(f"catalogue: {len(self.devices)} devices, {gauges} gauges, {len(self.entities) - gauges} kWh meters")

    def partitions(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """The month partitions the range needs, made like the loader makes them; marks those it created."""
        made = []
        for month, _ in month_chunks(self.start, self.end):
            for parent, moment in (("hourly_rollup", month), ("daily_rollup", month.date())):
                ddl, name = month_partition(parent, moment)
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"analytics.{name}",)).fetchone()
                if exists and exists[0]:
                    continue
                conn.execute(ddl)
                conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier("analytics", name),
                                                                         sql.Literal(BENCH_COMMENT)))
                made.append(name)
        progress(f"created {len(made)} month partitions ({', '.join(made) or 'all existed'})")

    def load(self) -> dict[str, float]:
        groups = groups_for(self.entities, self.seed)
        columns = sql.SQL(", ").join(map(sql.Identifier, HOURLY_COLUMNS))
        copy = sql.SQL("COPY analytics.hourly_rollup ({}) FROM STDIN (FORMAT BINARY)").format(columns)
        total_rows, began = 0, time.monotonic()
        with self.loader() as conn:
            self.partitions(conn)
            for month_start, month_end in month_chunks(self.start, self.end):
                started, hours = time.monotonic(), int((month_end - month_start).total_seconds()) // 3600
                with conn.transaction(), conn.cursor() as cur, cur.copy(copy) as out:
                    out.write(COPY_SIGNATURE)
                    for buffer in day_major(groups, month_start, hours):
                        out.write(buffer)
                    out.write(COPY_TRAILER)
                rows = hours * len(self.entities)
                total_rows += rows
                seconds = time.monotonic() - started
                progress(f"hourly {month_start:%Y-%m}: {rows:,} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
            load_s = time.monotonic() - began
            progress(f"hourly: {total_rows:,} rows in {load_s:.1f} s ({total_rows / load_s:,.0f} rows/s)")

            began_daily, daily_rows = time.monotonic(), 0
            for month_start, month_end in month_chunks(self.start, self.end):
                started = time.monotonic()
                rows = conn.execute(DAILY_FROM_HOURLY, {"tenant": TENANT, "start": month_start,
                                                        "end": month_end}).rowcount
                daily_rows += rows
                progress(f"daily {month_start:%Y-%m}: {rows:,} rows from hourly in {time.monotonic() - started:.1f} s")
            daily_s = time.monotonic() - began_daily
            started = time.monotonic()
            for table in ("hourly_rollup", "daily_rollup"):
                conn.execute(sql.SQL("VACUUM (ANALYZE) analytics.{}").format(sql.Identifier(table)))
            vacuum_s = time.monotonic() - started
            progress(f"daily: {daily_rows:,} rows in {daily_s:.1f} s; VACUUM (ANALYZE) both in {vacuum_s:.1f} s")
        return {"hourly_rows": total_rows, "hourly_load_s": round(load_s, 1),
                "hourly_rows_per_s": round(total_rows / load_s), "daily_rows": daily_rows,
                "daily_build_s": round(daily_s, 1), "vacuum_analyze_s": round(vacuum_s, 1)}

    def sizes(self) -> dict[str, str]:
        with self.loader() as conn:
            rows = conn.execute(
                "SELECT p.relname, pg_size_pretty(sum(pg_total_relation_size(i.inhrelid))), count(*) "
                "FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname IN ('hourly_rollup', 'daily_rollup') "
                "AND p.relnamespace = 'analytics'::regnamespace GROUP BY 1").fetchall()
        return {str(name): f"{size} in {count} partitions" for name, size, count in rows}

    # -- the queries ------------------------------------------------------------------------------------
    def queries(self) -> list[Query]:
        first_day, days = self.start.date(), self.days
        entity_ids = [e.entity_id for e in self.entities]
        months = [m for m in months_between(first_day, self.end.date()) if m >= first_day]

        def one_day(rng: random.Random) -> tuple[Any, ...]:
            return (TENANT, first_day + timedelta(days=rng.randrange(days)))

        def one_entity(rng: random.Random) -> tuple[Any, ...]:
            since = self.start + timedelta(days=rng.randrange(days - 29))
            return (TENANT, rng.choice(entity_ids), since, since + timedelta(days=30))

        def one_month(rng: random.Random) -> tuple[Any, ...]:
            month = rng.choice(months)
            return (TENANT, month, date(month.year + (month.month == 12), month.month % 12 + 1, 1))

        def daily_of(params: tuple[Any, ...]) -> set[str]:
            return {month_partition("daily_rollup", params[1])[1]}

        def hourly_of(params: tuple[Any, ...]) -> set[str]:
            # the range starts and ends at UTC midnight: its months are those of [first day, end day)
            return {month_partition("hourly_rollup", m)[1] for m in months_between(params[2].date(), params[3].date())}

        return [
            # UTC days (the views on daily_rollup, which this bench builds; migration 0009 renamed them).
            Query("a. all entities, one day (entity_daily_utc)",
                  "SELECT * FROM analytics.entity_daily_utc WHERE tenant_id = %s AND utc_day = %s", one_day, daily_of,
                  True),
            Query("b. one entity, 30 days hourly (entity_hourly)",
                  "SELECT hour, mean, min, max FROM analytics.entity_hourly WHERE tenant_id = %s AND entity_id = %s "
                  "AND hour >= %s AND hour < %s ORDER BY hour", one_entity, hourly_of, True),
            Query("c. energy per day, one month (energy_daily_utc)",
                  "SELECT entity_id, utc_day, kwh FROM analytics.energy_daily_utc WHERE tenant_id = %s "
                  "AND utc_day >= %s AND utc_day < %s", one_month, daily_of, True),
            Query("d. device_last_seen, whole tenant (informational)",
                  "SELECT * FROM analytics.device_last_seen WHERE tenant_id = %s", lambda rng: (TENANT,), None, False),
        ]

    def measure(self, query: Query, runs: int, warmups: int) -> dict[str, Any]:
        """Ours (pruning on) and the baseline (pruning off) on the same parameters, interleaved, alternating
        which goes first, so that drift on this shared machine hits both alike."""
        rng = random.Random(f"{self.seed}:{query.name}")
        times: dict[str, list[float]] = {"ours": [], "baseline": []}
        rows: list[int] = []
        with self.analyst() as ours, self.analyst() as baseline:
            baseline.execute("SET enable_partition_pruning = off")
            for i in range(warmups + runs):
                params = query.params(rng)
                order = [("ours", ours), ("baseline", baseline)]
                for label, conn in order if i % 2 == 0 else order[::-1]:
                    started = time.perf_counter()
                    got = conn.execute(query.text, params).fetchall()
                    elapsed = (time.perf_counter() - started) * 1000
                    if i >= warmups:
                        times[label].append(elapsed)
                        if label == "ours":
                            rows.append(len(got))
        result: dict[str, Any] = {"runs": runs, "rows_median": statistics.median(rows)}
        for label, values in times.items():
            result[label] = {"p50_ms": round(statistics.median(values), 2),
                             "p95_ms": round(percentile(values, 0.95), 2), "max_ms": round(max(values), 2)}
        result["ratio_p50"] = round(result["baseline"]["p50_ms"] / result["ours"]["p50_ms"], 2)
        result["ratio_p95"] = round(result["baseline"]["p95_ms"] / result["ours"]["p95_ms"], 2)
        return result

    def explain(self, query: Query, samples: int) -> dict[str, Any]:
        """EXPLAIN (ANALYZE, BUFFERS) of one sample printed; the partitions touched checked on `samples`."""
        rng = random.Random(f"{self.seed}:explain:{query.name}")
        failures: list[str] = []
        touched_counts: list[int] = []
        with self.analyst() as conn, self.analyst() as off:
            off.execute("SET enable_partition_pruning = off")
            for i in range(samples):
                params = query.params(rng)
                plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query.text}", params).fetchone()
                assert plan is not None
                got = touched(plan[0][0])
                touched_counts.append(len(got))
                if query.expected is not None and got != query.expected(params):
                    failures.append(f"{params[1:]}: touched {sorted(got)}, expected {sorted(query.expected(params))}")
                if i == 0:
                    text = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query.text}", params).fetchall()
                    unpruned = off.execute(f"EXPLAIN (FORMAT JSON) {query.text}", params).fetchone()
                    assert unpruned is not None
                    print(f"\n### {query.name}\n-- params {params}\n" + "\n".join(str(r[0]) for r in text))
                    print(f"-- partitions in the plan: {len(got)} ({', '.join(sorted(got))}); "
                          f"with enable_partition_pruning = off: {len(touched(unpruned[0][0]))}")
        return {"partitions_touched": sorted(set(touched_counts)), "pruning_failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365, help="days of hourly rows, ending at the last complete day")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per query (after the warm-ups)")
    parser.add_argument("--warmups", type=int, default=10)
    parser.add_argument("--explain-samples", type=int, default=20, help="random parameter sets checked for pruning")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--keep", action="store_true", help="keep the tenant's rows and partitions afterwards")
    parser.add_argument("--reuse", action="store_true", help="skip the load if a kept load of this range is there")
    parser.add_argument("--clean", action="store_true", help="only remove a kept load (see --keep), then exit")
    args = parser.parse_args()
    if args.days < 31:
        parser.error("--days must be at least 31 (the 30-day query)")
    bench = Bench(args.days, args.seed)
    if args.clean:
        bench.cleanup()
        return
    expected_hourly = bench.expected()[0]
    print(f"tenant {TENANT}: {len(bench.entities)} entities, {bench.start:%Y-%m-%d} .. {bench.end:%Y-%m-%d} "
          f"({args.days} days, {expected_hourly:,} hourly rows)", file=sys.stderr)
    summary: dict[str, Any] = {"tenant": TENANT, "range": [f"{bench.start:%Y-%m-%d}", f"{bench.end:%Y-%m-%d}"]}
    try:
        if args.reuse and bench.loaded() == bench.expected():
            progress("reusing the kept load")
            summary["load"] = "reused"
        else:
            bench.cleanup()
            bench.catalogue_rows()
            summary["load"] = bench.load()
        loaded = bench.loaded()
        assert loaded == bench.expected(), f"loaded {loaded}, expected {bench.expected()}"
        summary["sizes"] = bench.sizes()

        verdicts: list[tuple[str, bool]] = []
        results: dict[str, Any] = {}
        for query in bench.queries():
            progress(f"timing {query.name}: {args.warmups} warm-ups + {args.runs} runs, ours and baseline")
            measured = bench.measure(query, args.runs, args.warmups)
            measured |= bench.explain(query, args.explain_samples)
            results[query.name] = measured
            if query.target:
                verdicts.append((f"{query.name}: p95 {measured['ours']['p95_ms']} ms <= {TARGET_P95_MS:g} ms",
                                 measured["ours"]["p95_ms"] <= TARGET_P95_MS))
            if query.expected is not None:
                verdicts.append((f"{query.name}: only its period's partitions (touched "
                                 f"{'/'.join(map(str, measured['partitions_touched']))} on {args.explain_samples} "
                                 f"samples)", not measured["pruning_failures"]))
                for failure in measured["pruning_failures"][:5]:
                    print(f"   pruning failure: {failure}")
            elif measured["ours"]["p95_ms"] > SLOW_INFO_MS:
                print(f"\nNOTE {query.name}: p95 {measured['ours']['p95_ms']} ms > {SLOW_INFO_MS:g} ms "
                      "(informational, no target): see its EXPLAIN above")
        summary["queries"] = results

        print("\n| query | rows | ours p50 / p95 / max ms | baseline (pruning off) p50 / p95 ms | ratio p50 / p95 |")
        print("|---|---|---|---|---|")
        for name, m in results.items():
            print(f"| {name} | {m['rows_median']:g} | {m['ours']['p50_ms']} / {m['ours']['p95_ms']} / "
                  f"{m['ours']['max_ms']} | {m['baseline']['p50_ms']} / {m['baseline']['p95_ms']} | "
                  f"{m['ratio_p50']} / {m['ratio_p95']} |")
        print()
        for text, ok in verdicts:
            print(f"{'PASS' if ok else 'FAIL'} {text}")
        summary["pass"] = all(ok for _, ok in verdicts)
        print(json.dumps(summary, indent=2, default=str))
    finally:
        if args.keep:
            progress(f"kept tenant {TENANT}'s rows (--keep); a later run with --reuse skips the load")
        else:
            bench.cleanup()
    sys.exit(0 if summary.get("pass") else 1)


if __name__ == "__main__":
    main()
