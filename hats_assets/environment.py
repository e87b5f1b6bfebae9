"""What the code location (and Dagster's own `dagster.yaml`) reads from the environment outside its resources'
`dg.EnvVar` fields: listed here, with what each means, so the README's Dagster settings table
(`devstack/readme_tables.py`) names every one; `tests/test_readme_settings.py` fails on a variable read in
`hats_assets/` or `dagster.yaml` that no table documents."""

from __future__ import annotations

from hats_assets.defs.common.faults import DEFAULT_DELAY_S, DEFAULT_RETRIES, DELAY_ENV, RETRIES_ENV
from hats_assets.defs.common.tracing import DagsterTraceSettings
from hats_assets.defs.imports.reload import URL_ENV
from hats_assets.partitions import PARTITIONS_START_ENV

# variable -> (what reads it, default as the table shows it, meaning)
LOCATION_ENVIRONMENT: dict[str, tuple[str, str, str]] = {
    "HATS_DAGSTER_PG_URL": (
        "`dagster.yaml`", "— (required)",
        "PostgreSQL URL of role `hats_dagster` on database `dagster` (Dagster's runs, events, schedules)"),
    "DAGSTER_HOME": (
        "Dagster", "— (required)",
        "folder holding (a link to) `dagster.yaml`; `hats up` makes `.hats/<profile>/dagster_home`"),
    PARTITIONS_START_ENV: (
        "`hats_assets/partitions.py`", "the first day with data",
        "first day (`YYYY-MM-DD`, not after today) of the hourly and daily partitions; unset: the first UTC day any "
        "home has data (earliest of `ops.ingest_hours`, `ops.rollup_watermarks`, `ops.imports`), read from "
        "PostgreSQL when the code location loads (today with no data yet; PostgreSQL unreachable fails the load "
        "naming this setting)"),
    URL_ENV: (
        "`ha_history_import_sensor`", "`http://127.0.0.1:$HATS_DAGSTER_PORT`",
        "the Dagster webserver the import sensor asks to reload the code location"),
    RETRIES_ENV: (
        "`hats_assets/defs/common/faults.py`", f"`{DEFAULT_RETRIES}`",
        "retries (0–20) of a rollup, warehouse, billing or retention step after InfluxDB or PostgreSQL went away (see "
        "\"When a store goes away mid-run\"); the test profile: 2"),
    DELAY_ENV: (
        "`hats_assets/defs/common/faults.py`", f"`{DEFAULT_DELAY_S:g}`",
        "the base of the retries' exponential backoff in seconds: Dagster waits (2ⁿ − 1) × it before retry n, ± it at "
        "random (15: 15, 45, 105, 225 s, a store that stays down fails the step after 390 ± 60 s); the test profile: "
        "0.5"),
    # The tracing variables, read by every rollup, check, warehouse, billing and retention step.
    **{name.upper(): ("`hats_assets/defs/common/tracing.py`",
                      f"`{str(info.default).lower() if isinstance(info.default, bool) else info.default}`"
                      if info.default not in ("", None) else "(empty)",
                      str(info.description))
       for name, info in DagsterTraceSettings.model_fields.items()},
}
