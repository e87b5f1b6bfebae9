"""Where check results go and how the warehouse asks about them: ``ops.dq_results``, one row per home.

A check runs for every home the run serves (``common/tenants.py``); each home's verdict is its own row,
so a home that fails a blocking check holds back only its own hours (``failed_hours`` is per tenant), and
the Dagster check result lists per home what passed, what failed and the rows to act on.
"""

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from hats_assets.defs.common import tracing
from hats_assets.defs.common.resources import PostgresResource
from hats_assets.defs.common.tenants import ERROR_CHARS, Home, TenantSelection, run_homes
from hats_assets.defs.quality.expectations import Expectations

HERE = Path(__file__).parent
RECORD_SQL = (HERE / "record_result.sql").read_text()
FAILED_HOURS_SQL = (HERE / "failed_hours.sql").read_text()
DETAILS_LISTED = 50
TENANTS_LISTED = 50  # homes whose failing rows a check result lists (all are in ops.dq_results)


def frame_of(series: list[dict[str, Any]], tag_keys: tuple[str, ...]) -> pd.DataFrame:
    """An InfluxDB answer (series with tags) as one frame, the tags as columns.

    Built in one go from all series' rows (a frame per series and a concat cost ~5 ms a series: 2 s of a
    400-entity check)."""
    if not series:
        return pd.DataFrame(columns=["time", *tag_keys])
    columns = series[0]["columns"]
    if any(one["columns"] != columns for one in series):  # statements over differing fields: align by name
        return pd.concat([pd.DataFrame(one["values"], columns=one["columns"]).assign(
            **{key: one["tags"][key] for key in tag_keys}) for one in series], ignore_index=True)
    frame = pd.DataFrame([row for one in series for row in one["values"]], columns=columns)
    for key in tag_keys:
        frame[key] = [one["tags"][key] for one in series for _ in one["values"]]
    return frame


def _native(value: Any) -> Any:
    """numpy scalars → Python numbers; anything else as text."""
    return value.item() if hasattr(value, "item") else str(value)


def plain(rows: list[dict[str, Any]]) -> Any:
    """JSON-native values for metadata (numpy scalars are not), capped to what a person reads."""
    return json.loads(json.dumps(rows[:DETAILS_LISTED], default=_native))


@dataclass(frozen=True, slots=True)
class Verdict:
    """One home's outcome of one check: the failing rows, how much was checked, the numbers it reports."""

    failing: list[dict[str, Any]]
    checked: int
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    numbers: dict[str, Any] = field(default_factory=dict)


def _row(run_id: str, tenant: str, asset: str, check: str, window: tuple[datetime, datetime],
         verdict: Verdict) -> dict[str, Any]:
    return {"run_id": run_id, "tenant": tenant, "asset": asset, "check": check, "start": window[0],
            "end": window[1], "passed": not verdict.failing, "severity": verdict.severity.value,
            "failing": len(verdict.failing), "checked": verdict.checked,
            "details": json.dumps(verdict.failing, default=_native)}


def record(postgres: PostgresResource, run_id: str, tenant: str, asset: str, check: str,
           window: tuple[datetime, datetime], verdict: Verdict) -> None:
    """One row of ``ops.dq_results``: every failing row of the home, for SQL and for the gates."""
    with postgres.connect() as conn:
        conn.execute(RECORD_SQL, _row(run_id, tenant, asset, check, window, verdict))


def record_all(postgres: PostgresResource, run_id: str, asset: str, check: str, window: tuple[datetime, datetime],
               verdicts: list[tuple[Home, Verdict]]) -> None:
    """Every home's row of one check in one statement batch (``record`` for each, one round trip)."""
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.executemany(RECORD_SQL, [_row(run_id, home.tenant_id, asset, check, window, verdict)
                                     for home, verdict in verdicts])


Judge = Callable[[], Verdict]  # a home's verdict, once the check's expectations are validated


