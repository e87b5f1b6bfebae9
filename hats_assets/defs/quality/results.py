"""Where check results go and how the warehouse asks about them: ``ops.dq_results``."""

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from hats_assets.defs.common.resources import PostgresResource

HERE = Path(__file__).parent
RECORD_SQL = (HERE / "record_result.sql").read_text()
FAILED_HOURS_SQL = (HERE / "failed_hours.sql").read_text()
DETAILS_LISTED = 50


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


def conclude(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, tenant: str,
    window: tuple[datetime, datetime], failing: list[dict[str, Any]], checked: int, *,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR, listed_as: str | None = None,
    what_to_do: str, **metadata: Any,
) -> dg.AssetCheckResult:
    """Record a check's outcome in ``ops.dq_results`` (every failing row) and return what Dagster shows
    (the first ``DETAILS_LISTED`` of them under ``listed_as``, and what a person should do)."""
    [spec] = context.check_specs
    with postgres.connect() as conn:
        conn.execute(RECORD_SQL, {
            "run_id": context.run.run_id, "tenant": tenant, "asset": spec.asset_key.to_user_string(),
            "check": spec.name, "start": window[0], "end": window[1], "passed": not failing,
            "severity": severity.value, "failing": len(failing), "checked": checked,
            "details": json.dumps(failing, default=_native),
        })
    if listed_as is not None:
        metadata[listed_as] = dg.MetadataValue.json(plain(failing))
    return dg.AssetCheckResult(passed=not failing, severity=severity,
                               metadata={**metadata, "what_to_do": what_to_do})


def failed_hours(postgres: PostgresResource, tenant: str, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """Hours in ``[start, end)`` whose latest result of some blocking check failed."""
    with postgres.connect() as conn:
        return conn.execute(FAILED_HOURS_SQL, {"tenant": tenant, "start": start, "end": end}).fetchall()
