"""The code location: assembles `defs/` and binds resources to the environment; nothing else."""

from __future__ import annotations

import os

import dagster as dg

from hats_assets.defs.billing.assets import billing_job, billing_schedule, usage_daily
from hats_assets.defs.common.influx_retention import retention_resource_from_env
from hats_assets.defs.common.resources import resources_from_env
from hats_assets.defs.common.tenants import TenantSelection
from hats_assets.defs.core.assets import core_metadata
from hats_assets.defs.imports.sensors import ha_history_import, import_sensor
from hats_assets.defs.quality.feed_checks import feed_checks, feed_checks_job, feed_checks_schedule
from hats_assets.defs.quality.rollup_checks import rollup_checks
from hats_assets.defs.quality.warehouse_checks import warehouse_rows_match_rollups
from hats_assets.defs.raw.assets import ha_mqtt_feed, observe_raw_points_job, observe_raw_points_schedule, raw_points
from hats_assets.defs.retention.assets import (
    retention,
    retention_job,
    retention_schedule,
    retention_settings_from_env,
)
from hats_assets.defs.rollups.assets import rollups
from hats_assets.defs.rollups.schedules import late_data_sensor, rollup_job, rollup_schedule
from hats_assets.defs.warehouse.assets import (
    analyst_views,
    daily_rollup,
    hourly_rollup,
    local_daily_rollup,
    warehouse_job,
    warehouse_reload_sensor,
    warehouse_schedule,
)
from hats_assets.defs.warehouse.states import (
    state_daily_view,
    state_hourly,
    state_job,
    state_local_daily,
    state_reload_sensor,
    state_schedule,
)

defs = dg.Definitions(
    assets=[ha_mqtt_feed, ha_history_import, raw_points, core_metadata, rollups, hourly_rollup, daily_rollup,
            local_daily_rollup, *analyst_views, state_hourly, state_local_daily, state_daily_view, retention,
            usage_daily],
    asset_checks=[*feed_checks, *rollup_checks, warehouse_rows_match_rollups],
    jobs=[observe_raw_points_job, rollup_job, warehouse_job, state_job, retention_job, feed_checks_job, billing_job],
    schedules=[observe_raw_points_schedule, rollup_schedule, warehouse_schedule, state_schedule, retention_schedule,
               feed_checks_schedule, billing_schedule],
    sensors=[late_data_sensor, warehouse_reload_sensor, state_reload_sensor, import_sensor],
    # Every home in one code location: runs serve every active tenant, or the ones a run names
    # (tenant_selection.tenants in run config, or the hats/tenants tag).
    resources={**resources_from_env(), "influxdb_retention": retention_resource_from_env(),
               "retention_settings": retention_settings_from_env(os.environ),
               "tenant_selection": TenantSelection()},
)
