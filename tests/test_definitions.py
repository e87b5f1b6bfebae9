"""The code location loads, its lineage reads as the data flows, and the worker stays lightweight."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from typing import Any

import dagster as dg
import pytest

from devstack.profile import PROJECT_ROOT
from hats_assets.definitions import defs
from tests.conftest import TEST_PARTITIONS_START

# Every asset and its parents, as the data flows: MQTT feed → raw points / core metadata → 1 min → 5 min
# → 1 h rollups → hourly → daily warehouse tables → the analysts' views (which also join core metadata).
LINEAGE: dict[str, set[str]] = {
    "ha_mqtt_feed": set(),
    "ha_history_import": set(),  # `hats import` runs, observed by ha_history_import_sensor
    "raw_points": {"ha_mqtt_feed"},
    "core_metadata": {"ha_mqtt_feed"},
    "rollup_1m": {"raw_points", "core_metadata"},
    "rollup_5m": {"rollup_1m"},
    "rollup_1h": {"rollup_5m"},
    "rollup_states_1h": {"raw_points", "core_metadata"},
    "state_hourly": {"rollup_states_1h"},
    "state_local_daily": {"state_hourly"},
    "state_daily": {"state_local_daily", "core_metadata"},
    "hourly_rollup": {"rollup_1h", "ha_history_import"},
    "daily_rollup": {"hourly_rollup"},
    "local_daily_rollup": {"hourly_rollup"},
    "entity_hourly": {"hourly_rollup", "core_metadata"},
    "entity_daily": {"local_daily_rollup", "core_metadata"},
    "energy_daily": {"local_daily_rollup", "core_metadata"},
    "energy_weekly": {"local_daily_rollup", "core_metadata"},
    "energy_monthly": {"local_daily_rollup", "core_metadata"},
    "entity_daily_utc": {"daily_rollup", "core_metadata"},
    "energy_daily_utc": {"daily_rollup", "core_metadata"},
    "device_last_seen": {"hourly_rollup", "daily_rollup", "core_metadata"},
    # Retention sits downstream of everything it protects.
    "retention": {"raw_points", "rollup_1h", "hourly_rollup", "daily_rollup", "local_daily_rollup", "state_hourly",
                  "state_local_daily"},
    # Each home's usage of a day: its raw points (ingested, entities, storage) and its rollups' storage.
    "usage_daily": {"raw_points", "rollup_1h"},
}
ROLLUPS = {"rollup_1m", "rollup_5m", "rollup_1h", "rollup_states_1h"}
WAREHOUSE = {"hourly_rollup", "daily_rollup", "local_daily_rollup"}
STATES = {"state_hourly", "state_local_daily"}  # the warehouse's time in each state, its own job
VIEWS = {"entity_hourly", "entity_daily", "energy_daily", "energy_weekly", "energy_monthly", "entity_daily_utc",
         "energy_daily_utc", "device_last_seen", "state_daily"}
GROUPS = {"ha_mqtt_feed": "raw", "ha_history_import": "raw", "raw_points": "raw", "core_metadata": "raw",
          **dict.fromkeys(ROLLUPS, "rollups"), **dict.fromkeys(WAREHOUSE | STATES, "warehouse"),
          **dict.fromkeys(VIEWS, "analyst_views"), "retention": "retention", "usage_daily": "billing"}
LATE_DATA_LABEL = "reload a loaded day when its upstream partitions were updated (late data)"


def _node(name: str) -> Any:
    return defs.resolve_asset_graph().get(dg.AssetKey(name))


def test_definitions_load_and_validate() -> None:
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert {name for name in repository.job_names if not name.startswith("__")} == {
        "observe_raw_points", "rollup_hourly_job", "warehouse_daily_job", "warehouse_states_job", "retention_job",
        "feed_checks_job", "billing_daily_job"}
    assert {schedule.name for schedule in repository.schedule_defs} == {
        "observe_raw_points_schedule", "rollup_hourly_job_schedule", "warehouse_daily_job_schedule",
        "warehouse_states_job_schedule", "retention_job_schedule", "feed_checks_job_schedule",
        "billing_daily_job_schedule"}
    # Both ours: Dagster's automatic automation-condition sensor would start STOPPED, so the warehouse
    # reload has its own, running by default, and no default one is added.
    assert {sensor.name for sensor in repository.sensor_defs} == {"late_data_sensor", "warehouse_late_data_reload",
                                                                  "warehouse_states_late_data_reload",
                                                                  "ha_history_import_sensor"}


def test_jobs_select_their_layer() -> None:
    selected = {name: {key.to_user_string() for key in defs.resolve_job_def(name).asset_layer.executable_asset_keys}
                for name in ("observe_raw_points", "rollup_hourly_job", "warehouse_daily_job",
                             "warehouse_states_job")}
    assert selected == {"observe_raw_points": {"raw_points"}, "rollup_hourly_job": ROLLUPS,
                        "warehouse_daily_job": WAREHOUSE, "warehouse_states_job": STATES}
    assert isinstance(defs.resolve_job_def("rollup_hourly_job").partitions_def, dg.HourlyPartitionsDefinition)
    assert isinstance(defs.resolve_job_def("warehouse_daily_job").partitions_def, dg.DailyPartitionsDefinition)


def test_schedules_and_sensor() -> None:
    schedules = {name: defs.resolve_schedule_def(name) for name in (
        "observe_raw_points_schedule", "rollup_hourly_job_schedule", "warehouse_daily_job_schedule",
        "retention_job_schedule", "feed_checks_job_schedule", "warehouse_states_job_schedule",
        "billing_daily_job_schedule")}
    assert {name: (s.job_name, s.cron_schedule, s.execution_timezone) for name, s in schedules.items()} == {
        "observe_raw_points_schedule": ("observe_raw_points", "*/5 * * * *", None),
        "rollup_hourly_job_schedule": ("rollup_hourly_job", "5 * * * *", "UTC"),
        "warehouse_daily_job_schedule": ("warehouse_daily_job", "15 * * * *", "UTC"),
        "retention_job_schedule": ("retention_job", "30 3 * * *", "UTC"),
        "feed_checks_job_schedule": ("feed_checks_job", "20 * * * *", "UTC"),
        "warehouse_states_job_schedule": ("warehouse_states_job", "15 * * * *", "UTC"),
        "billing_daily_job_schedule": ("billing_daily_job", "45 * * * *", "UTC"),
    }
    assert {s.default_status for s in schedules.values()} == {dg.DefaultScheduleStatus.RUNNING}

    sensor = defs.resolve_sensor_def("late_data_sensor")
    assert sensor.job_name == "rollup_hourly_job"
    assert sensor.minimum_interval_seconds == 60
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # How far back it rolls up never-rolled hours is each home's raw days (core.tenants), read through postgres;
    # the homes it looks at are the code location's tenant selection (every active one by default).
    assert sensor.required_resource_keys == {"postgres", "tenant_selection"}

    imports = defs.resolve_sensor_def("ha_history_import_sensor")
    assert imports.job_name == "warehouse_daily_job"
    assert imports.default_status == dg.DefaultSensorStatus.RUNNING
    assert imports.required_resource_keys == {"postgres", "tenant_selection"}

    automation = defs.resolve_sensor_def("warehouse_late_data_reload")
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert automation.asset_selection.resolve(defs.resolve_asset_graph()) == {dg.AssetKey(name) for name in WAREHOUSE}


def test_lineage_edges_follow_the_data_path() -> None:
    graph = defs.resolve_asset_graph()
    parents = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
               for key in graph.get_all_asset_keys()}
    assert parents == LINEAGE


def test_what_dagster_computes_observes_or_only_shows() -> None:
    graph = defs.resolve_asset_graph()
    nodes = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert {name for name, node in nodes.items() if node.is_materializable} == ROLLUPS | WAREHOUSE | STATES | {
        "retention", "usage_daily"}
    assert {name for name, node in nodes.items() if node.is_observable} == {"raw_points", "core_metadata"}
    assert {name for name, node in nodes.items() if node.is_external and not node.is_observable} == (
        {"ha_mqtt_feed", "ha_history_import"} | VIEWS)
    assert {name: node.group_name for name, node in nodes.items()} == GROUPS


def test_partitions_hourly_for_rollups_daily_for_the_warehouse() -> None:
    for name in ROLLUPS:
        partitions = _node(name).partitions_def
        assert isinstance(partitions, dg.HourlyPartitionsDefinition), name
        assert partitions.timezone == "UTC"
        assert partitions.get_first_partition_key() == f"{TEST_PARTITIONS_START}-00:00"
    for name in WAREHOUSE | STATES | {"usage_daily"}:
        partitions = _node(name).partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition), name
        assert partitions.timezone == "UTC"
        assert partitions.get_first_partition_key() == TEST_PARTITIONS_START
    for name in LINEAGE.keys() - ROLLUPS - WAREHOUSE - STATES - {"usage_daily"}:  # incl. retention: one run
        assert _node(name).partitions_def is None, name


def test_backfills_of_any_range_are_a_single_run() -> None:
    policies = {name: _node(name).backfill_policy for name in LINEAGE}
    assert {name for name, policy in policies.items() if policy is not None} == ROLLUPS | WAREHOUSE | STATES
    for name in ROLLUPS | WAREHOUSE | STATES:
        assert policies[name] == dg.BackfillPolicy.single_run(), name
        assert policies[name].max_partitions_per_run is None, name


def test_warehouse_days_reload_on_late_data() -> None:
    conditions = {name: _node(name).automation_condition for name in LINEAGE}
    assert {name for name, condition in conditions.items() if condition is not None} == WAREHOUSE | STATES
    for name in WAREHOUSE | STATES:
        condition = conditions[name]
        assert condition is not None
        assert condition.get_label() == LATE_DATA_LABEL, name


def test_every_asset_says_what_its_data_means() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert len(node.description or "") > 40, key
        assert node.owners, key


def test_worker_imports_no_heavy_or_downstream_package() -> None:
    probe = ("import json, sys, pkgutil, importlib, ingest_worker;"
             "[importlib.import_module(m.name) for m in pkgutil.walk_packages(ingest_worker.__path__, 'ingest_worker.')"
             " if not m.name.endswith('__main__')];"
             "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                       cwd=PROJECT_ROOT).stdout)
    heavy = [m for m in loaded if m.split(".")[0] in {"dagster", "pandas", "great_expectations", "hats_assets",
                                                       "pyarrow", "numpy"}]
    assert heavy == []
    assert "ingest_worker.app" in loaded


def test_great_expectations_is_not_imported_when_definitions_load() -> None:
    probe = "import json, sys, hats_assets.definitions; print(json.dumps('great_expectations' in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT,
                            env={"PATH": "/usr/bin:/bin", "HATS_TENANT": "home",
                                 "HATS_PARTITIONS_START": TEST_PARTITIONS_START})
    assert json.loads(result.stdout) is False


@pytest.mark.parametrize(("tick", "day"), [
    ("2026-11-26T14:15:00+00:00", "2026-11-26"),  # today's partial day, an hour behind at most
    ("2026-11-27T00:15:00+00:00", "2026-11-26"),  # after midnight: yesterday's final load
])
def test_warehouse_schedule_loads_the_day_of_the_hour_that_just_ended(tick: str, day: str) -> None:
    schedule = defs.resolve_schedule_def("warehouse_daily_job_schedule")
    context = dg.build_schedule_context(scheduled_execution_time=datetime.fromisoformat(tick),
                                        repository_def=defs.get_repository_def())
    [request] = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == day
    assert day in defs.resolve_job_def("warehouse_daily_job").partitions_def.get_partition_keys(  # type: ignore[union-attr]
        current_time=datetime.fromisoformat(tick))


def test_checks_guard_the_right_assets_and_the_right_ones_block() -> None:
    graph = defs.resolve_asset_graph()
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert checks == {
        ("raw_points", "no_future_points"), ("raw_points", "entities_fresh"),
        ("core_metadata", "series_within_budget"),
        ("rollup_1m", "raw_points_all_rolled_up"), ("rollup_1m", "one_series_per_entity"),
        ("rollup_1m", "points_match_cadence"), ("rollup_1m", "meters_only_grow"),
        ("rollup_1h", "plausible_ranges"), ("hourly_rollup", "warehouse_rows_match_rollups"),
        ("retention", "raw_kept_for_unverified_rollups"),
    }
    blocking = {spec.name for checks_def in defs.asset_checks or [] for spec in checks_def.check_specs
                if spec.blocking}
    # The warehouse check blocks per home (the daily tables skip the homes that failed it, tables.DAILY_GATE),
    # not through Dagster, which would skip the daily step of every home in the run.
    assert blocking == {"raw_points_all_rolled_up", "one_series_per_entity", "plausible_ranges"}


def test_every_run_serves_every_home_or_the_ones_named() -> None:
    """No resource is bound to one home: the tenant selection is run config, empty by default, accepted by
    every job (so a data engineer can re-run or backfill one home from the UI or CLI)."""
    from dagster._config import validate_config

    from hats_assets.defs.common.tenants import TenantSelection, tenants_run_config

    selection = defs.resources["tenant_selection"] if defs.resources else None
    assert isinstance(selection, TenantSelection)
    assert selection.tenants == []
    assert "tenant" not in type(defs.resources["influxdb"]).model_fields  # type: ignore[index]
    for name in ("rollup_hourly_job", "warehouse_daily_job", "warehouse_states_job", "retention_job",
                 "feed_checks_job", "billing_daily_job"):
        schema = defs.resolve_job_def(name).run_config_schema.config_type
        assert validate_config(schema, tenants_run_config(["home_a"])).success, name
        assert not validate_config(schema, tenants_run_config([]) | {"resources": {"tenant_selection": {
            "config": {"tenants": "home_a"}}}}).success, name


def test_the_readmes_tables_of_the_definitions_are_what_the_code_writes() -> None:
    """The README's tables of assets, checks, jobs, schedules (cron, time zone) and sensors are written by
    `hats docs` from these Definitions: a new, renamed or rescheduled one fails here instead of drifting."""
    from devstack import readme_tables

    readme = (PROJECT_ROOT / "README.md").read_text()
    stale = readme_tables.stale(readme, readme_tables.DEFINITIONS_SECTIONS)
    assert stale == [], readme_tables.stale_message(stale)
    schedules = readme_tables.schedules_table()
    for schedule in defs.get_repository_def().schedule_defs:
        assert f"| `{schedule.name}` | `{schedule.job_name}` | `{schedule.cron_schedule}` |" in schedules
