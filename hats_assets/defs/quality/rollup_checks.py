"""Data-quality checks on the rollups, per hourly partition, written with great-expectations 1.x.

The ERROR ones are blocking: a partition that fails them is not loaded into the warehouse until it is
fixed or re-run (``hourly_rollup`` refuses days whose latest result for an hour failed, see
``results.failed_hours``); the WARN ones are reported only. Every result is also written to
``ops.dq_results`` with the rows a person can act on.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource, TenantInflux, qualified, window_params
from hats_assets.defs.common.tenants import Home, TenantSelection
from hats_assets.defs.core.assets import counter_entities
from hats_assets.defs.quality.expectations import Expectations
from hats_assets.defs.quality.results import Judge, Verdict, check_homes, frame_of
from hats_assets.defs.rollups.contract import KINDS, measurement
from hats_assets.defs.rollups.maths import RESET_RATIO
from hats_assets.defs.rollups.raw_reader import RAW_CHUNK, RawWindow, read_window_for_run
from hats_assets.partitions import chunks, context_window, epoch_ns, hourly_partitions
from ingest_worker.contract import ROLLUP_RP

# Plausible values per quantity (canonical units); quantities not listed are not range-checked.
PLAUSIBLE: dict[str, tuple[float | None, float | None]] = {
    "temperature": (-60.0, 80.0),
    "humidity": (0.0, 100.0),
    "battery": (0.0, 100.0),
    "moisture": (0.0, 100.0),
    "power": (0.0, None),
    "illuminance": (0.0, None),
    "binary": (0.0, 1.0),
    "availability": (0.0, 1.0),
}


ROLLUP_1M = qualified(ROLLUP_RP, *(measurement(kind, "1m") for kind in KINDS))
GAUGE_1H = qualified(ROLLUP_RP, measurement("gauge", "1h"))
COUNTER_1H = qualified(ROLLUP_RP, measurement("counter", "1h"))


@dg.asset_check(
    asset="rollup_1h", name="plausible_ranges", blocking=True, partitions_def=hourly_partitions,
    description="Every gauge's hourly min and max lie in its quantity's plausible range (humidity and battery "
                "0–100 %, temperature −60…80 °C, power ≥ 0 W, on/off 0–1…) and no meter's consumption is negative.",
)
def plausible_ranges(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    window = context_window(context)

    def evaluate(home: Home, expect: Expectations) -> Judge:
        db = influxdb.for_tenant(home.tenant_id)
        tags = ("entity_id", "quantity")
        gauge_rows, meter_rows = db.queries([
            f'SELECT "min", "max" FROM {GAUGE_1H} WHERE time >= $start AND time < $end '
            'GROUP BY "entity_id", "quantity"',
            f'SELECT "consumption" FROM {COUNTER_1H} WHERE time >= $start AND time < $end '
            'GROUP BY "entity_id", "quantity"'], window_params(*window))
        gauges, meters = frame_of(gauge_rows, tags), frame_of(meter_rows, tags)
        ranges = []
        present = dict(tuple(gauges.groupby("quantity", sort=False)))  # a home has few of PLAUSIBLE's quantities
        for quantity, (low, high) in PLAUSIBLE.items():
            if quantity not in present:
                continue
            rows = present[quantity].reset_index(drop=True)
            ranges.append((quantity, low, high, rows, [
                expect.ask(rows, "ExpectColumnValuesToBeBetween", column=column, min_value=low, max_value=high)
                for column in ("min", "max")]))
        negative = expect.ask(meters, "ExpectColumnValuesToBeBetween", column="consumption", min_value=0.0)

        def judge() -> Verdict:
            failing: list[dict[str, Any]] = []
            for quantity, low, high, rows, asked in ranges:
                bad = sorted({i for one in asked for i in one.rows()})
                records = rows.iloc[bad].to_dict("records")
                failing += [{"entity_id": record["entity_id"], "quantity": quantity, "min": float(record["min"]),
                             "max": float(record["max"]), "allowed": [low, high]} for record in records]
            for record in meters.iloc[negative.rows()].to_dict("records"):
                failing.append({"entity_id": record["entity_id"], "quantity": record["quantity"],
                                "consumption": float(record["consumption"]), "allowed": [0.0, None]})
            checked = len(gauges) + len(meters)
            return Verdict(failing, checked, numbers={"rows_checked": checked, "out_of_range": len(failing)})

        return judge

    return check_homes(context, postgres, tenant_selection, window, evaluate, listed_as="entities",
                       what_to_do="fix the device or its unit in Home Assistant, then re-run the partition")


@dg.asset_check(
    asset="rollup_1m", name="raw_points_all_rolled_up", blocking=True, partitions_def=hourly_partitions,
    description="Cross-store completeness: per entity, the raw numeric points in InfluxDB equal the points "
                "counted in its 1 min rollup rows (between its largest raw series and the sum over its series, "
                "where one entity arrives under two device ids or integrations).",
)
def raw_points_all_rolled_up(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    window = context_window(context)

    def evaluate(home: Home, expect: Expectations) -> Judge:
        db = influxdb.for_tenant(home.tenant_id)
        # Per raw series (all tags: an entity re-paired under a new device id, or seen by two integrations, has
        # several, often with the same instants, which the rollup counts once).
        raw_rows, rolled_rows = db.queries([
            'SELECT count("value") FROM "raw"./.*/ WHERE time >= $start AND time < $end GROUP BY *',
            f'SELECT sum("count") FROM {ROLLUP_1M} WHERE time >= $start AND time < $end GROUP BY "entity_id"'],
            window_params(*window))
        raw, rolled = frame_of(raw_rows, ("entity_id",)), frame_of(rolled_rows, ("entity_id",))
        per_entity = raw.groupby("entity_id")["count"].agg(raw_max="max", raw_sum="sum") if len(raw) else \
            pd.DataFrame(columns=["raw_max", "raw_sum"])
        counted = rolled.groupby("entity_id")["sum"].sum() if len(rolled) else pd.Series(dtype="float64")
        frame = per_entity.join(counted.rename("rolled"), how="outer").fillna(0).reset_index(names="entity_id")
        asked = [expect.ask(frame, "ExpectColumnPairValuesAToBeGreaterThanB", column_A="rolled", column_B="raw_max",
                            or_equal=True),
                 expect.ask(frame, "ExpectColumnPairValuesAToBeGreaterThanB", column_A="raw_sum", column_B="rolled",
                            or_equal=True)]

        def judge() -> Verdict:
            bad = sorted({i for a in asked for i in a.rows()})
            failing = [{"entity_id": record["entity_id"], "raw_points": int(record["raw_sum"]),
                        "rolled_up": int(record["rolled"])} for record in frame.iloc[bad].to_dict("records")]
            return Verdict(failing, len(frame), numbers={
                "entities_checked": len(frame), "raw_points": int(frame["raw_sum"].sum()) if len(frame) else 0})

        return judge

    return check_homes(context, postgres, tenant_selection, window, evaluate, listed_as="incomplete_entities",
                       what_to_do="re-run the partition (late points arrived while it ran, or a write failed)")


@dg.asset_check(
    asset="rollup_1m", name="one_series_per_entity", blocking=True, partitions_def=hourly_partitions,
    description="Each entity has exactly one 1 min rollup series in the partition (one quantity, gauge or meter): "
                "two would give analysts two rows per entity and minute. And no row lies in the future.",
)
def one_series_per_entity(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    window = context_window(context)

    def evaluate(home: Home, expect: Expectations) -> Judge:
        db = influxdb.for_tenant(home.tenant_id)
        counted, ahead = db.queries([
            f'SELECT count("count") FROM {ROLLUP_1M} WHERE time >= $start AND time < $end '
            'GROUP BY "entity_id", "quantity"',
            f'SELECT count("count") FROM {ROLLUP_1M} WHERE time >= $start AND time < $end AND time > now() '
            'GROUP BY "entity_id"'], window_params(*window))
        series = frame_of(counted, ("entity_id", "quantity"))
        future = {s["tags"]["entity_id"] for s in ahead}
        per_entity = series.groupby("entity_id").size().rename("series").reset_index() if len(series) else \
            pd.DataFrame(columns=["entity_id", "series"])
        asked = expect.ask(per_entity, "ExpectColumnValuesToBeBetween", column="series", min_value=1, max_value=1)

        def judge() -> Verdict:
            failing = [{"entity_id": record["entity_id"],
                        "quantities": sorted(series.loc[series["entity_id"] == record["entity_id"], "quantity"])}
                       for record in per_entity.iloc[asked.rows()].to_dict("records")]
            failing += [{"entity_id": entity, "rows_in_the_future": True} for entity in sorted(future)]
            return Verdict(failing, len(per_entity), numbers={"entities_checked": len(per_entity)})

        return judge

    return check_homes(context, postgres, tenant_selection, window, evaluate, listed_as="ambiguous_entities",
                       what_to_do="an entity changed quantity or state_class within the hour, or a clock is ahead: "
                                  "fix its metadata in Home Assistant, then re-run the partition")


def _raw_chunks(context: dg.AssetCheckExecutionContext, db: TenantInflux,
                window: tuple[datetime, datetime]) -> Iterator[tuple[datetime, datetime, RawWindow]]:
    """The raw points a day at a time, as the rollup read them: in the same run the read is shared, and a
    backfill's range never sits in memory whole."""
    for start, end in chunks(*window, RAW_CHUNK):
        yield start, end, read_window_for_run(db, start, end, context.run.run_id)


