"""Data-quality checks on the rollups, per hourly partition, written with great-expectations 1.x.

Both are blocking and ERROR: a partition that fails them is not loaded into the warehouse until it is
fixed or re-run (``hourly_rollup`` refuses days whose latest result for an hour failed, see
``results.failed_hours``). Every result is also written to ``ops.dq_results`` with the rows a person can act on.
"""

from datetime import datetime
from typing import Any

import dagster as dg
import pandas as pd

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.quality.expectations import failing_rows
from hats_assets.defs.quality.results import frame_of, plain, record
from hats_assets.partitions import hourly_partitions

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


def _window(context: dg.AssetCheckExecutionContext) -> tuple[datetime, datetime]:
    window = context.partition_time_window
    return window.start, window.end


def _params(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


@dg.asset_check(
    asset="rollup_1h", name="plausible_ranges", blocking=True, partitions_def=hourly_partitions,
    description="Every gauge's hourly min and max lie in its quantity's plausible range (humidity and battery "
                "0–100 %, temperature −60…80 °C, power ≥ 0 W, on/off 0–1…) and no meter's consumption is negative.",
)
def plausible_ranges(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource
) -> dg.AssetCheckResult:
    window = _window(context)
    gauges = frame_of(influxdb.query('SELECT "min", "max" FROM "rollup"."gauge_1h" WHERE time >= $start AND '
                                   'time < $end GROUP BY "entity_id", "quantity"', _params(*window)),
                    ("entity_id", "quantity"))
    meters = frame_of(influxdb.query('SELECT "consumption" FROM "rollup"."counter_1h" WHERE time >= $start AND '
                                   'time < $end GROUP BY "entity_id", "quantity"', _params(*window)),
                    ("entity_id", "quantity"))
    failing: list[dict[str, Any]] = []
    for quantity, (low, high) in PLAUSIBLE.items():
        rows = gauges[gauges["quantity"] == quantity].reset_index(drop=True)
        bad = set()
        for column in ("min", "max"):
            bad |= set(failing_rows(rows, "ExpectColumnValuesToBeBetween", column=column, min_value=low,
                                    max_value=high))
        failing += [{"entity_id": rows.at[i, "entity_id"], "quantity": quantity, "min": float(str(rows.at[i, "min"])),
                     "max": float(str(rows.at[i, "max"])), "allowed": [low, high]} for i in sorted(bad)]
    for i in failing_rows(meters, "ExpectColumnValuesToBeBetween", column="consumption", min_value=0.0):
        failing.append({"entity_id": meters.at[i, "entity_id"], "quantity": meters.at[i, "quantity"],
                        "consumption": float(str(meters.at[i, "consumption"])), "allowed": [0.0, None]})
    checked = len(gauges) + len(meters)
    record(context, postgres, influxdb.tenant, "rollup_1h", "plausible_ranges", window, failing, checked)
    return dg.AssetCheckResult(
        passed=not failing, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_checked": checked, "out_of_range": len(failing),
                  "entities": dg.MetadataValue.json(plain(failing)),
                  "what_to_do": "fix the device or its unit in Home Assistant, then re-run the partition"},
    )


@dg.asset_check(
    asset="rollup_1m", name="raw_points_all_rolled_up", blocking=True, partitions_def=hourly_partitions,
    description="Cross-store completeness: per entity, the raw numeric points in InfluxDB equal the points "
                "counted in its 1 min rollup rows (between the largest single-source series and the sum over "
                "sources, where one entity arrives through two integrations).",
)
def raw_points_all_rolled_up(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource
) -> dg.AssetCheckResult:
    window = _window(context)
    raw = frame_of(influxdb.query('SELECT count("value") FROM "raw"./.*/ WHERE time >= $start AND time < $end '
                                'GROUP BY "entity_id", "source"', _params(*window)), ("entity_id", "source"))
    rolled = frame_of(influxdb.query('SELECT sum("count") FROM "rollup"."gauge_1m", "rollup"."counter_1m" '
                                   'WHERE time >= $start AND time < $end GROUP BY "entity_id"', _params(*window)),
                    ("entity_id",))
    per_entity = raw.groupby("entity_id")["count"].agg(raw_max="max", raw_sum="sum") if len(raw) else pd.DataFrame(
        columns=["raw_max", "raw_sum"])
    counted = rolled.groupby("entity_id")["sum"].sum() if len(rolled) else pd.Series(dtype="float64")
    frame = per_entity.join(counted.rename("rolled"), how="outer").fillna(0).reset_index(names="entity_id")
    bad = set(failing_rows(frame, "ExpectColumnPairValuesAToBeGreaterThanB", column_A="rolled", column_B="raw_max",
                           or_equal=True))
    bad |= set(failing_rows(frame, "ExpectColumnPairValuesAToBeGreaterThanB", column_A="raw_sum", column_B="rolled",
                            or_equal=True))
    records = frame.to_dict("records")
    failing = [{"entity_id": records[i]["entity_id"], "raw_points": int(records[i]["raw_sum"]),
                "rolled_up": int(records[i]["rolled"])} for i in sorted(bad)]
    record(context, postgres, influxdb.tenant, "rollup_1m", "raw_points_all_rolled_up", window, failing, len(frame))
    return dg.AssetCheckResult(
        passed=not failing, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"entities_checked": len(frame), "raw_points": int(frame["raw_sum"].sum()) if len(frame) else 0,
                  "incomplete_entities": dg.MetadataValue.json(plain(failing)),
                  "what_to_do": "re-run the partition (late points arrived while it ran, or a write failed)"},
    )


rollup_checks = [plausible_ranges, raw_points_all_rolled_up]
