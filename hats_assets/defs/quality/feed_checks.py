"""Checks on the live feed itself (``raw_points``): clocks, silent devices, each home's series budget.

Not partitioned: they look at the feed as it is now, hourly (``feed_checks_job``), for every home the run
serves. None is blocking — nothing downstream is computed from "now" — but each says which entities and
what to do.
"""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.common.tenants import Home, TenantSelection
from hats_assets.defs.quality.expectations import Expectations, failing_rows
from hats_assets.defs.quality.results import Judge, Verdict, check_homes

FUTURE_TOLERANCE = timedelta(minutes=5)
FRESHNESS_LOOKBACK = timedelta(days=7)
STALE_CADENCES = 10  # silent for more than 10 usual intervals…
STALE_AT_LEAST = timedelta(hours=1)  # …and at least an hour
BUDGET_WARN_SHARE = 0.9


def _now_window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now, now


@dg.asset_check(
    asset="raw_points", name="no_future_points",
    description="No raw point is stamped more than 5 minutes ahead of now (a device or Home Assistant clock "
                "running ahead would put data into hours not lived yet).",
)
def no_future_points(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    def evaluate(home: Home, _expect: Expectations) -> Verdict:
        ahead = [{"entity_id": s["tags"]["entity_id"], "points": int(s["values"][0][1])}
                 for s in influxdb.for_tenant(home.tenant_id).query(
                     f'SELECT count("value") FROM "raw"./.*/ WHERE time > now() + '
                     f'{int(FUTURE_TOLERANCE.total_seconds())}s GROUP BY "entity_id"')]
        return Verdict(ahead, len(ahead))

    return check_homes(context, postgres, tenant_selection, _now_window(), evaluate, listed_as="entities_ahead",
                       what_to_do="fix the clock (NTP) of Home Assistant or of these devices")


@dg.asset_check(
    asset="raw_points", name="entities_fresh",
    description="Freshness: every entity that reported at a regular cadence over the last day has reported "
                "within 10 of its usual intervals (at least an hour). WARN.",
)
def entities_fresh(
    context: dg.AssetCheckExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    def evaluate(home: Home, expect: Expectations) -> Judge:
        db = influxdb.for_tenant(home.tenant_id)
        now_ns = time.time_ns()
        last = {s["tags"]["entity_id"]: int(s["values"][0][0]) for s in db.query(
            f'SELECT last("value") FROM "raw"./.*/ WHERE time > now() - {FRESHNESS_LOOKBACK.days}d '
            'GROUP BY "entity_id"')}
        per_day = {s["tags"]["entity_id"]: int(s["values"][0][1]) for s in db.query(
            'SELECT count("value") FROM "raw"./.*/ WHERE time > now() - 1d GROUP BY "entity_id"')}
        rows: list[dict[str, Any]] = []
        for entity, last_ns in sorted(last.items()):
            interval_s = 86_400 / per_day[entity] if per_day.get(entity, 0) >= 24 else None
            if interval_s is None:
                continue  # no regular cadence to judge silence by (event-driven, or already silent for a day)
            rows.append({"entity_id": entity, "age_s": (now_ns - last_ns) / 1e9,
                         "allowed_s": max(STALE_CADENCES * interval_s, STALE_AT_LEAST.total_seconds())})
        frame = pd.DataFrame(rows, columns=["entity_id", "age_s", "allowed_s"])
        stale = expect.ask(frame, "ExpectColumnPairValuesAToBeGreaterThanB", column_A="allowed_s",
                           column_B="age_s", or_equal=True)

        def judge() -> Verdict:
            failing = [{"entity_id": rows[i]["entity_id"], "silent_for_s": round(rows[i]["age_s"]),
                        "usual_limit_s": round(rows[i]["allowed_s"])} for i in stale.rows()]
            return Verdict(failing, len(rows), dg.AssetCheckSeverity.WARN, {"entities_checked": len(rows)})

        return judge

    return check_homes(context, postgres, tenant_selection, _now_window(), evaluate, listed_as="stale_entities",
                       what_to_do="check these devices' batteries, radio links or integrations")


@dg.asset_check(
    asset="core_metadata", name="series_within_budget",
    description="Each home's entities stay within its series budget (core.tenants.series_budget, the one the "
                "worker enforces): WARN from 90 %, ERROR at the budget, when new entities are already being "
                "dead-lettered.",
)
def series_within_budget(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, tenant_selection: TenantSelection,
) -> dg.AssetCheckResult:
    def evaluate(home: Home, _expect: Expectations) -> Verdict:
        budget = home.series_budget
        with postgres.connect() as conn:
            row = conn.execute("SELECT count(*) FROM core.entities WHERE tenant_id = %s",
                               (home.tenant_id,)).fetchone()
        entities = int(row[0]) if row else 0
        frame = pd.DataFrame({"entities": [entities]})
        over_warn = failing_rows(frame, "ExpectColumnValuesToBeBetween", column="entities", min_value=0,
                                 max_value=BUDGET_WARN_SHARE * budget)
        full = entities >= budget
        failing = [{"entities": entities, "budget": budget}] if over_warn else []
        return Verdict(failing, 1, dg.AssetCheckSeverity.ERROR if full else dg.AssetCheckSeverity.WARN,
                       {"entities": entities, "budget": budget, "used_pct": round(100 * entities / budget, 1)})

    return check_homes(context, postgres, tenant_selection, _now_window(), evaluate, listed_as="over_budget",
                       what_to_do="raise the home's budget (`hats tenant change <id> --series-budget N`), or "
                                  "exclude noisy entities in Home Assistant's MQTT statestream/eventstream filters")


feed_checks = [no_future_points, entities_fresh, series_within_budget]
feed_checks_job = dg.define_asset_job(
    "feed_checks_job", selection=dg.AssetSelection.checks(*feed_checks),
    description="Checks on the live feed: future timestamps, silent entities, the series budget.",
)
feed_checks_schedule = dg.ScheduleDefinition(
    job=feed_checks_job, cron_schedule="20 * * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :20 UTC: clocks, silent devices and the series budget.",
)
