"""Where check results go and how the warehouse asks about them: ``ops.dq_results``, one row per home.

A check runs for every home the run serves (``common/tenants.py``); each home's verdict is its own row,
so a home that fails a blocking check holds back only its own hours (``failed_hours`` is per tenant), and
the Dagster check result lists per home what passed, what failed and the rows to act on.
"""

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from hats_assets.defs.common.resources import PostgresResource
from hats_assets.defs.common.tenants import ERROR_CHARS, Home, TenantSelection, run_homes

HERE = Path(__file__).parent
RECORD_SQL = (HERE / "record_result.sql").read_text()
FAILED_HOURS_SQL = (HERE / "failed_hours.sql").read_text()
DETAILS_LISTED = 50
TENANTS_LISTED = 50  # homes whose failing rows a check result lists (all are in ops.dq_results)


def frame_of(series: list[dict[str, Any]], tag_keys: tuple[str, ...]) -> pd.DataFrame:
    """An InfluxDB answer (series with tags) as one frame, the tags as columns."""
    frames = []
    for one in series:
        frame = pd.DataFrame(one["values"], columns=one["columns"])
        for key in tag_keys:
            frame[key] = one["tags"][key]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["time", *tag_keys])


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


def record(postgres: PostgresResource, run_id: str, tenant: str, asset: str, check: str,
           window: tuple[datetime, datetime], verdict: Verdict) -> None:
    """One row of ``ops.dq_results``: every failing row of the home, for SQL and for the gates."""
    with postgres.connect() as conn:
        conn.execute(RECORD_SQL, {
            "run_id": run_id, "tenant": tenant, "asset": asset, "check": check, "start": window[0],
            "end": window[1], "passed": not verdict.failing, "severity": verdict.severity.value,
            "failing": len(verdict.failing), "checked": verdict.checked,
            "details": json.dumps(verdict.failing, default=_native),
        })


def check_homes(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, selection: TenantSelection,
    window: tuple[datetime, datetime], evaluate: Callable[[Home], Verdict], *, listed_as: str, what_to_do: str,
) -> dg.AssetCheckResult:
    """Run a check for every home of the run, record each home's verdict, and return one Dagster result.

    A home whose check cannot run (its database unreachable, a query refused) fails the check with the
    error as its row: an hour nobody could verify is not loaded. The result passes when every home passed;
    its severity is ERROR when any failing home's is.
    """
    [spec] = context.check_specs
    asset = spec.asset_key.to_user_string()
    per_home: dict[str, dict[str, Any]] = {}
    listed: dict[str, Any] = {}
    severities: list[dg.AssetCheckSeverity] = []
    for home in run_homes(context, postgres, selection):
        try:
            verdict = evaluate(home)
        except Exception as exc:
            context.log.error("check %s for tenant %s: %s", spec.name, home.tenant_id, traceback.format_exc(limit=5))
            verdict = Verdict([{"error": f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]}], 0,
                              dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN)
        record(postgres, context.run.run_id, home.tenant_id, asset, spec.name, window, verdict)
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
