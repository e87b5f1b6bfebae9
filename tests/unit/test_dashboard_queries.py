"""The dashboards are the JSON deploy/grafana/build.py writes, and the PromQL reader the integration test relies
on finds exactly the metric names of an expression (so a misspelt metric cannot hide from it)."""

from __future__ import annotations

import json
import runpy
from datetime import UTC, datetime

import pytest

from tests.dashboards import DASHBOARDS, POSTGRES_UID, PROMETHEUS_UID, metric_names, queries, runnable_sql


def test_the_json_is_what_the_builder_writes() -> None:
    built = runpy.run_path(str(DASHBOARDS.parent / "build.py"))["DASHBOARDS"]
    assert sorted(built) == sorted(path.name for path in DASHBOARDS.glob("*.json"))
    for name, content in built.items():
        assert json.loads((DASHBOARDS / name).read_text()) == content, f"run python deploy/grafana/build.py ({name})"


def test_every_query_uses_a_provisioned_datasource() -> None:
    found = queries()
    assert {q.datasource for q in found} == {PROMETHEUS_UID, POSTGRES_UID}
    provisioning = (DASHBOARDS.parent / "provisioning" / "datasources.yaml").read_text()
    assert f"uid: {PROMETHEUS_UID}" in provisioning
    assert f"uid: {POSTGRES_UID}" in provisioning


@pytest.mark.parametrize(("expr", "names"), [
    ("sum by (source) (rate(hats_messages_received_total[5m]))", {"hats_messages_received_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(hats_write_seconds_bucket{job=\"w\"}[5m])))",
     {"hats_write_seconds_bucket"}),
    ("sum(rate(a_sum[5m])) / sum(rate(a_count[5m])) > bool 0.5", {"a_sum", "a_count"}),
    ("min by (instance) (up{job=~\"hats.*\"}) or on(instance) vector(0)", {"up"}),
    ("max(hats_consumer_lag_seconds offset 1h) * 1e3", {"hats_consumer_lag_seconds"}),
    ("hats_typo_total", {"hats_typo_total"}),
])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_macros_are_replaced_or_refused() -> None:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC)
    text = runnable_sql("SELECT 1 FROM t WHERE $__timeFilter(day) AND tenant_id IN ($tenant)", start, end, ["a'b"])
    assert text == ("SELECT 1 FROM t WHERE day BETWEEN '2026-11-01T00:00:00+00:00' AND '2026-11-08T00:00:00+00:00' "
                    "AND tenant_id IN ('a''b')")
    with pytest.raises(ValueError, match="macro"):
        runnable_sql("SELECT $__unixEpochFilter(t)", start, end, ["a"])
