"""The InfluxDB write gate in the chart: it starts with what the chart gives it, the workers write through it
with its credential, and on the network only the gate reaches InfluxDB's port."""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import pytest

from influx_gate.settings import ENV_PREFIX as GATE_PREFIX
from influx_gate.settings import GateSettings, load_settings
from ingest_worker.settings import WorkerSettings
from tests.deploy.chart import NAMESPACE, VALUE_FILES, Rendered, container_env, pod_spec, render, resolve

VALUES = sorted(VALUE_FILES)


@pytest.fixture(scope="module", params=VALUES)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param)


def _component(rendered: Rendered, kind: str, component: str) -> list[dict[str, Any]]:
    return [m for m in rendered.of_kind(kind) if m["metadata"]["labels"]["app.kubernetes.io/component"] == component]


def _gate_settings(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> GateSettings:
    [gate] = _component(rendered, "Deployment", "influx-gate")
    [container] = pod_spec(gate)["containers"]
    env = container_env(container, rendered)
    for name in [n for n in os.environ if n.upper().startswith(GATE_PREFIX)]:
        monkeypatch.delenv(name)
    for name, source in env.items():
        monkeypatch.setenv(name, resolve(source, rendered, "gate"))
    assert {env[n].kind for n in env if n.endswith("_PASSWORD")} == {"secret"}
    assert all(name.startswith(GATE_PREFIX) for name in env)
    assert set(env) <= {GATE_PREFIX + name.upper() for name in GateSettings.model_fields}
    return load_settings()


def _worker_env(rendered: Rendered) -> dict[str, str]:
    sts = _component(rendered, "StatefulSet", "worker")[0]
    env = container_env(pod_spec(sts)["containers"][0], rendered)
    return {name: resolve(source, rendered, "pod") for name, source in env.items()}


def test_the_gate_starts_with_what_the_chart_gives_it(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _gate_settings(rendered, monkeypatch)
    assert settings.host == "0.0.0.0"  # noqa: S104 (the pod's address: the workers and the kubelet reach it)
    assert settings.upstream_url == rendered.values["external"]["influxdb"]["url"].rstrip("/")
    assert settings.upstream_username == rendered.values["influxGate"]["upstreamUsername"]
    [gate] = _component(rendered, "Deployment", "influx-gate")
    [container] = pod_spec(gate)["containers"]
    assert container["command"] == ["python", "-m", "influx_gate"]
    assert [p["containerPort"] for p in container["ports"]] == [settings.port]
    # the kubelet probes in the scheme the gate serves (HTTPS with its certificate)
    [port] = [p["name"] for p in container["ports"]]
    assert port == ("https" if settings.tls_cert_file is not None else "http")
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port, "scheme": port.upper()}
    assert pod_spec(gate)["automountServiceAccountToken"] is False


def test_workers_write_through_the_gate_with_its_account(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = _gate_settings(rendered, monkeypatch)
    env = _worker_env(rendered)
    url = urllib.parse.urlsplit(env["HATS_INFLUX_WRITE_URL"])
    [service] = _component(rendered, "Service", "influx-gate")
    # https: the Service's .svc name, the one its certificate is made for; http: its short name
    name = service["metadata"]["name"]
    assert url.scheme == ("https" if gate.tls_cert_file is not None else "http")
    assert (url.hostname, url.port) == (f"{name}.{NAMESPACE}.svc" if url.scheme == "https" else name, gate.port)
    assert [p["port"] for p in service["spec"]["ports"]] == [gate.port]
    assert env["HATS_INFLUX_USERNAME"] == gate.username
    # The worker has no InfluxDB URL or InfluxDB account at all.
    assert "HATS_INFLUX_URL" not in env
    assert not [n for n in env if n.startswith(GATE_PREFIX)]
    assert "influx_write_url" in WorkerSettings.model_fields


def _egress_ports(policy: dict[str, Any]) -> list[tuple[object, list[dict[str, Any]]]]:
    return [(port["port"], rule.get("to", [])) for rule in policy["spec"]["egress"] for port in rule["ports"]]


def test_only_the_gate_reaches_influxdbs_port_and_only_workers_and_the_code_location_reach_the_gate(
        rendered: Rendered) -> None:
    influx = urllib.parse.urlsplit(rendered.values["external"]["influxdb"]["url"])
    influx_port = influx.port or (443 if influx.scheme == "https" else 80)
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in rendered.of_kind("NetworkPolicy")}
    worker, gate = policies["worker"], policies["influx-gate"]
    others = {rendered.values["external"]["mqtt"]["port"], rendered.values["external"]["postgresql"]["port"]}
    if influx_port not in others:
        assert influx_port not in [port for port, _ in _egress_ports(worker)]
    [gate_deployment] = _component(rendered, "Deployment", "influx-gate")
    [gate_port] = [p["name"] for p in pod_spec(gate_deployment)["containers"][0]["ports"]]
    [(_, to_gate)] = [(port, to) for port, to in _egress_ports(worker) if port == gate_port]
    assert to_gate == [{"podSelector": {"matchLabels": {**gate["spec"]["podSelector"]["matchLabels"]}}}]
    assert [port for port, _ in _egress_ports(gate)] == [53, 53, influx_port]
    [ingress] = gate["spec"]["ingress"]
    # The code location's pods carry the retention-client labels (subchart values are not templated, so the
    # chart's values put them on the user deployment and every run's pod): the policy admits exactly those.
    clients = rendered.values["influxGate"]["retentionClientLabels"]
    dagster = rendered.values["dagster"]
    [location] = dagster["dagster-user-deployments"]["deployments"]
    run_labels = dagster["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podTemplateSpecMetadata"]["labels"]
    assert clients.items() <= location["labels"].items()
    assert clients.items() <= run_labels.items()
    assert ingress["from"] == [{"podSelector": {"matchLabels": worker["spec"]["podSelector"]["matchLabels"]}},
                               {"podSelector": {"matchLabels": clients}}]
