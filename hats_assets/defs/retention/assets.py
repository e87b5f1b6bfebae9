"""Retention: keep each home's data exactly as long as its tier says, and raw data as long as it is needed.

Daily, downstream of what it protects (raw points, rollups, warehouse), for every home the run serves, with
the home's own tier (``core.tenants.raw_days``, ``rollup_months``): sets and verifies its InfluxDB
retention-policy durations (``raw`` never shorter than the oldest raw hour whose rollups are not
materialised, current and passing their blocking checks, plus a margin), deletes its warehouse rows older
than its rollup months and its expired per-home ``ops`` rows. Shared by all homes: PostgreSQL ``analytics``
month partitions wholly older than the longest tier of any home are dropped, and the shared ``ops`` logs
purged after ``HATS_RETENTION_OPS_MONTHS``. Every action is written to ``ops.retention_audit``; ``dry_run``
records and prints the same plan without changing anything. One home's failure is recorded and the others go on.

Never on a stale plan: a home's plan carries what it was computed from (``Basis``: its tier, the longest
tier, its unverified raw hours, its current retention policies) and is acted on only if a fresh read of that
basis, in the transaction that acts, still matches — otherwise it is computed again. A home's deletes, its
audit rows and its policy changes share one PostgreSQL transaction, committed after InfluxDB took the
durations; a store gone in the middle (``common/faults.py``) stops the step, and its retry plans everything
again from the stores as they are then. The shared partitions and ops rows are planned and acted on in one
final transaction.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from psycopg import sql
from pydantic import Field, ValidationError

from hats_assets.defs.common import tracing
from hats_assets.defs.common.faults import RUN_RETRY_TAGS, STEP_RETRY_POLICY, step_faults, store_addresses
from hats_assets.defs.common.influx_retention import InfluxRetentionResource
from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource, TenantInflux, quote_ident
from hats_assets.defs.common.tenants import Home, Outcomes, TenantSelection, run_homes
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
# Each warehouse table and the column its period is in (what a home's rollup months count from).
WAREHOUSE_PERIODS = {"hourly_rollup": "hour", "daily_rollup": "day", "local_daily_rollup": "local_day",
                     "state_hourly": "hour", "state_local_daily": "local_day"}
WAREHOUSE_TABLES = list(WAREHOUSE_PERIODS)
LONGEST_TIER_SQL = "SELECT coalesce(max(rollup_months), 0) FROM core.tenants"
TIER_SQL = "SELECT raw_days, rollup_months FROM core.tenants WHERE tenant_id = %(tenant)s"
PLAN_ATTEMPTS = 3  # a basis that changes this often while planning is a home being edited: fail it, retry later
DAYS_PER_MONTH = 365.25 / 12
UNVERIFIED_LISTED = 48
CHECK_NAME = "raw_kept_for_unverified_rollups"


class RetentionSettings(dg.ConfigurableResource):
    """How long the shared logs are kept and the raw margin (HATS_RETENTION_* variables); validated when the
    code loads. How long a home's raw points and rollups are kept is its tier, in core.tenants."""

    ops_months: int = Field(default=12, ge=1, le=120,
                            description="ops.dead_letters, ops.retention_audit and ops.dq_results, months")
    margin_hours: int = Field(default=30, ge=1, le=24 * 14,
                              description="Extra raw retention beyond the oldest unverified hour: at least the "
                                          "interval between retention runs (daily) plus slack")


RETENTION_ENV = {"ops_months": "HATS_RETENTION_OPS_MONTHS", "margin_hours": "HATS_RETENTION_MARGIN_HOURS"}


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


def _rp_durations(db: TenantInflux) -> dict[str, timedelta]:
    """Read with the code location's own account (ALL on the home's database is enough to show them)."""
    rows = db.query(f"SHOW RETENTION POLICIES ON {quote_ident(db.database)}")
    return {values[0]: parse_influx_duration(values[1]) for series in rows for values in series["values"]}


@dataclass(frozen=True, slots=True)
class Basis:
    """What a home's retention plan is computed from; the plan is acted on only while a fresh read equals it."""

    raw_days: int
    rollup_months: int
    longest_tier_months: int
    unverified: tuple[datetime, ...]
    policies: tuple[tuple[str, timedelta], ...]


