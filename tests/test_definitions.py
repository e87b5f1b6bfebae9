"""The code location loads, its lineage reads as the data flows, and the worker stays lightweight."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg

from devstack.profile import PROJECT_ROOT
from hats_assets.definitions import defs


def test_definitions_load_and_validate() -> None:
    dg.Definitions.validate_loadable(defs)
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"entity_hourly_job", "observe_raw_points"}
    assert defs.resolve_schedule_def("entity_hourly_job_schedule").cron_schedule == "5 * * * *"
    assert defs.resolve_schedule_def("observe_raw_points_schedule").cron_schedule == "*/5 * * * *"


def test_lineage_edges_follow_the_data_path() -> None:
    graph = defs.resolve_asset_graph()
    parents = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
               for key in graph.get_all_asset_keys()}
    assert parents["raw_points"] == {"ha_mqtt_feed"}
    assert parents["entity_hourly"] == {"raw_points"}
    assert parents["ha_mqtt_feed"] == set()


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
                            env={"PATH": "/usr/bin:/bin", "HATS_TENANT": "home"})
    assert json.loads(result.stdout) is False
