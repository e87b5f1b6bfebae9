"""The chart's monitoring: the alert rules are the local stack's own file (ConfigMap, PrometheusRule), the
worker and exporter pods say where Prometheus scrapes them, and the exporter gets only its settings, its
secrets from a Secret, and a network policy that lets it reach PostgreSQL only."""

from __future__ import annotations

from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from devstack import prometheus
from ops_exporter.settings import ENV_PREFIX, ExporterSettings
from tests.deploy.chart import RELEASE, pod_spec, render, render_values

RULES = yaml.safe_load(prometheus.RULES.read_text())


def _scrape_port(workload: dict[str, Any]) -> int:
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    [container] = pod_spec(workload)["containers"]
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    assert int(annotations["prometheus.io/port"]) == port
    return int(port)


def test_the_rules_configmap_is_the_stacks_rules_file() -> None:
    for name in ("default", "production"):
        rendered = render(name)
        config = rendered.named("ConfigMap", f"{RELEASE}-prometheus-rules")
        assert yaml.safe_load(config["data"]["alerts.yml"]) == RULES
        assert rendered.of_kind("PrometheusRule") == []


def test_with_the_operator_the_rules_are_a_prometheusrule_too() -> None:
    rendered = render_values({"prometheus": {"rules": {"operator": True, "labels": {"release": "kps"}}}})
    [rule] = rendered.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == RULES


def test_workers_and_the_exporter_carry_scrape_annotations_for_their_http_port() -> None:
    rendered = render("production")
    workers = [w for w in rendered.of_kind("StatefulSet")
               if w["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    assert workers
    for worker in workers:
        assert _scrape_port(worker) == rendered.values["worker"]["httpPort"]
    exporter = rendered.named("Deployment", f"{RELEASE}-exporter")
    assert _scrape_port(exporter) == rendered.values["exporter"]["port"]
    quiet = render_values({"prometheus": {"scrapeAnnotations": False}})
    assert "annotations" not in quiet.named("Deployment", f"{RELEASE}-exporter")["spec"]["template"]["metadata"]


def test_the_exporter_gets_its_settings_and_its_secrets_from_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {ENV_PREFIX + name.upper() for name in ExporterSettings.model_fields}
    for variable in fields:  # the pod's settings alone, not a stack's sourced into this shell
        monkeypatch.delenv(variable, raising=False)
    for name, secret_name in (("default", f"{RELEASE}-exporter"), ("production", "hats-exporter-credentials")):
        rendered = render(name)
        exporter = rendered.named("Deployment", f"{RELEASE}-exporter")
        [container] = pod_spec(exporter)["containers"]
        assert container["command"] == ["python", "-m", "ops_exporter"]
        env = {e["name"]: e for e in container["env"]}
        assert set(env) <= fields
        assert {"HATS_EXPORTER_DSN", "HATS_EXPORTER_DAGSTER_DSN"} <= set(env)
        for key in ("HATS_EXPORTER_DSN", "HATS_EXPORTER_DAGSTER_DSN"):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": key}
        settings = ExporterSettings(**{env_name.removeprefix(ENV_PREFIX).lower(): e["value"]
                                       for env_name, e in env.items() if "value" in e}, dsn="postgresql://x@y/hats")
        assert settings.port == rendered.values["exporter"]["port"]
        assert settings.dagster_dsn is None  # nothing given: no run failures, not a failing connection
        made = [s["metadata"]["name"] for s in rendered.of_kind("Secret")]
        assert (secret_name in made) == (name == "default")


def test_the_exporter_may_reach_postgresql_only() -> None:
    rendered = render("default")
    policy = rendered.named("NetworkPolicy", f"{RELEASE}-exporter")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, rendered.values["external"]["postgresql"]["port"]}
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
