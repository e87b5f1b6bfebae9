"""Render the hats Helm chart offline (helm-python-sdk: Helm v4's engine as a library) and read what it
makes: the manifests, and the environment each container gets from env, ConfigMaps and Secrets."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml  # type: ignore[import-untyped]

from devstack.profile import PROJECT_ROOT

CHART = PROJECT_ROOT / "deploy" / "hats"
VALUE_FILES = {"default": None, "production": CHART / "values-production.yaml"}
# The chart renders nothing until the write gate's TLS is decided (influxGate.tls: a certificate, or plain HTTP
# asked for by name). "default" is the evaluation install: the chart's defaults and a plaintext gate.
EVALUATION: dict[str, Any] = {"influxGate": {"tls": {"enabled": False}}}
RELEASE, NAMESPACE = "hats", "hats"
KUBERNETES_VERSION = "1.33.0"  # the Kubernetes the manifests are validated against (chart: >= 1.29)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet")


def values_of(name: str) -> dict[str, Any]:
    path = VALUE_FILES[name]
    return copy.deepcopy(EVALUATION) if path is None else helm.values_from_yaml(Path(path).read_text())


def merged(onto: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`values` over `onto`, maps merged key by key and anything else replaced, as Helm merges values files."""
    result = copy.deepcopy(onto)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclass(frozen=True)
class Rendered:
    values: dict[str, Any]      # the chart's defaults merged with the file's (what an install uses)
    manifests: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] in WORKLOAD_KINDS]


def render(name: str) -> Rendered:
    return render_exactly(values_of(name))


def render_values(values: dict[str, Any]) -> Rendered:
    """The evaluation install ("default") with `values` over it."""
    return render_exactly(merged(EVALUATION, values))


def render_exactly(values: dict[str, Any]) -> Rendered:
    """The chart with exactly `values` over its defaults (`helm install -f`)."""
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(values)
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests = [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]
    return Rendered(merged, manifests)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod a workload runs; a CronJob's is its job template's."""
    outer = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    spec: dict[str, Any] = outer["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec(workload).get("initContainers", [])
    yield from pod_spec(workload)["containers"]


@dataclass(frozen=True)
class EnvSource:
    """Where one variable of a container comes from: a literal, a ConfigMap key, a Secret key or the pod."""

    kind: str          # "value", "configMap", "secret", "field"
    value: str         # the literal, the referenced object's name, or the field path
    key: str = ""


def container_env(container: dict[str, Any], rendered: Rendered,
                  secret_keys: dict[str, list[str]] | None = None) -> dict[str, EnvSource]:
    """Every variable the container starts with. envFrom is resolved against the rendered ConfigMaps and
    Secrets, or `secret_keys` for Secrets the chart expects to exist (existingSecret)."""
    env: dict[str, EnvSource] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            for key in rendered.named("ConfigMap", name).get("data", {}):
                env[key] = EnvSource("configMap", name, key)
        else:
            name = source["secretRef"]["name"]
            keys = (secret_keys or {}).get(name) or list(secret_data(rendered.named("Secret", name)))
            for key in keys:
                env[key] = EnvSource("secret", name, key)
    for item in container.get("env", []):  # explicit entries win over envFrom, as in Kubernetes
        if "value" in item:
            env[item["name"]] = EnvSource("value", str(item["value"]))
        elif "configMapKeyRef" in (ref := item["valueFrom"]):
            env[item["name"]] = EnvSource("configMap", ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"])
        elif "secretKeyRef" in ref:
            env[item["name"]] = EnvSource("secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        else:
            env[item["name"]] = EnvSource("field", ref["fieldRef"]["fieldPath"])
    return env


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {**secret.get("data", {}), **secret.get("stringData", {})}


def resolve(source: EnvSource, rendered: Rendered, pod_name: str) -> str:
    """The value a variable would have in a pod named `pod_name` (a placeholder for a Secret's value the
    chart does not hold: the settings validation still sees a value where one is needed)."""
    if source.kind == "value":
        return source.value
    if source.kind == "configMap":
        return str(rendered.named("ConfigMap", source.value)["data"][source.key])
    if source.kind == "field":
        assert source.value == "metadata.name", source
        return pod_name
    secrets = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == source.value]
    value = secret_data(secrets[0]).get(source.key, "") if secrets else ""
    return value or f"placeholder-for-{source.key.lower()}"
