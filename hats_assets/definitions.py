"""The code location: assembles `defs/` and binds resources to the environment; nothing else."""

from __future__ import annotations

import dagster as dg

from hats_assets.defs.common.resources import resources_from_env
from hats_assets.defs.raw.assets import (
    ha_mqtt_feed,
    observe_raw_points_job,
    observe_raw_points_schedule,
    raw_points,
)
from hats_assets.defs.warehouse.assets import entity_hourly, entity_hourly_job, entity_hourly_schedule

defs = dg.Definitions(
    assets=[ha_mqtt_feed, raw_points, entity_hourly],
    jobs=[observe_raw_points_job, entity_hourly_job],
    schedules=[observe_raw_points_schedule, entity_hourly_schedule],
    resources=resources_from_env(),
)