def check_homes(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, selection: TenantSelection,
    window: tuple[datetime, datetime], evaluate: Callable[[Home, Expectations], Verdict | Judge], *,
    listed_as: str, what_to_do: str,
) -> dg.AssetCheckResult:
    """Run a check for every home of the run, record each home's verdict, and return one Dagster result.

    ``evaluate`` reads one home's data and returns its verdict, or — when it asked great-expectations
    (``Expectations.ask``) — a function giving the verdict once every home's rows are validated together
    (one validation per distinct expectation for the whole run, ``expectations.py``).

    A home whose check cannot run (its database unreachable, a query refused) fails the check with the
    error as its row: an hour nobody could verify is not loaded. The result passes when every home passed;
    its severity is ERROR when any failing home's is.
    """
    [spec] = context.check_specs
    asset = spec.asset_key.to_user_string()

    def error(exc: Exception, home: Home) -> Verdict:
        context.log.error("check %s for tenant %s: %s", spec.name, home.tenant_id, traceback.format_exc(limit=5))
        return Verdict([{"error": f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]}], 0,
                       dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN)

    with tracing.step(context), postgres.session():  # one connection for every home of the check
        expectations = Expectations()
        pending: list[tuple[Home, Verdict | Judge]] = []
        started: dict[str, int] = {}  # when each home's evaluation began (its span, epoch ns)
        failures: dict[str, Exception] = {}
        for home in run_homes(context, postgres, selection):
            started[home.tenant_id] = time.time_ns()
            try:
                pending.append((home, evaluate(home, expectations)))
            except Exception as exc:
                failures[home.tenant_id] = exc
                pending.append((home, error(exc, home)))
        try:
            expectations.validate()
            validated: Exception | None = None
        except Exception as exc:  # great-expectations itself failed: no home that asked it is verified
            validated = exc
        verdicts: list[tuple[Home, Verdict]] = []
        for home, judged in pending:
            if isinstance(judged, Verdict):
                verdicts.append((home, judged))
                continue
            try:
                if validated is not None:
                    raise validated
                verdicts.append((home, judged()))
            except Exception as exc:
                failures[home.tenant_id] = exc
                verdicts.append((home, error(exc, home)))
        record_all(postgres, context.run.run_id, asset, spec.name, window, verdicts)
        for home, verdict in verdicts:
            failure = failures.get(home.tenant_id)
            tracing.home(home.tenant_id, started[home.tenant_id],
                         "failed" if failure else "failing" if verdict.failing else "passed",
                         {"failing": len(verdict.failing), "checked": verdict.checked, **verdict.numbers}, failure)

    per_home: dict[str, dict[str, Any]] = {}
    listed: dict[str, Any] = {}
    severities: list[dg.AssetCheckSeverity] = []
    for home, verdict in verdicts:
        per_home[home.tenant_id] = {"passed": not verdict.failing, "failing": len(verdict.failing),
                                    "checked": verdict.checked, **verdict.numbers}
        if verdict.failing:
            severities.append(verdict.severity)
            if len(listed) < TENANTS_LISTED:
                listed[home.tenant_id] = plain(verdict.failing)
    failing_homes = sorted(t for t, r in per_home.items() if not r["passed"])
    severity = (dg.AssetCheckSeverity.ERROR if dg.AssetCheckSeverity.ERROR in severities or not severities
                else dg.AssetCheckSeverity.WARN)
    return dg.AssetCheckResult(passed=not failing_homes, severity=severity, metadata={
        "tenants_checked": len(per_home),
        "tenants_failing": dg.MetadataValue.json(failing_homes),
        listed_as: dg.MetadataValue.json(json.loads(json.dumps(listed, default=_native))),
        "per_tenant": dg.MetadataValue.json(json.loads(json.dumps(per_home, default=_native))),
        "what_to_do": what_to_do + "; re-run one home with run config tenant_selection.tenants (or run tag "
                                   "hats/tenants)",
    })


def failed_hours(postgres: PostgresResource, tenant: str, start: datetime, end: datetime,
                 assets: tuple[str, ...] = ("rollup_1m", "rollup_1h")) -> list[tuple[Any, ...]]:
    """Hours in ``[start, end)`` whose latest result of some blocking check of ``assets`` failed for ``tenant``."""
    with postgres.connect() as conn:
        return conn.execute(FAILED_HOURS_SQL, {"tenant": tenant, "start": start, "end": end,
                                               "assets": list(assets)}).fetchall()
