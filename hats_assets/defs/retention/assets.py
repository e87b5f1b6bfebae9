"""Retention: keep each store's data exactly as long as configured, and raw data as long as it is needed.

Daily, downstream of what it protects (raw points, rollups, warehouse): sets and verifies the InfluxDB
retention-policy durations (``raw`` never shorter than the oldest raw hour whose rollups are not
materialised, current and passing their blocking checks, plus a margin), drops expired PostgreSQL
``analytics`` month partitions, purges expired ``ops`` rows, and writes every action to
``ops.retention_audit``. ``dry_run`` records and prints the same plan without changing anything.
"""

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from psycopg import sql
from pydantic import Field, ValidationError

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.retention.plan import (
    Action,
    expired_partitions,
    influx_duration,
    months_before,
    parse_influx_duration,
    raw_duration,
)
from ingest_worker.contract import RAW_RP, ROLLUP_RP

HERE = Path(__file__).parent
UNVERIFIED_SQL = (HERE / "unverified_hours.sql").read_text()
PARTITIONS_SQL = (HERE / "partitions.sql").read_text()
AUDIT_SQL = (HERE / "audit_insert.sql").read_text()
WAREHOUSE_TABLES = ["hourly_rollup", "daily_rollup", "local_daily_rollup", "state_hourly", "state_local_daily"]
DAYS_PER_MONTH = 365.25 / 12
UNVERIFIED_LISTED = 48
CHECK_NAME = "raw_kept_for_unverified_rollups"


class RetentionSettings(dg.ConfigurableResource):
    """How long each store keeps data (HATS_RETENTION_* variables); validated when the code loads."""

    raw_days: int = Field(default=30, ge=30, le=90, description="Raw points in InfluxDB, days (30–90)")
    rollup_months: int = Field(default=24, ge=12, le=24,
                               description="InfluxDB rollups and PostgreSQL warehouse partitions, months (12–24)")
    ops_months: int = Field(default=12, ge=1, le=120,
                            description="ops.dead_letters, ops.retention_audit and ops.dq_results, months")
    margin_hours: int = Field(default=30, ge=1, le=24 * 14,
                              description="Extra raw retention beyond the oldest unverified hour: at least the "
                                          "interval between retention runs (daily) plus slack")


RETENTION_ENV = {"raw_days": "HATS_RETENTION_RAW_DAYS", "rollup_months": "HATS_RETENTION_ROLLUP_MONTHS",
                 "ops_months": "HATS_RETENTION_OPS_MONTHS", "margin_hours": "HATS_RETENTION_MARGIN_HOURS"}


def retention_settings_from_env(environ: Mapping[str, str]) -> RetentionSettings:
    """Defaults unless set; a bad value fails the code location's load with the variable's name."""
    values: dict[str, Any] = {}
    for field, variable in RETENTION_ENV.items():
        if variable in environ:
            try:
                values[field] = int(environ[variable])
            except ValueError:
                raise ValueError(f"{variable}={environ[variable]!r} is not a whole number") from None
    try:
        return RetentionSettings(**values)
    except ValidationError as error:
        problems = "; ".join(f"{RETENTION_ENV[str(e['loc'][0])]}: {e['msg']}" for e in error.errors())
        raise ValueError(f"invalid retention settings: {problems}") from None


class RetentionRun(dg.Config):
    dry_run: bool = Field(default=False, description="Print and audit the plan, change nothing")
    as_of: str | None = Field(default=None, description="Decide as of this past UTC instant (ISO 8601) instead "
                                                         "of now: a dry run and the real run then plan alike")

    def moment(self) -> datetime:
        now = datetime.now(UTC)
        if self.as_of is None:
            return now
        moment = datetime.fromisoformat(self.as_of).astimezone(UTC)
        if moment > now:
            raise ValueError(f"as_of {self.as_of} is in the future: retention would delete data still in use")
        return moment


def _rp_durations(influxdb_admin: InfluxDBResource) -> dict[str, timedelta]:
    rows = influxdb_admin.query(f'SHOW RETENTION POLICIES ON "{influxdb_admin.database}"')
    return {values[0]: parse_influx_duration(values[1]) for series in rows for values in series["values"]}


