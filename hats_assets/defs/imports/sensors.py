"""Imports of Home Assistant's history in the Dagster UI: one observation per finished ``hats import``.

The importer (``hats import``, the worker's side) writes one ``ops.imports`` row per run. This sensor
follows them in order (cursor: the last ``import_id`` handled) and, for each finished one:

* records an observation of ``ha_history_import`` (tenant, source, status, ranges, counts);
* reports the ``rollup_1h``/``rollup_5m`` hours the imported statistics filled as materialised (runless,
  ``origin: imported``) where no run has materialised them, so they are not shown missing;
* requests one warehouse run over the UTC days the import touched (its assets backfill in a single run).

An import reaching before the first partition (resolved when the code location loaded) makes it ask the
webserver to reload the code location and stop there: the next tick, in the reloaded location, has the
older partitions and handles the import.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from hats_assets.defs.common.resources import PostgresResource
from hats_assets.defs.common.tenants import TenantSelection, homes, tenants_run_config, tenants_tag
from hats_assets.defs.imports.reload import reload_code_location, webserver_url
from hats_assets.defs.warehouse.assets import warehouse_job
from hats_assets.partitions import FIRST_DAY, daily_partitions, hour_key, hourly_partitions

HERE = Path(__file__).parent
FINISHED_IMPORTS = (HERE / "finished_imports.sql").read_text()
IMPORTS_PER_TICK = 20
IMPORT_ASSET = "ha_history_import"
IMPORTED_ROLLUPS = ("rollup_1h", "rollup_5m")
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
IMPORT_TAG = "hats/import_id"
HOUR = timedelta(hours=1)

ha_history_import = dg.AssetSpec(
    IMPORT_ASSET, group_name="raw", kinds={"homeassistant"}, owners=["team:data-platform"],
    description="Home Assistant's recorder history brought in by `hats import`: its states as raw points "
                "(through the worker's pipeline) and its long-term statistics as imported 1 h / 5 min rows; "
                "one observation per import run (ops.imports), recorded by ha_history_import_sensor.",
)


def _earliest(row: dict[str, Any]) -> datetime | None:
    moments = [m for m in (row["first_at"], row["hours_from"]) if m is not None]
    return min(moments) if moments else None


def _observation(row: dict[str, Any], tenant: str) -> dg.AssetObservation:
    def stamp(moment: datetime | None) -> str:
        return moment.astimezone(UTC).isoformat() if moment is not None else "—"

    return dg.AssetObservation(IMPORT_ASSET, metadata={
        "import_id": row["import_id"], "tenant": tenant, "source_kind": row["source_kind"],
        "source": row["source"], "status": row["status"],
        "started_at": stamp(row["started_at"]), "finished_at": stamp(row["finished_at"]),
        "states_read": row["states_read"], "points_written": row["points_written"],
        "dead_lettered": row["dead_lettered"], "statistic_rows": row["statistic_rows"],
        "states_from": stamp(row["first_at"]), "states_to": stamp(row["last_at"]),
        "statistics_hours_from": stamp(row["hours_from"]), "statistics_hours_to": stamp(row["hours_to"]),
        "detail": row["detail"] or "",
    })


def _filled_hours(row: dict[str, Any], last_key: str | None) -> list[str]:
    """Hourly partition keys of the statistics' hours ``[hours_from, hours_to)`` that exist now."""
    if row["hours_from"] is None or row["hours_to"] is None or last_key is None:
        return []
    keys, hour = [], row["hours_from"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < row["hours_to"] and hour_key(hour) <= last_key:
        keys.append(hour_key(hour))
        hour += HOUR
    return keys


def _touched_days(row: dict[str, Any], last_day: str | None) -> tuple[str, str] | None:
    """The first and last UTC day (partition keys) holding a state or a statistics hour of the import."""
    spans = [(row["first_at"], row["last_at"]), (row["hours_from"], row["hours_to"] and row["hours_to"] - HOUR)]
    moments = [m.astimezone(UTC) for span in spans if None not in span for m in span]
    if not moments or last_day is None:
        return None
    first, last = f"{min(moments):%Y-%m-%d}", min(f"{max(moments):%Y-%m-%d}", last_day)
    return (first, last) if first <= last else None


@dg.sensor(
    name="ha_history_import_sensor", job=warehouse_job, minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Shows each finished `hats import` (ops.imports) of every home as an observation of "
                "ha_history_import, marks the rollup hours its statistics filled, and loads the warehouse days it "
                "touched for that home only (run config tenant_selection.tenants, tag hats/tenants).",
)
def import_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource,
                  tenant_selection: TenantSelection) -> dg.SensorResult:
    after = int(context.cursor or 0)
    tenants = [home.tenant_id for home in homes(postgres, tenant_selection.tenants)]
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(FINISHED_IMPORTS, {"tenants": tenants, "after": after, "limit": IMPORTS_PER_TICK})
        names = [column.name for column in cur.description or []]
        rows = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
    events: list[dg.AssetObservation | dg.AssetMaterialization] = []
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    last_hour, last_day = hourly_partitions.get_last_partition_key(), daily_partitions.get_last_partition_key()
    materialised = {name: context.instance.get_materialized_partitions(dg.AssetKey(name))
                    for name in IMPORTED_ROLLUPS}
    for row in rows:
        if row["status"] == "running":
            notes.append(f"import {row['import_id']} is still running")
            break
        earliest = _earliest(row)
        if earliest is not None and earliest.astimezone(UTC).date() < FIRST_DAY:
            url = webserver_url(os.environ)
            reload_code_location(url)
            notes.append(f"import {row['import_id']} reaches back to {earliest:%Y-%m-%d}, before the first "
                         f"partition ({FIRST_DAY}): asked {url} to reload the code location; the next tick "
                         "handles the import with the older partitions")
            break
        events.append(_observation(row, row["tenant_id"]))
        for name in IMPORTED_ROLLUPS:
            events.extend(dg.AssetMaterialization(name, partition=key, metadata={
                "origin": "imported", "import_id": row["import_id"]})
                for key in _filled_hours(row, last_hour) if key not in materialised[name])
        days = _touched_days(row, last_day)
        if days is not None:
            requests.append(dg.RunRequest(
                run_key=f"import:{row['import_id']}", run_config=tenants_run_config([row["tenant_id"]]),
                tags={RANGE_START_TAG: days[0], RANGE_END_TAG: days[1], IMPORT_TAG: str(row["import_id"]),
                      **tenants_tag([row["tenant_id"]])}))
        after = row["import_id"]
    if not events and not requests:
        return dg.SensorResult(cursor=str(after),
                               skip_reason="; ".join(notes) or "no finished import since the last one shown")
    return dg.SensorResult(asset_events=events, run_requests=requests, cursor=str(after))