def _basis(cur: Any, db: TenantInflux, tenant: str, now: datetime) -> Basis:
    """Read it all again (PostgreSQL's tier and watermarks, InfluxDB's policies): READ COMMITTED sees the
    latest committed state at each statement."""
    tier = cur.execute(TIER_SQL, {"tenant": tenant}).fetchone()
    if tier is None:
        raise RuntimeError(f"tenant {tenant!r} left core.tenants while retention ran; nothing of it was changed")
    longest = cur.execute(LONGEST_TIER_SQL).fetchone()
    unverified = tuple(row[0] for row in cur.execute(UNVERIFIED_SQL, {
        "tenant": tenant, "current_hour": now.replace(minute=0, second=0, microsecond=0),
        "limit": UNVERIFIED_LISTED}).fetchall())
    return Basis(int(tier[0]), int(tier[1]), int(longest[0]) if longest else 0, unverified,
                 tuple(sorted(_rp_durations(db).items())))


@dataclass(frozen=True, slots=True)
class HomePlan:
    """One home's retention, computed from ``basis`` at ``computed_at`` (wall clock, for the log)."""

    basis: Basis
    computed_at: datetime
    influx_actions: list[Action]
    durations: dict[str, timedelta]
    extended: bool
    purges: list["Purge"]

    @property
    def actions(self) -> list[Action]:
        return [*self.influx_actions, *(action for action, _ in self.purges)]


def _plan_home(cur: Any, db: TenantInflux, tenant: str, settings: RetentionSettings, now: datetime,
               basis: Basis) -> HomePlan:
    influx_actions, durations, extended = _influx_actions(db, basis, settings, now)
    rollup_cutoff = months_before(now, basis.rollup_months)
    partition_cutoff = months_before(now, basis.longest_tier_months)
    purges = _purges(cur, tenant, [
        ("ops", "ingest_hours", "hour", now - durations[RAW_RP], None),
        ("ops", "rollup_watermarks", "hour", now - durations[RAW_RP], None),
        *(("analytics", table, column,
           rollup_cutoff if column == "hour" else rollup_cutoff.date(),
           partition_cutoff if column == "hour" else partition_cutoff.date())
          for table, column in WAREHOUSE_PERIODS.items() if rollup_cutoff > partition_cutoff)])
    return HomePlan(basis, datetime.now(UTC), influx_actions, durations, extended, purges)


def _current_plan(context: dg.AssetExecutionContext, cur: Any, db: TenantInflux, tenant: str,
                  settings: RetentionSettings, now: datetime) -> HomePlan:
    """A plan whose basis still holds when read again just before acting (the stale-plan guard)."""
    plan = _plan_home(cur, db, tenant, settings, now, _basis(cur, db, tenant, now))
    for _ in range(PLAN_ATTEMPTS):
        fresh = _basis(cur, db, tenant, now)
        if fresh == plan.basis:
            return plan
        context.log.warning("retention of %s: what its plan of %s was computed from changed (%s → %s); planning "
                            "again", tenant, plan.computed_at.isoformat(), plan.basis, fresh)
        plan = _plan_home(cur, db, tenant, settings, now, fresh)
    raise RuntimeError(f"retention of {tenant}: its tier, unverified hours or retention policies changed "
                       f"{PLAN_ATTEMPTS} times while planning; nothing was changed, the next run plans it again")