def _influx_actions(influxdb_admin: InfluxDBResource, settings: RetentionSettings, now: datetime,
                    oldest_unverified: datetime | None) -> tuple[list[Action], dict[str, timedelta], bool]:
    raw, extended = raw_duration(now, settings.raw_days, oldest_unverified, timedelta(hours=settings.margin_hours))
    wanted = {RAW_RP: raw, ROLLUP_RP: timedelta(days=round(settings.rollup_months * DAYS_PER_MONTH + 0.5))}
    current = _rp_durations(influxdb_admin)
    actions = []
    for rp, duration in wanted.items():
        if current.get(rp) == duration:
            continue
        why = (f"extended beyond the configured {settings.raw_days} d: raw hours from "
               f"{oldest_unverified:%Y-%m-%d %H:00} UTC are not rolled up yet" if rp == RAW_RP and extended
               else "configured")
        actions.append(Action("influxdb", "set_retention_policy", f"{influxdb_admin.database}.{rp}",
                              None, None, None,
                              f"duration {influx_duration(current[rp]) if rp in current else 'none'} → "
                              f"{influx_duration(duration)} ({why})"))
    return actions, wanted, extended


def _expired_partitions(cur: Any, cutoff: datetime) -> list[Action]:
    names = [row[0] for row in cur.execute(PARTITIONS_SQL, {"parents": WAREHOUSE_TABLES}).fetchall()]
    actions = []
    for partition in expired_partitions(names, cutoff):
        rows = cur.execute(sql.SQL("SELECT count(*) FROM analytics.{}").format(sql.Identifier(partition.name)))
        actions.append(Action("postgresql", "drop_partition", f"analytics.{partition.name}",
                              datetime(partition.start.year, partition.start.month, 1, tzinfo=UTC),
                              datetime(partition.end.year, partition.end.month, 1, tzinfo=UTC),
                              int(rows.fetchone()[0]), f"whole month before the {cutoff:%Y-%m-%d} cutoff"))
    return actions


def _ops_purges(cur: Any, tenant: str, ops_cutoff: datetime, raw_cutoff: datetime) -> list[tuple[Action, sql.Composed]]:
    """(action, the DELETE that performs it) for every ops table with rows past its retention."""
    purges = []
    for table, column, cutoff, per_tenant in (
        ("dead_letters", "received_at", ops_cutoff, False),
        ("retention_audit", "executed_at", ops_cutoff, False),
        ("dq_results", "checked_at", ops_cutoff, False),
        ("ingest_hours", "hour", raw_cutoff, True),
        ("rollup_watermarks", "hour", raw_cutoff, True),
    ):
        where = sql.SQL("{} < {}").format(sql.Identifier(column), sql.Literal(cutoff))
        if per_tenant:
            where = sql.SQL("{} AND tenant_id = {}").format(where, sql.Literal(tenant))
        count = cur.execute(sql.SQL("SELECT count(*), min({}) FROM ops.{} WHERE {}").format(
            sql.Identifier(column), sql.Identifier(table), where)).fetchone()
        if count[0]:
            action = Action("postgresql", "purge_rows", f"ops.{table}", count[1], cutoff, int(count[0]),
                            f"{column} before the {cutoff:%Y-%m-%d %H:%M} cutoff")
            purges.append((action, sql.SQL("DELETE FROM ops.{} WHERE {}").format(sql.Identifier(table), where)))
    return purges


