"""Materialise the demo's first hourly partitions into the Dagster instance the UI shows.

Runs as its own process with DAGSTER_HOME set, so the runs land in the PostgreSQL-backed instance.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import dagster as dg

from hats_assets.definitions import defs


def main(hours: int) -> None:
    instance = dg.DagsterInstance.get()
    observed = defs.resolve_job_def("observe_raw_points").execute_in_process(instance=instance)
    if not observed.success:
        raise SystemExit("observing raw_points failed; see the Dagster UI's runs page")
    job = defs.resolve_job_def("entity_hourly_job")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for back in range(hours, 0, -1):
        key = (now - timedelta(hours=back)).strftime("%Y-%m-%d-%H:%M")
        result = job.execute_in_process(partition_key=key, instance=instance)
        rows = result.asset_materializations_for_node("entity_hourly")[0].metadata["rows_upserted"]
        print(f"  - entity_hourly {key}: {'ok' if result.success else 'FAILED'}, {rows.value} rows", flush=True)
        if not result.success:
            raise SystemExit(f"materialising entity_hourly {key} failed; see the Dagster UI")


if __name__ == "__main__":
    main(int(sys.argv[1]))
