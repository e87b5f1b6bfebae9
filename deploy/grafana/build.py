"""Writes the dashboards' JSON (`python deploy/grafana/build.py`): one panel builder, so every panel has the
same shape and datasource; the JSON files are what Grafana provisions and what tests/integration/
test_dashboards.py checks against a running worker's /metrics and the analyst role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PROMETHEUS = {"type": "prometheus", "uid": "hats-prometheus"}
POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "hats-postgres"}


def _grid(index: int, width: int = 12, height: int = 8) -> dict[str, int]:
    per_row = 24 // width
    return {"x": (index % per_row) * width, "y": (index // per_row) * height, "w": width, "h": height}


def prom_panel(index: int, title: str, description: str, exprs: dict[str, str], unit: str = "short",
               kind: str = "timeseries") -> dict[str, Any]:
    return {"id": index + 1, "type": kind, "title": title, "description": description, "datasource": PROMETHEUS,
            "gridPos": _grid(index), "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + i), "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}
                        for i, (legend, expr) in enumerate(exprs.items())]}


def sql_panel(index: int, title: str, description: str, query: str, kind: str = "timeseries",
              fmt: str = "time_series", unit: str = "short") -> dict[str, Any]:
    return {"id": index + 1, "type": kind, "title": title, "description": description, "datasource": POSTGRES,
            "gridPos": _grid(index), "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "datasource": POSTGRES, "editorMode": "code", "format": fmt,
                         "rawQuery": True, "rawSql": query}]}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]], time_from: str) -> dict[str, Any]:
    return {"uid": uid, "title": title, "description": description, "tags": ["hats"], "schemaVersion": 39,
            "version": 1, "editable": False, "timezone": "browser", "refresh": "1m",
            "time": {"from": time_from, "to": "now"}, "templating": {"list": variables}, "panels": panels}


RATE = "[5m]"
OPERATOR_PANELS = [
    prom_panel(0, "Ingest rate", "Messages received per second, by source (MQTT formats, websocket).",
               {"{{source}}": f"sum by (source) (rate(hats_messages_received_total{RATE}))",
                "points written": f"sum(rate(hats_points_written_total{RATE}))"}, unit="reqps"),
    prom_panel(1, "Consumer lag", "Age of the oldest message not yet acknowledged, and what waits for durability.",
               {"lag (s)": "max(hats_consumer_lag_seconds)", "unacknowledged": "sum(hats_unacked_messages)",
                "inbox": "sum(hats_inbox_depth)"}, unit="s"),
    prom_panel(2, "Outbox depth", "What waits on disk while InfluxDB is away or slow (bounded by "
               "HATS_OUTBOX_MAX_BYTES: full means the broker queues for us).",
               {"bytes": "sum(hats_outbox_bytes)", "batches": "sum(hats_outbox_batches)"}, unit="bytes"),
    prom_panel(3, "Dead letters by reason", "Messages sent to ops.dead_letters per second, by reason "
               "(`python -m ingest_worker.deadletters list --reason R` shows them).",
               {"{{reason}}": f"sum by (reason) (rate(hats_dead_letters_total{RATE}))"}, unit="reqps"),
    prom_panel(4, "InfluxDB write latency", "p50 and p99 of the worker's InfluxDB writes, and failed writes by kind.",
               {"p50": f"histogram_quantile(0.5, sum by (le) (rate(hats_write_seconds_bucket{RATE})))",
                "p99": f"histogram_quantile(0.99, sum by (le) (rate(hats_write_seconds_bucket{RATE})))",
                "errors {{kind}}": f"sum by (kind) (rate(hats_influx_errors_total{RATE}))"}, unit="s"),
    prom_panel(5, "Batch size", "Points per InfluxDB write (mean over 5 min).",
               {"points per write": f"sum(rate(hats_batch_points_sum{RATE})) / "
                                    f"sum(rate(hats_batch_points_count{RATE}))"}),
    prom_panel(6, "Per-home message rate", "Messages received per home (registry mode).",
               {"{{tenant}}": f"sum by (tenant) (rate(hats_tenant_messages_received_total{RATE}))"}, unit="reqps"),
    prom_panel(7, "Per-home points and dead letters", "Points InfluxDB accepted and dead letters, per home.",
               {"points {{tenant}}": f"sum by (tenant) (rate(hats_tenant_points_written_total{RATE}))",
                "dead letters {{tenant}}": f"sum by (tenant) (rate(hats_tenant_dead_letters_total{RATE}))"},
               unit="reqps"),
    prom_panel(8, "Per-home backlog", "Messages routed to a home and not yet parsed, and its outbox bytes.",
               {"queued {{tenant}}": "sum by (tenant) (hats_tenant_queued_messages)",
                "outbox {{tenant}}": "sum by (tenant) (hats_tenant_outbox_bytes)"}),
    prom_panel(9, "Readiness", "1 while ready (/readyz answers 200), connected to the broker and to Home "
               "Assistant's WebSocket API, and per home (subscribed, outbox has room); homes served, their failures.",
               {"ready {{instance}}": "min by (instance) (hats_ready)",
                "broker {{instance}}": "min by (instance) (hats_mqtt_connected)",
                "home assistant {{instance}}": "min by (instance) (hats_ha_connected)",
                "ready {{tenant}}": "min by (tenant) (hats_tenant_ready)",
                "homes served": "sum(hats_tenants_served)",
                "failures {{tenant}}": f"sum by (tenant) (increase(hats_tenant_failures_total{RATE}))"}),
    prom_panel(10, "Event age", "p99 of receipt time minus the state's own timestamp (late or replayed data).",
               {"p99": f"histogram_quantile(0.99, sum by (le) (rate(hats_event_age_seconds_bucket{RATE})))"},
               unit="s"),
    prom_panel(12, "Rollups behind, per home", "Now minus the end of the newest rolled-up hour, and the complete "
               "hours with raw points not rolled up (ops exporter).",
               {"behind {{tenant}}": "max by (tenant) (hats_rollup_behind_seconds)",
                "owed hours {{tenant}}": "max by (tenant) (hats_rollup_owed_hours)"}, unit="s"),
    prom_panel(13, "Failing checks and refused days", "(check, hour) pairs whose latest result failed, by home and "
               "blocking; UTC days the warehouse refuses to load; homes whose raw retention is held (ops exporter).",
               {"failing {{tenant}} blocking={{blocking}}": "sum by (tenant, blocking) (hats_checks_failing)",
                "refused days {{tenant}}": "max by (tenant) (hats_warehouse_refused_days)",
                "raw held {{tenant}}": "max by (tenant) (hats_retention_raw_extended)"}),
    prom_panel(14, "Dagster run failures", "Runs that ended in FAILURE over the last hour, by Dagster job (run "
               "storage, through the ops exporter), and whether the exporter read every source.",
               {"{{dagster_job}}": "sum by (dagster_job) (increase(hats_dagster_run_failures_total[1h]))",
                "exporter up": "min(hats_exporter_up)"}),
    prom_panel(15, "TLS certificates", "Days until the certificate each TLS peer presents to the worker expires "
               "(hats_tls_cert_not_after_seconds; `hats certs renew` for the local stack).",
               {"{{peer}} {{instance}}": "min by (peer, instance) (hats_tls_cert_not_after_seconds - time()) / 86400"},
               unit="d"),
    prom_panel(11, "Home Assistant WebSocket", "Reconnects, recorder rows fetched to fill gaps, the last gap fill.",
               {"reconnects": f"sum(increase(hats_ha_reconnects_total{RATE}))",
                "history rows/s": f"sum(rate(hats_ha_history_rows_total{RATE}))",
                "gap fill (s)": "max(hats_ha_gap_fill_seconds)"}),
]

TENANT_VARIABLE = {"name": "tenant", "label": "home", "type": "query", "datasource": POSTGRES, "multi": True,
                   "includeAll": True, "refresh": 1,
                   "query": "SELECT DISTINCT tenant_id FROM analytics.home_day_status ORDER BY 1",
                   "definition": "SELECT DISTINCT tenant_id FROM analytics.home_day_status ORDER BY 1"}
ANALYST_PANELS = [
    sql_panel(0, "Energy per day", "kWh per energy meter and local day of the home (analytics.energy_daily), "
              "counted like Home Assistant's energy dashboard.",
              "SELECT local_day::timestamp AS time, coalesce(friendly_name, entity_id) AS metric, kwh\n"
              "FROM analytics.energy_daily\n"
              "WHERE $__timeFilter(local_day) AND tenant_id IN ($tenant)\nORDER BY 1, 2", kind="barchart",
              unit="kwatth"),
    sql_panel(1, "Days complete", "Per home and local day: hours with data, rolled up, loaded, failing a blocking "
              "check (analytics.home_day_status).",
              "SELECT local_day::timestamp AS time, tenant_id, hours_with_data, hours_rolled_up, hours_loaded,\n"
              "       hours_failing_checks, complete\nFROM analytics.home_day_status\n"
              "WHERE $__timeFilter(local_day) AND tenant_id IN ($tenant)\nORDER BY 1 DESC, 2",
              kind="table", fmt="table"),
    sql_panel(2, "Coverage per entity and day", "Share of the UTC day each entity was available, points, hours out "
              "of range, gaps (analytics.data_quality_daily).",
              "SELECT day::timestamp AS time, entity_id, measurement, coverage_pct, points, out_of_range_hours,\n"
              "       gaps, incomplete_hours\nFROM analytics.data_quality_daily\n"
              "WHERE $__timeFilter(day) AND tenant_id IN ($tenant)\nORDER BY coverage_pct, 1 DESC",
              kind="table", fmt="table"),
    sql_panel(3, "Mean coverage", "Mean coverage % of every entity per local day (analytics.entity_daily).",
              "SELECT local_day::timestamp AS time, avg(coverage_pct) AS \"coverage %\"\n"
              "FROM analytics.entity_daily\nWHERE $__timeFilter(local_day) AND tenant_id IN ($tenant)\n"
              "GROUP BY 1\nORDER BY 1", unit="percent"),
    sql_panel(4, "Device battery", "Latest battery % of each device, when it was read, when the device last sent "
              "anything and its availability over the last 7 complete days (analytics.device_last_seen).",
              "SELECT coalesce(name, device_id) AS device, area, battery_pct, battery_at, last_seen,\n"
              "       availability_pct_7d\nFROM analytics.device_last_seen\n"
              "WHERE battery_pct IS NOT NULL AND tenant_id IN ($tenant)\nORDER BY battery_pct, device",
              kind="table", fmt="table"),
]

DASHBOARDS = {
    "operators.json": dashboard("hats-operators", "hats · operators", "The ingest workers (rates, lag, outbox, "
                                "dead letters, InfluxDB writes, homes, readiness) and the Dagster side through the "
                                "ops exporter (rollups behind, failing checks, refused days, run failures); "
                                "Prometheus.", sorted(OPERATOR_PANELS, key=lambda panel: panel["id"]),
                                [], "now-6h"),
    "analysts.json": dashboard("hats-analysts", "hats · analysts", "Energy, coverage and batteries from the analyst "
                               "views (PostgreSQL analytics.*; a home's analyst sees only its home).",
                               ANALYST_PANELS, [TENANT_VARIABLE], "now-30d"),
}

if __name__ == "__main__":
    for name, content in DASHBOARDS.items():
        (HERE / "dashboards" / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