@dg.asset(
    deps=["raw_points", "rollup_1h", "hourly_rollup", "daily_rollup", "local_daily_rollup", "state_hourly",
          "state_local_daily"],
    check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset="retention",
                                   description="Raw retention did not have to be extended over raw hours whose "
                                               "rollups are missing or stale (rollups keep up)")],
    group_name="retention",
    kinds={"influxdb", "postgres"},
    owners=["team:data-platform"],
    tags={"layer": "expire"},
)
def retention(
    context: dg.AssetExecutionContext, config: RetentionRun, retention_settings: RetentionSettings,
    influxdb_admin: InfluxDBResource, postgres: PostgresResource,
) -> dg.MaterializeResult:
    """What each store keeps: raw points 30–90 days (never less than the oldest raw hour still waiting
    for its rollups), rollups and warehouse partitions 12–24 months, ops logs 12 months. Every action
    is in ops.retention_audit."""
    began = time.monotonic()
    now = config.moment()
    tenant = influxdb_admin.tenant
    with postgres.connect() as conn, conn.cursor() as cur:
        unverified = [row[0] for row in cur.execute(UNVERIFIED_SQL, {
            "tenant": tenant, "current_hour": now.replace(minute=0, second=0, microsecond=0),
            "limit": UNVERIFIED_LISTED}).fetchall()]
        oldest = unverified[0] if unverified else None
        influx_actions, durations, extended = _influx_actions(influxdb_admin, retention_settings, now, oldest)
        rollup_cutoff = months_before(now, retention_settings.rollup_months)
        partition_actions = _expired_partitions(cur, rollup_cutoff)
        purges = _ops_purges(cur, tenant, months_before(now, retention_settings.ops_months), now - durations[RAW_RP])
        actions = [*influx_actions, *partition_actions, *(action for action, _ in purges)]
        for action in actions:
            context.log.info("%s%s %s %s: %s (%s rows)", "[dry run] " if config.dry_run else "", action.store,
                             action.action, action.target, action.detail, action.affected)
        if not config.dry_run:
            for action in influx_actions:
                rp = action.target.rsplit(".", 1)[1]
                influxdb_admin.query(f'ALTER RETENTION POLICY "{rp}" ON "{influxdb_admin.database}" '
                                     f"DURATION {influx_duration(durations[rp])}")
            verified = _rp_durations(influxdb_admin)
            wrong = {rp: d for rp, d in durations.items() if verified.get(rp) != d}
            if wrong:
                raise RuntimeError(f"InfluxDB retention policies did not take the new durations: {wrong}; "
                                   "check the admin account's rights")
            for action in partition_actions:
                cur.execute(sql.SQL("DROP TABLE {}.{}").format(*map(sql.Identifier, action.target.split("."))))
            for _, delete in purges:
                cur.execute(delete)
        cur.executemany(AUDIT_SQL, [{**_row(a), "run_id": context.run.run_id, "dry_run": config.dry_run}
                                    for a in actions])
    return dg.MaterializeResult(
        metadata={
            "dry_run": config.dry_run,
            "actions": dg.MetadataValue.md(_table(actions)),
            "raw_duration_h": int(durations[RAW_RP] / timedelta(hours=1)),
            "raw_extended": extended,
            "partitions_dropped": len(partition_actions),
            "ops_rows_purged": sum(a.affected or 0 for a, _ in purges),
            "duration_s": round(time.monotonic() - began, 3),
        },
        check_results=[dg.AssetCheckResult(
            check_name=CHECK_NAME, passed=not extended, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"oldest_unverified_hour": str(oldest) if oldest else "none",
                      "unverified_hours": dg.MetadataValue.json([f"{h:%Y-%m-%d-%H:00}" for h in unverified]),
                      "what_to_do": "backfill or re-run rollup_hourly_job for these partitions; raw retention "
                                    "stays extended until they are rolled up"},
        )],
    )


def _row(action: Action) -> dict[str, Any]:
    return {"store": action.store, "action": action.action, "target": action.target,
            "range_start": action.range_start, "range_end": action.range_end, "affected": action.affected,
            "detail": action.detail}


def _table(actions: list[Action]) -> str:
    if not actions:
        return "nothing to do"
    lines = ["| store | action | target | affected | detail |", "|---|---|---|---|---|"]
    lines += [f"| {a.store} | {a.action} | {a.target} | {a.affected if a.affected is not None else ''} | {a.detail} |"
              for a in actions]
    return "\n".join(lines)


retention_job = dg.define_asset_job(
    "retention_job", selection=[retention], executor_def=dg.in_process_executor,
    description="Apply retention to every store (run config dry_run: true to only plan it).",
)
retention_schedule = dg.ScheduleDefinition(
    job=retention_job, cron_schedule="30 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 UTC: retention policies, expired partitions and ops rows, audited.",
)
