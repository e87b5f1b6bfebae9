"""Data-quality check on the warehouse load: every 1 h rollup row of the day is in PostgreSQL, once.

Blocking: in ``warehouse_daily_job`` the daily table is re-aggregated from the hourly one right after,
so a day whose hourly load is incomplete never reaches ``daily_rollup`` (and its views) in that run.
"""

from typing import Any

import dagster as dg
import pandas as pd

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource, window_params
from hats_assets.defs.quality.expectations import failing_rows
from hats_assets.defs.quality.results import conclude
from hats_assets.partitions import context_window, daily_partitions

ROLLUP_ROWS_QUERY = ('SELECT count("count") FROM "rollup"."gauge_1h", "rollup"."counter_1h" '
                     'WHERE time >= $start AND time < $end GROUP BY "entity_id"')
WAREHOUSE_ROWS_SQL = ("SELECT entity_id, count(*), count(DISTINCT (hour, quantity)) FROM analytics.hourly_rollup "
                      "WHERE tenant_id = %(tenant)s AND hour >= %(start)s AND hour < %(end)s GROUP BY entity_id")


@dg.asset_check(
    asset="hourly_rollup", name="warehouse_rows_match_rollups", blocking=True, partitions_def=daily_partitions,
    description="Per entity, the day's rows in analytics.hourly_rollup equal its rows in InfluxDB's 1 h rollup, "
                "with no duplicate (hour, quantity).",
)
def warehouse_rows_match_rollups(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource
) -> dg.AssetCheckResult:
    start, end = context_window(context)
    counts: dict[str, dict[str, Any]] = {}
    for series in influxdb.query(ROLLUP_ROWS_QUERY, window_params(start, end)):
        row = counts.setdefault(series["tags"]["entity_id"], {"rollup": 0, "warehouse": 0, "distinct": 0})
        row["rollup"] += int(series["values"][0][1])
    with postgres.connect() as conn:
        for entity, rows, distinct in conn.execute(WAREHOUSE_ROWS_SQL, {"tenant": influxdb.tenant, "start": start,
                                                                         "end": end}).fetchall():
            row = counts.setdefault(entity, {"rollup": 0, "warehouse": 0, "distinct": 0})
            row["warehouse"], row["distinct"] = int(rows), int(distinct)
    frame = pd.DataFrame([{"entity_id": e, **c} for e, c in sorted(counts.items())],
                         columns=["entity_id", "rollup", "warehouse", "distinct"])
    bad = set(failing_rows(frame, "ExpectColumnPairValuesToBeEqual", column_A="rollup", column_B="warehouse"))
    bad |= set(failing_rows(frame, "ExpectColumnPairValuesToBeEqual", column_A="warehouse", column_B="distinct"))
    records = frame.to_dict("records")
    failing = [{"entity_id": records[i]["entity_id"], "rollup_rows": records[i]["rollup"],
                "warehouse_rows": records[i]["warehouse"], "distinct_rows": records[i]["distinct"]}
               for i in sorted(bad)]
    return conclude(context, postgres, influxdb.tenant, (start, end), failing, len(frame),
                    listed_as="mismatched_entities", entities_checked=len(frame),
                    rows_in_rollup=int(frame["rollup"].sum()) if len(frame) else 0,
                    what_to_do="re-run warehouse_daily_job for this day (after the day's rollups)")