# Usual cadence: the entity's mean interval over the day before the partition; a gap is a silence longer
# than GAP_CADENCES of those intervals (and at least MIN_GAP).
CADENCE_LOOKBACK = timedelta(days=1)
GAP_CADENCES = 3.0
MIN_GAP = timedelta(minutes=5)
MIN_SHARE = 0.5


@dg.asset_check(
    asset="rollup_1m", name="points_match_cadence", blocking=False, partitions_def=hourly_partitions,
    description="Completeness: each entity sent at least half the points its usual cadence (the day before) "
                "predicts for the hour; its silences longer than 3 intervals are listed as gaps. WARN: "
                "event-driven sensors are irregular by nature.",
)
def points_match_cadence(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    window = context_window(context)

    def evaluate(home: Home, _expect: Expectations) -> Verdict:
        db = influxdb.for_tenant(home.tenant_id)
        failing: list[dict[str, Any]] = []
        checked = 0
        for start, end, raw in _raw_chunks(context, db, window):
            usual = {s["tags"]["entity_id"]: int(s["values"][0][1]) for s in db.query(
                'SELECT count("value") FROM "raw"./.*/ WHERE time >= $start AND time < $end GROUP BY "entity_id"',
                window_params(start - CADENCE_LOOKBACK, start))}
            checked += len(raw.series)
            for series in raw.series:
                before = usual.get(series.entity_id, 0)
                if before < CADENCE_LOOKBACK / timedelta(hours=1):  # under one point an hour: no cadence to hold to
                    continue
                interval_s = CADENCE_LOOKBACK.total_seconds() / before
                expected = (end - start).total_seconds() / interval_s
                times = series.times_ns[~np.isnan(series.values)]
                edges = np.concatenate(([epoch_ns(start)], times, [epoch_ns(end)]))
                silence = np.diff(edges) / 1e9
                limit = max(GAP_CADENCES * interval_s, MIN_GAP.total_seconds())
                gaps = [[datetime.fromtimestamp(edges[i] / 1e9, tz=UTC).isoformat(), round(float(silence[i]))]
                        for i in np.flatnonzero(silence > limit)]
                if times.size < MIN_SHARE * expected or gaps:
                    failing.append({"entity_id": series.entity_id, "points": int(times.size),
                                    "expected": round(expected), "gaps": gaps})
        return Verdict(failing, checked, dg.AssetCheckSeverity.WARN,
                       {"entities_checked": checked, "entities_with_gaps": len(failing)})

    return check_homes(context, postgres, tenant_selection, window, evaluate, listed_as="gaps",
                       what_to_do="check the devices' batteries, radio links or integrations for these hours")


@dg.asset_check(
    asset="rollup_1m", name="meters_only_grow", blocking=False, partitions_def=hourly_partitions,
    description="Meters (total / total_increasing) never go down except at a detected reset (below 0.9 x the "
                "previous reading); small dips are listed. WARN: the rollup already ignores them.",
)
def meters_only_grow(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    window = context_window(context)

    def evaluate(home: Home, _expect: Expectations) -> Verdict:
        db = influxdb.for_tenant(home.tenant_id)
        meters = counter_entities(postgres, home.tenant_id)
        failing: list[dict[str, Any]] = []
        checked = 0
        for _, _, raw in _raw_chunks(context, db, window):
            for series in raw.series:
                if series.entity_id not in meters:
                    continue
                checked += 1
                keep = np.isfinite(series.values) & (series.values >= 0)
                readings, times = series.values[keep], series.times_ns[keep]
                if series.carry_reading is not None:
                    readings = np.concatenate(([series.carry_reading[1]], readings))
                    times = np.concatenate(([series.carry_reading[0]], times))
                previous, current = readings[:-1], readings[1:]
                dips = np.flatnonzero((current < previous) & (current >= RESET_RATIO * previous))
                if dips.size:
                    failing.append({"entity_id": series.entity_id, "dips": [
                        [datetime.fromtimestamp(times[i + 1] / 1e9, tz=UTC).isoformat(), float(previous[i]),
                         float(current[i])] for i in dips[:10]], "count": int(dips.size)})
        return Verdict(failing, checked, dg.AssetCheckSeverity.WARN, {"meters_checked": checked})

    return check_homes(context, postgres, tenant_selection, window, evaluate, listed_as="meters_with_dips",
                       what_to_do="a dipping meter usually reports a rounded or restored value; check the device")


rollup_checks = [plausible_ranges, raw_points_all_rolled_up, one_series_per_entity, points_match_cadence,
                 meters_only_grow]
