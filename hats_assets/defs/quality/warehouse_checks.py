"""Data-quality check on the warehouse load: every 1 h rollup row of the day is in PostgreSQL, once, and
every imported statistics row of an hour we have no rollup of, once — per home.

Blocking per home, not per run: in ``warehouse_daily_job`` the daily tables are re-aggregated from the
hourly one right after, and they skip exactly the homes whose latest result for the day failed
(``tables.gate``, reading ``ops.dq_results``), so one home's incomplete load never holds back another's
day. Dagster's own ``blocking`` would skip the daily step for every home of the run, so it is not set.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource, TenantInflux, qualified, window_params
from hats_assets.defs.common.tenants import Home, TenantSelection
from hats_assets.defs.quality.expectations import Expectations
from hats_assets.defs.quality.results import Judge, Verdict, check_homes
from hats_assets.defs.rollups.contract import KINDS, measurement
from hats_assets.partitions import context_window, daily_partitions
from ingest_worker.contract import ROLLUP_RP, imported_measurement

# Rows per entity and hour (an entity has one row per quantity it reported in the hour).
ROWS_PER_HOUR_QUERY = ('SELECT count("count") FROM {measurements} WHERE time >= $start AND time < $end '
                       'GROUP BY time(1h), "entity_id" fill(none)')
WAREHOUSE_ROWS_SQL = ("SELECT entity_id, count(*) FILTER (WHERE origin = 'computed'), "
                      "count(*) FILTER (WHERE origin = 'imported'), count(DISTINCT (hour, quantity)), count(*) "
                      "FROM analytics.hourly_rollup WHERE tenant_id = %(tenant)s AND hour >= %(start)s "
                      "AND hour < %(end)s GROUP BY entity_id")
COLUMNS = ["entity_id", "rollup", "imported", "warehouse_computed", "warehouse_imported", "warehouse", "distinct"]


def _rows_per_hour(db: TenantInflux, start: datetime,
                   end: datetime) -> tuple[dict[tuple[str, datetime], int], dict[tuple[str, datetime], int]]:
    """Rows per (entity, hour) of our 1 h rollups and of the imported statistics, in one request."""
    statements = [ROWS_PER_HOUR_QUERY.format(measurements=qualified(ROLLUP_RP, *names)) for names in (
        [measurement(kind, "1h") for kind in KINDS], [imported_measurement(kind, "1h") for kind in KINDS])]
    counted: list[dict[tuple[str, datetime], int]] = []
    for answer in db.queries(statements, window_params(start, end)):
        rows: dict[tuple[str, datetime], int] = {}
        for series in answer:
            for moment, count in series["values"]:
                key = (series["tags"]["entity_id"], datetime.fromtimestamp(moment / 1e9, tz=UTC))
                rows[key] = rows.get(key, 0) + int(count)
        counted.append(rows)
    return counted[0], counted[1]


CHECK_NAME = "warehouse_rows_match_rollups"


@dg.asset_check(
    asset="hourly_rollup", name=CHECK_NAME, blocking=False, partitions_def=daily_partitions,
    description="Per home and entity, the day's computed rows in analytics.hourly_rollup equal its rows in "
                "InfluxDB's 1 h rollup, its imported rows equal the imported statistics of the hours without a "
                "rollup, with no duplicate (hour, quantity). A home that fails it keeps its daily tables as they "
                "were (the daily loads skip it); the other homes load.",
)
def warehouse_rows_match_rollups(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    start, end = context_window(context)

    def evaluate(home: Home, expect: Expectations) -> Judge:
        db = influxdb.for_tenant(home.tenant_id)
        computed, imported = _rows_per_hour(db, start, end)
        counts: dict[str, dict[str, Any]] = {}

        def row(entity: str) -> dict[str, Any]:
            return counts.setdefault(entity, dict.fromkeys(COLUMNS[1:], 0))

        for (entity, _), rows in computed.items():
            row(entity)["rollup"] += rows
        for (entity, hour), rows in imported.items():
            if (entity, hour) not in computed:  # ours win: an imported hour we rolled up is not loaded
                row(entity)["imported"] += rows
        with postgres.connect() as conn:
            for entity, *numbers in conn.execute(WAREHOUSE_ROWS_SQL, {"tenant": home.tenant_id, "start": start,
                                                                      "end": end}).fetchall():
                row(entity).update(zip(COLUMNS[3:], map(int, numbers), strict=True))
        frame = pd.DataFrame([{"entity_id": e, **c} for e, c in sorted(counts.items())], columns=COLUMNS)
        asked = [expect.ask(frame, "ExpectColumnPairValuesToBeEqual", column_A=column_a, column_B=column_b)
                 for column_a, column_b in (("rollup", "warehouse_computed"), ("imported", "warehouse_imported"),
                                            ("warehouse", "distinct"))]

        def judge() -> Verdict:
            bad = sorted({i for a in asked for i in a.rows()})
            failing = [{"entity_id": record["entity_id"], "rollup_rows": record["rollup"],
                        "imported_rows": record["imported"], "warehouse_computed_rows": record["warehouse_computed"],
                        "warehouse_imported_rows": record["warehouse_imported"], "distinct_rows": record["distinct"]}
                       for record in frame.iloc[bad].to_dict("records")]
            return Verdict(failing, len(frame), numbers={
                "entities_checked": len(frame), "rows_in_rollup": int(frame["rollup"].sum()) if len(frame) else 0,
                "imported_rows_expected": int(frame["imported"].sum()) if len(frame) else 0})

        return judge

    return check_homes(context, postgres, tenant_selection, (start, end), evaluate, listed_as="mismatched_entities",
                       what_to_do="re-run warehouse_daily_job for this day (after the day's rollups)")