def _influx_actions(db: TenantInflux, basis: Basis, settings: RetentionSettings,
                    now: datetime) -> tuple[list[Action], dict[str, timedelta], bool]:
    oldest_unverified = basis.unverified[0] if basis.unverified else None
    raw, extended = raw_duration(now, basis.raw_days, oldest_unverified, timedelta(hours=settings.margin_hours))
    wanted = {RAW_RP: raw, ROLLUP_RP: timedelta(days=round(basis.rollup_months * DAYS_PER_MONTH + 0.5))}
    current = dict(basis.policies)
    actions = []
    for rp, duration in wanted.items():
        if current.get(rp) == duration:
            continue
        why = (f"extended beyond the home's {basis.raw_days} d: raw hours from "
               f"{oldest_unverified:%Y-%m-%d %H:00} UTC are not rolled up yet" if rp == RAW_RP and extended
               else "the home's tier")
        actions.append(Action("influxdb", "set_retention_policy", f"{db.database}.{rp}",
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


Purge = tuple[Action, sql.Composed]


Target = tuple[str, str, str, datetime | date, datetime | date | None]  # schema, table, column, before, from


def _purges(cur: Any, tenant: str | None, targets: list[Target]) -> list[Purge]:
    """(action, the DELETE that performs it) for every ``schema.table`` with rows before its cutoff (and from
    ``from`` on, where given: older rows go with their whole partition), only ``tenant``'s when one is given."""
    purges = []
    for schema, table, column, cutoff, since in targets:
        where = sql.SQL("{} < {}").format(sql.Identifier(column), sql.Literal(cutoff))
        if since is not None:
            where = sql.SQL("{} AND {} >= {}").format(where, sql.Identifier(column), sql.Literal(since))
        if tenant is not None:
            where = sql.SQL("{} AND tenant_id = {}").format(where, sql.Literal(tenant))
        relation = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        count = cur.execute(sql.SQL("SELECT count(*), min({}) FROM {} WHERE {}").format(
            sql.Identifier(column), relation, where)).fetchone()
        if count[0]:
            first = count[1] if isinstance(count[1], datetime) else datetime.combine(count[1], datetime.min.time(), UTC)
            until = cutoff if isinstance(cutoff, datetime) else datetime.combine(cutoff, datetime.min.time(), UTC)
            action = Action("postgresql", "purge_rows", f"{schema}.{table}" + (f" ({tenant})" if tenant else ""),
                            first, until, int(count[0]), f"{column} before the {cutoff:%Y-%m-%d %H:%M} cutoff")
            purges.append((action, sql.SQL("DELETE FROM {} WHERE {}").format(relation, where)))
    return purges


@dg.asset(
    retry_policy=STEP_RETRY_POLICY,
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
    influxdb: InfluxDBResource, influxdb_retention: InfluxRetentionResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.MaterializeResult:
    """What each store keeps, per home's tier: raw points (never less than the oldest raw hour still waiting
    for its rollups), rollups and warehouse rows for its rollup months; shared month partitions after the
    longest tier, ops logs 12 months. Every action is in ops.retention_audit."""
    began = time.monotonic()
    now = config.moment()
    outcomes = Outcomes(context.log)
    actions: list[Action] = []
    unverified_by_home: dict[str, list[str]] = {}
    extended_homes: list[str] = []

    def audit(cur: Any, done: list[Action]) -> None:
        cur.executemany(AUDIT_SQL, [{**_row(a), "run_id": context.run.run_id, "dry_run": config.dry_run}
                                    for a in done])

    with (step_faults(context, "retention", store_addresses(influxdb.url, postgres.dsn)) as progress,
          tracing.step(context), postgres.session()):  # one connection for every home of the step
        for home, outcome in outcomes.each(run_homes(context, postgres, tenant_selection)):
            progress.at(f"home {home.tenant_id}",
                        "nothing of this home's plan is kept: its deletes and audit rows were rolled back, and the "
                        "retry plans it again from the stores as they are then (homes before it are done and "
                        "audited)")

            def expire(home: Home = home) -> dict[str, Any]:
                db = influxdb.for_tenant(home.tenant_id)
                alter = influxdb_retention.for_tenant(home.tenant_id)
                with postgres.connect() as conn, conn.cursor() as cur:
                    plan = _current_plan(context, cur, db, home.tenant_id, retention_settings, now)
                    mine = plan.actions
                    audit(cur, mine)  # committed with the deletes, after InfluxDB took the durations
                    _apply(context, config.dry_run, (db, alter), plan.influx_actions, plan.durations, cur,
                           plan.purges, mine)
                actions.extend(mine)
                if plan.basis.unverified:
                    unverified_by_home[home.tenant_id] = [f"{h:%Y-%m-%d-%H:00}" for h in plan.basis.unverified]
                if plan.extended:
                    extended_homes.append(home.tenant_id)
                return {"raw_duration_h": int(plan.durations[RAW_RP] / timedelta(hours=1)),
                        "raw_extended": plan.extended,
                        "rows_purged": sum(a.affected or 0 for a, _ in plan.purges), "actions": len(mine)}

            outcomes.guard(home, outcome, expire)

        progress.at("the shared month partitions and ops logs",
                    "none of them was dropped or purged (one transaction, rolled back); the retry plans them again")
        with postgres.connect() as conn, conn.cursor() as cur:
            # Month partitions hold every home's rows: one goes when it is older than the longest tier of any
            # home (a home with a shorter tier had its older rows deleted above, from that cutoff on). Planned
            # here, in the transaction that drops them, from the tiers as they are now.
            tier = cur.execute(LONGEST_TIER_SQL).fetchone()
            longest = int(tier[0]) if tier else 0
            partition_actions = _expired_partitions(cur, months_before(now, longest)) if longest else []
            ops_cutoff = months_before(now, retention_settings.ops_months)
            shared = _purges(cur, None, [("ops", "dead_letters", "received_at", ops_cutoff, None),
                                         ("ops", "retention_audit", "executed_at", ops_cutoff, None),
                                         ("ops", "dq_results", "checked_at", ops_cutoff, None)])
            common = [*partition_actions, *(action for action, _ in shared)]
            _apply(context, config.dry_run, None, [], {}, cur, shared, common)
            if not config.dry_run:
                for action in partition_actions:
                    cur.execute(sql.SQL("DROP TABLE {}.{}").format(*map(sql.Identifier, action.target.split("."))))
            actions.extend(common)
            audit(cur, common)
    per_home = outcomes.metadata()
    return dg.MaterializeResult(
        metadata={
            "dry_run": config.dry_run,
            "actions": dg.MetadataValue.md(_table(actions)),
            "partitions_dropped": len(partition_actions),
            "longest_tier_months": longest,
            "ops_rows_purged": sum(a.affected or 0 for a, _ in shared),
            **per_home,
            "duration_s": round(time.monotonic() - began, 3),
        },
        check_results=[dg.AssetCheckResult(
            check_name=CHECK_NAME, passed=not extended_homes and not outcomes.failed(),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"tenants_extended": dg.MetadataValue.json(sorted(extended_homes)),
                      "tenants_failed": dg.MetadataValue.json(outcomes.failed()),
                      "unverified_hours": dg.MetadataValue.json(unverified_by_home),
                      "what_to_do": "backfill or re-run rollup_hourly_job for these partitions and homes (run "
                                    "config tenant_selection.tenants); raw retention stays extended until they "
                                    "are rolled up"},
        )],
    )


def _apply(context: dg.AssetExecutionContext, dry_run: bool, home: tuple[TenantInflux, TenantInflux] | None,
           influx_actions: list[Action], durations: dict[str, timedelta], cur: Any, purges: list[Purge],
           actions: list[Action]) -> None:
    """Log the plan; unless a dry run, alter the home's retention policies (``home``: its database read with the
    code location's account, altered through the write gate's retention endpoint), verify them, and delete."""
    for action in actions:
        context.log.info("%s%s %s %s: %s (%s rows)", "[dry run] " if dry_run else "", action.store,
                         action.action, action.target, action.detail, action.affected)
    if dry_run:
        return
    if home is not None:
        db, alter = home
        for action in influx_actions:
            rp = action.target.rsplit(".", 1)[1]
            alter.query(f"ALTER RETENTION POLICY {quote_ident(rp)} ON {quote_ident(db.database)} "
                     f"DURATION {influx_duration(durations[rp])}")
        verified = _rp_durations(db)
        wrong = {rp: d for rp, d in durations.items() if verified.get(rp) != d}
        if wrong:
            raise RuntimeError(f"InfluxDB retention policies of {db.database} did not take the new durations: "
                               f"{wrong}; check the write gate's log (its retention endpoint acts as the "
                               "InfluxDB admin, HATS_INFLUX_GATE_ADMIN_USERNAME)")
    for _, delete in purges:
        cur.execute(delete)


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
    "retention_job", selection=[retention], executor_def=dg.in_process_executor, tags=RUN_RETRY_TAGS,
    description="Apply retention to every store (run config dry_run: true to only plan it).",
)
retention_schedule = dg.ScheduleDefinition(
    job=retention_job, cron_schedule="30 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 UTC: retention policies, expired partitions and ops rows, audited.",
)
