"""The Helm chart (deploy/hats), rendered offline over the default and the production values: it lints,
every manifest is valid for a pinned Kubernetes, and the settings it sets are exactly the ones the code
reads (the worker's WorkerSettings, the code location's variables, dagster.yaml's references)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import urllib.parse
from importlib.metadata import requires
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import SecretStr

from devstack import certs
from devstack.profile import PROJECT_ROOT, Profile
from ingest_worker.contract import TENANT_PATTERN
from ingest_worker.settings import ENV_PREFIX, WorkerSettings, load_settings
from tests.deploy.chart import (
    CHART,
    KUBERNETES_VERSION,
    NAMESPACE,
    RELEASE,
    VALUE_FILES,
    EnvSource,
    Rendered,
    container_env,
    containers,
    merged,
    pod_spec,
    render,
    render_exactly,
    render_values,
    resolve,
    values_of,
)

VALUES = sorted(VALUE_FILES)
VARIABLE = re.compile(r"HATS_[A-Z0-9_]*[A-Z0-9]")
SECRET_NAME = re.compile(r"_(PASSWORD|DSN|PG_URL|TOKEN)$")  # what a variable's name says it holds
LOCK = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module", params=VALUES)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param)


def locked(package: str) -> str:
    [version] = [p["version"] for p in LOCK["package"] if p["name"] == package]
    return str(version)


def workers(rendered: Rendered) -> list[dict[str, Any]]:
    return [s for s in rendered.of_kind("StatefulSet")
            if s["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]


def worker_fields() -> dict[str, str]:
    return {ENV_PREFIX + name.upper(): name for name in WorkerSettings.model_fields}


# --- the chart itself -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUES)
def test_lint_finds_nothing_but_the_dagster_chart_not_fetched_here(name: str) -> None:
    """Helm's linter, strict, for the pinned Kubernetes. The one finding allowed is the dagster chart
    missing from charts/ (`helm dependency build` fetches it; no network here), and only while it is."""
    missing = [d["name"] for d in helm.dependency_list(CHART) if d["status"] == "missing"]
    assert set(missing) <= {"dagster"}
    allowed = {f"chart directory is missing these dependencies: {', '.join(missing)}"} if missing else set()
    report = helm.lint(CHART, values_of(name), strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    assert set(report["errors"]) == allowed
    assert {m["error"] for m in report["messages"] if m["severity"] >= 2} == allowed


def oldest_kubernetes() -> str:
    """The oldest Kubernetes the chart accepts (Chart.yaml's kubeVersion, `>= X.Y.Z-0`)."""
    with helm.Chart.load(CHART) as chart:
        match = re.fullmatch(r">= ?(\d+\.\d+\.\d+)-0", chart.metadata["kubeVersion"])
    assert match, "kubeVersion must read '>= X.Y.Z-0'"
    return match.group(1)


def test_every_manifest_is_valid_for_the_pinned_kubernetes_and_the_oldest_the_chart_accepts(rendered: Rendered) -> None:
    assert len(rendered.manifests) >= 8
    for version in (KUBERNETES_VERSION, oldest_kubernetes()):
        for manifest in rendered.manifests:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_no_manifest_names_itself_twice(rendered: Rendered) -> None:
    keys = [(m["kind"], m["metadata"]["name"]) for m in rendered.manifests]
    assert len(keys) == len(set(keys))


def test_the_chart_version_is_the_projects(rendered: Rendered) -> None:
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == PYPROJECT["project"]["version"]


# --- the worker -----------------------------------------------------------------------------------------

def test_one_statefulset_per_shard_with_its_replicas(rendered: Rendered) -> None:
    worker = rendered.values["worker"]
    shards = workers(rendered)
    assert len(shards) == worker["shards"]
    for index, sts in enumerate(sorted(shards, key=lambda s: int(s["metadata"]["labels"]["hats/shard"]))):
        env = container_env(pod_spec(sts)["containers"][0], rendered)
        assert env["HATS_SHARD"].value == str(index)
        assert env["HATS_SHARDS"].value == str(worker["shards"])
        assert sts["spec"]["replicas"] == int(worker["replicasPerShard"].get(str(index), worker["replicas"]))
        # the replicas of one shard split its load through the group the worker derives from the shard
        # (share_group_of): one set here would be ignored, so none is
        assert rendered.values["worker"]["tenantMode"] == "registry"
        assert "HATS_MQTT_SHARE_GROUP" not in env
        assert env["HATS_MQTT_CLIENT_ID"].kind == "field"  # the pod's stable name: one session per replica


@pytest.fixture(scope="module")
def tls_mount(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the CA Secret's volume holds in a pod (`ca.pem`), made here by the stack's own PKI."""
    profile = Profile(name="test", state_dir=tmp_path_factory.mktemp("pki"), ports={})
    certs.ensure(profile)
    return certs.ca_file(profile).parent


def started(sts: dict[str, Any], rendered: Rendered, monkeypatch: pytest.MonkeyPatch,
            tls_mount: Path | None = None) -> WorkerSettings:
    """The worker's own start-up validation in the environment of the shard's last replica (a value for
    each Secret key; a file of the CA Secret's volume, which the container must mount, at `tls_mount`),
    and nothing else of this test's environment."""
    [container] = pod_spec(sts)["containers"]
    env = container_env(container, rendered)
    assert set(env) - set(worker_fields()) == set()  # each variable names a WorkerSettings field
    pod = f"{sts['metadata']['name']}-{sts['spec']['replicas'] - 1}"
    mount = rendered.values["tls"]["mountPath"] + "/"
    for name in [n for n in os.environ if n.upper().startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, source in env.items():
        value = resolve(source, rendered, pod)
        if value.startswith(mount) and tls_mount is not None:
            assert mount.rstrip("/") in {m["mountPath"] for m in container["volumeMounts"]}, name
            value = str(tls_mount / value.removeprefix(mount))
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.mqtt_client_id == pod
    return settings


def test_every_variable_a_worker_gets_is_a_worker_setting_and_it_starts(rendered: Rendered,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       tls_mount: Path) -> None:
    """With the rendered variables the worker's start-up validation passes in every shard: every
    required setting is set and every rendered value is valid."""
    for sts in workers(rendered):
        [container] = pod_spec(sts)["containers"]
        settings = started(sts, rendered, monkeypatch, tls_mount)
        assert settings.registry_mode
        assert (settings.shard, settings.shards) == (int(sts["metadata"]["labels"]["hats/shard"]),
                                                     rendered.values["worker"]["shards"])
        assert settings.http_host not in ("127.0.0.1", "localhost")  # the kubelet probes the pod's address
        assert pod_spec(sts)["terminationGracePeriodSeconds"] > settings.shutdown_timeout_s
        assert str(settings.outbox_dir) in {m["mountPath"] for m in container["volumeMounts"]}


def test_worker_secrets_come_only_from_secrets(rendered: Rendered) -> None:
    """Every SecretStr setting the worker gets comes from a Secret; no ConfigMap holds a secret."""
    fields = WorkerSettings.model_fields.items()
    secret_fields = {ENV_PREFIX + name.upper() for name, field in fields if field.annotation is SecretStr}
    for sts in workers(rendered):
        env = container_env(pod_spec(sts)["containers"][0], rendered)
        assert {n for n in secret_fields if n in env} >= {"HATS_INGEST_DSN", "HATS_INFLUX_PASSWORD"}
        assert all(env[n].kind == "secret" for n in secret_fields if n in env)
    for config_map in rendered.of_kind("ConfigMap"):
        assert [k for k in config_map.get("data", {}) if SECRET_NAME.search(k)] == []


@pytest.mark.parametrize(("values", "message"), [
    ({"worker": {"tenantMode": "single", "shards": 2}}, "worker.shards: a single-tenant worker"),
    ({"worker": {"tenantMode": "many"}}, "at '/worker/tenantMode'"),
    ({"worker": {"shards": 0}}, "at '/worker/shards'"),
    ({"worker": {"shards": "4"}}, "at '/worker/shards': got string, want integer"),
    ({"worker": {"resources": {"limits": "2 cores"}}}, "at '/worker/resources/limits'"),
    ({"tenantSecrets": {"mountPath": "tenants"}}, "at '/tenantSecrets/mountPath'"),
    ({"worker": {"settings": {"HATS_BATCH_MAX_POINTS": 100}}}, "at '/worker/settings/HATS_BATCH_MAX_POINTS'"),
    ({"external": {"influxdb": {"url": "influxdb:8086"}}}, "at '/external/influxdb/url'"),
    ({"backup": {"image": {"tag": 17}}}, "at '/backup/image/tag'"),
    ({"backup": {"influxRpcAddr": "influxdb"}}, "at '/backup/influxRpcAddr'"),
])
def test_bad_values_fail_before_anything_is_made_naming_the_value(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match=re.escape(message)):
        chart.render(merged(values_of("default"), values), name=RELEASE, namespace="hats")


def test_the_values_schema_agrees_with_the_worker() -> None:
    """The chart's schema refuses what the worker would refuse at start-up, by the same bounds."""
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema is not None
    worker = schema["properties"]["worker"]["properties"]
    assert worker["tenant"]["pattern"] == TENANT_PATTERN.pattern

    def bound(field: str, kind: str) -> Any:
        return next(getattr(m, kind) for m in WorkerSettings.model_fields[field].metadata if hasattr(m, kind))

    assert worker["shards"]["maximum"] == bound("shards", "le")
    assert worker["shards"]["minimum"] == bound("shards", "ge")
    assert worker["outbox"]["properties"]["maxBytes"]["minimum"] == bound("outbox_max_bytes", "ge")
    assert worker["shutdownTimeoutSeconds"]["maximum"] == bound("shutdown_timeout_s", "le")
    assert set(worker["tenantMode"]["enum"]) == set(
        re.fullmatch(r"\^\((.*)\)\$", bound("tenant_mode", "pattern")).group(1).split("|"))  # type: ignore[union-attr]


def test_a_shard_with_replicas_loses_at_most_one_to_a_drain(rendered: Rendered) -> None:
    budgets = {p["metadata"]["labels"]["hats/shard"]: p for p in rendered.of_kind("PodDisruptionBudget")}
    for sts in workers(rendered):
        shard = sts["metadata"]["labels"]["hats/shard"]
        if sts["spec"]["replicas"] == 1:
            assert shard not in budgets
        else:
            assert budgets[shard]["spec"]["maxUnavailable"] == 1
            assert budgets[shard]["spec"]["selector"] == sts["spec"]["selector"]
    assert len(budgets) == sum(1 for s in workers(rendered) if s["spec"]["replicas"] > 1)


def test_a_single_tenant_worker_serves_its_home(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render_values({"worker": {"tenantMode": "single", "tenant": "acme", "replicas": 2}})
    [sts] = workers(rendered)
    settings = started(sts, rendered, monkeypatch)
    assert not settings.registry_mode
    assert settings.tenant == "acme"
    assert settings.mqtt_share_group == f"{RELEASE}-acme"  # its replicas split the home's load


def test_worker_probes_resources_and_hardening(rendered: Rendered) -> None:
    for sts in workers(rendered):
        [container] = pod_spec(sts)["containers"]
        env = container_env(container, rendered)
        port = int(resolve(env["HATS_HTTP_PORT"], rendered, "pod"))
        assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [port]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert pod_spec(sts)["automountServiceAccountToken"] is False


def test_every_container_has_requests_limits_and_runs_as_non_root(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        assert pod_spec(workload)["securityContext"]["runAsNonRoot"] is True
        for container in containers(workload):
            assert set(container["resources"]) == {"requests", "limits"}
            for part in ("requests", "limits"):
                assert set(container["resources"][part]) >= {"cpu", "memory"}
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_tenant_secrets_are_a_read_only_secret_volume_in_the_folder_the_worker_reads(rendered: Rendered) -> None:
    tenants = rendered.values["tenantSecrets"]
    for sts in workers(rendered):
        [container] = pod_spec(sts)["containers"]
        env = container_env(container, rendered)
        volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
        directory = resolve(env["HATS_TENANT_SECRETS_DIR"], rendered, "pod")
        assert directory == tenants["mountPath"]
        if not tenants["existingSecret"]:
            assert "tenant-secrets" not in volumes
            continue
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "tenant-secrets"]
        assert mount["readOnly"] is True
        assert mount["mountPath"] == directory
        secret = volumes["tenant-secrets"]["secret"]
        assert secret["secretName"] == tenants["existingSecret"]
        assert secret["defaultMode"] == 0o400
        # Whole: a key added for a new home reaches the running pod (items or subPath would pin the files).
        assert "items" not in secret
        assert "subPath" not in mount


def test_the_migrations_run_before_install_and_upgrade_with_their_own_secret(rendered: Rendered) -> None:
    [job] = rendered.of_kind("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [container] = pod_spec(job)["containers"]
    assert container["command"][0] == "alembic"
    assert container["command"][-2:] == ["upgrade", "head"]
    env = container_env(container, rendered)
    migrations_env = ast.literal_eval(_constant(PROJECT_ROOT / "migrations" / "env.py", "DSN_SETTING"))
    assert set(env) == {migrations_env}
    assert env[migrations_env].kind == "secret"
    secrets = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == env[migrations_env].value]
    for secret in secrets:  # made by the chart: a hook that comes before the Job
        weight = int(secret["metadata"]["annotations"]["helm.sh/hook-weight"])
        assert weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


# --- the code location, through the dagster chart --------------------------------------------------------

def _constant(path: Any, name: str) -> str:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.unparse(node.value)
    raise AssertionError(f"{name} not found in {path}")


def code_location_variables() -> set[str]:
    """Every HATS_ variable hats_assets names (dg.EnvVar, os.environ reads, the retention settings'
    table), read from its source, plus the variables dagster.yaml references."""
    named: set[str] = set()
    for path in (PROJECT_ROOT / "hats_assets").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.fullmatch(node.value):
                named.add(node.value)
    return named | dagster_yaml_variables()


def dagster_yaml_variables() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text()))
    return found


def user_deployment(values: dict[str, Any]) -> dict[str, Any]:
    [deployment] = values["dagster"]["dagster-user-deployments"]["deployments"]
    return dict(deployment)


def user_deployment_env(rendered: Rendered) -> dict[str, EnvSource]:
    """What the dagster chart's user deployment (and each run's pod) starts with, as our values set it:
    its env list and the ConfigMaps and Secrets it names (an existing Secret with the keys values.yaml
    lists for it)."""
    deployment = user_deployment(rendered.values)
    secret = rendered.values["codeLocation"]["secret"]
    as_container = {"env": deployment.get("env", []),
                    "envFrom": [{"configMapRef": {"name": c["name"]}} for c in deployment["envConfigMaps"]]
                    + [{"secretRef": {"name": s["name"]}} for s in deployment["envSecrets"]]}
    return container_env(as_container, rendered, {secret["name"]: sorted(secret["values"])})


def test_the_code_location_reads_a_variable_the_scan_finds() -> None:
    """The scan that the next test relies on sees what the resources bind (it is not vacuous)."""
    assert {"HATS_INFLUX_URL", "HATS_DAGSTER_DSN", "HATS_DAGSTER_PG_URL"} <= code_location_variables()


def test_the_user_deployment_gets_every_variable_the_code_location_reads(rendered: Rendered) -> None:
    values = rendered.values
    deployment = user_deployment(values)
    env = user_deployment_env(rendered)
    assert code_location_variables() - set(env) == set()
    assert set(env) - code_location_variables() == set()  # nothing set that the code does not read
    assert [n for n, s in env.items() if SECRET_NAME.search(n) and s.kind != "secret"] == []
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True  # K8sRunLauncher's pods get them too
    dagster_url = resolve(env["HATS_DAGSTER_URL"], rendered, "pod")
    assert dagster_url == (f"http://{RELEASE}-{values['dagster']['dagsterWebserver']['nameOverride']}:"
                           f"{resolve(env['HATS_DAGSTER_PORT'], rendered, 'pod')}")


def test_the_code_location_holds_no_influxdb_admin_credential(rendered: Rendered) -> None:
    """It alters retention policies through the write gate's retention endpoint, with its own credential; the
    admin's is the gate's and the operator tools' (tenancy, devstack)."""
    assert {"HATS_INFLUX_RETENTION_URL", "HATS_INFLUX_RETENTION_PASSWORD"} <= code_location_variables()
    assert [v for v in code_location_variables() if "ADMIN" in v] == []
    assert [v for v in user_deployment_env(rendered) if "ADMIN" in v] == []
    gate = rendered.values["secrets"]["influxGate"]["values"]
    assert "HATS_INFLUX_GATE_ADMIN_PASSWORD" in gate


def test_the_user_deployment_runs_this_image_and_code_location(rendered: Rendered) -> None:
    values = rendered.values
    deployment = user_deployment(values)
    with helm.Chart.load(CHART) as chart:
        tag = values["image"]["tag"] or chart.metadata["appVersion"]
    assert (deployment["image"]["repository"], deployment["image"]["tag"]) == (values["image"]["repository"], tag)
    args = deployment["dagsterApiGrpcArgs"]
    dagster = PYPROJECT["tool"]["dagster"]
    assert args[args.index("--module-name") + 1] == dagster["module_name"]
    assert args[args.index("--location-name") + 1] == dagster["code_location_name"]
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["location_name"] == dagster["code_location_name"]


def test_dagster_runs_each_run_in_its_pod_on_external_postgresql_as_dagster_yaml_has_it(rendered: Rendered) -> None:
    dagster = rendered.values["dagster"]
    instance = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert dagster["runLauncher"]["type"] == "K8sRunLauncher"
    assert "postgres" in instance["storage"]
    assert dagster["postgresql"]["enabled"] is False
    assert dagster["postgresql"]["postgresqlHost"] == rendered.values["external"]["postgresql"]["host"]
    assert dagster["postgresql"]["service"]["port"] == rendered.values["external"]["postgresql"]["port"]
    coordinator = dagster["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == instance["run_coordinator"]["class"]
    assert (coordinator["config"]["queuedRunCoordinator"]["maxConcurrentRuns"]
            == instance["run_coordinator"]["config"]["max_concurrent_runs"])
    assert dagster["telemetry"]["enabled"] == instance["telemetry"]["enabled"]
    retries = dagster["dagsterDaemon"]["runRetries"]  # runs whose pod died, as dagster.yaml retries them
    assert (retries["enabled"], retries["maxRetries"], retries["retryOnAssetOrOpFailure"]) == (
        instance["run_retries"]["enabled"], instance["run_retries"]["max_retries"],
        instance["run_retries"]["retry_on_asset_or_op_failure"])
    # the storage password: from the Secret the dagster chart is told to read, never generated in values
    assert dagster["generatePostgresqlPasswordSecret"] is False
    secret_name = dagster["global"]["postgresqlSecretName"]
    made = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == secret_name]
    assert len(made) == (0 if rendered.values["dagsterStorage"]["existingSecret"] else 1)
    assert all("postgresql-password" in s["stringData"] for s in made)


def test_the_dagster_chart_is_pinned_with_the_dagster_library() -> None:
    """The chart's dagster dependency, the dagster in uv.lock and the one dagster-k8s (the image's
    run launcher) was built for are one version."""
    with helm.Chart.load(CHART) as chart:
        [dependency] = [d for d in chart.metadata["dependencies"] if d["name"] == "dagster"]
    assert dependency["version"] == locked("dagster")
    assert f"dagster=={locked('dagster')}" in (requires("dagster-k8s") or [])
    assert PYPROJECT["dependency-groups"]["k8s"] == [f"dagster-k8s=={locked('dagster-k8s')}"]


def test_the_code_location_loads_with_nothing_but_what_the_chart_gives_it(rendered: Rendered) -> None:
    """`dagster api grpc` imports the definitions in the user deployment's environment: the chart's
    variables alone (a placeholder for each Secret key) must load them: partitions, retention settings,
    every job. A subprocess, so this test's own environment (the test stack's settings) is not there."""
    env = {name: resolve(source, rendered, "pod") for name, source in user_deployment_env(rendered).items()}
    module = PYPROJECT["tool"]["dagster"]["module_name"]
    probe = (f"import {module} as m; r = m.defs.get_repository_def(); "
             "print(len(r.get_all_jobs()), len(list(m.defs.resolve_asset_graph().get_all_asset_keys())))")
    done = subprocess.run([sys.executable, "-c", probe], env={"PATH": os.environ["PATH"], **env}, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs, assets = map(int, done.stdout.split()[-2:])
    assert jobs > 0
    assert assets > 0


# --- the Grafana dashboards -------------------------------------------------------------------------------------

def test_the_dashboards_ship_as_a_configmap_the_grafana_sidecar_loads(rendered: Rendered) -> None:
    """The ConfigMap holds exactly deploy/grafana/dashboards/*.json, byte for byte (the chart links the folder)."""
    dashboards = PROJECT_ROOT / "deploy" / "grafana" / "dashboards"
    configmap = rendered.named("ConfigMap", "hats-grafana-dashboards")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {path.name: path.read_text().rstrip("\n") for path in sorted(dashboards.glob("*.json"))}
    off = render_values({"grafana": {"dashboards": False}})
    assert [m for m in off.of_kind("ConfigMap") if m["metadata"]["name"] == "hats-grafana-dashboards"] == []


# --- the daily backup -------------------------------------------------------------------------------------------

def test_the_daily_backup_is_a_cronjob_with_only_backup_settings_and_its_own_secret() -> None:
    """The production values' CronJob runs `python -m backups` one at a time, with the DSN of hats_backup from a
    Secret (never a value), a volume for HATS_BACKUP_DIR, and only variables the backup reads."""
    from backups.settings import ENV_PREFIX as BACKUP_PREFIX
    from backups.settings import BackupSettings

    rendered = render("production")
    [cronjob] = rendered.of_kind("CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    [container] = containers(cronjob)
    assert container["command"] == ["python", "-m", "backups"]
    assert container["image"] == "registry.example.com/hats/hats-backup:0.1.0"
    env = {item["name"]: item for item in container["env"]}
    fields = {BACKUP_PREFIX + name.upper() for name in BackupSettings.model_fields}
    assert set(env) - fields == {"HATS_PG_BIN_DIR"}
    assert {"HATS_BACKUP_DIR", "HATS_BACKUP_DSN", "HATS_INFLUX_RPC_ADDR"} <= set(env)
    assert env["HATS_BACKUP_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "hats-backup-credentials",
                                                                  "key": "HATS_BACKUP_DSN"}
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["HATS_BACKUP_DIR"]["value"] in mounts
    [claim] = rendered.of_kind("PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "hats-backup" not in {secret["metadata"]["name"] for secret in rendered.of_kind("Secret")}
    assert render("default").of_kind("CronJob") == []


# --- TLS to the services ---------------------------------------------------------------------------------------

CA_SECRET, CA_MOUNT = "hats-tls-ca", "/var/run/secrets/hats/tls"
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # the image's Debian bundle (python:*-slim-bookworm)


def dagster_pods(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The values of every Dagster pod that opens Dagster's storage, by their path in values.yaml."""
    dagster = values["dagster"]
    pods = {"dagster.dagsterWebserver": dagster["dagsterWebserver"], "dagster.dagsterDaemon": dagster["dagsterDaemon"],
            "dagster.runLauncher.config.k8sRunLauncher": dagster["runLauncher"]["config"]["k8sRunLauncher"]}
    for index, deployment in enumerate(dagster["dagster-user-deployments"]["deployments"]):
        pods[f"dagster.dagster-user-deployments.deployments[{index}] ({deployment['name']})"] = deployment
    return pods


def mounting_ca(secret: str = CA_SECRET, mount_path: str = CA_MOUNT) -> dict[str, Any]:
    """Over the evaluation install: the CA Secret, mounted in every Dagster pod and named by Dagster's storage
    (what values.yaml tells the operator to add with tls.caSecret)."""
    volume = {"name": "tls-ca", "secret": {"secretName": secret, "items": [{"key": "ca.pem", "path": "ca.pem"}]}}
    pod = {"volumes": [volume], "volumeMounts": [{"name": "tls-ca", "mountPath": mount_path, "readOnly": True}]}
    deployments = [{**d, **pod} for d in render("default").values["dagster"]["dagster-user-deployments"]["deployments"]]
    return {"tls": {"caSecret": secret, "mountPath": mount_path},
            "dagster": {"postgresql": {"postgresqlParams": {"sslrootcert": f"{mount_path}/ca.pem"}},
                        "dagsterWebserver": pod, "dagsterDaemon": pod,
                        "runLauncher": {"config": {"k8sRunLauncher": pod}},
                        "dagster-user-deployments": {"deployments": deployments}}}


def test_tls_settings_follow_the_services_and_the_ca_secret(monkeypatch: pytest.MonkeyPatch, tls_mount: Path) -> None:
    """A TLS broker and an https:// InfluxDB with the CA Secret: the worker verifies the broker with the mounted
    `ca.pem`, the code location is told the same file for InfluxDB; a plaintext broker gets neither TLS nor a
    CA (the evaluation install's gate is plain HTTP too)."""
    rendered = render_values(mounting_ca())
    for sts in workers(rendered):
        settings = started(sts, rendered, monkeypatch, tls_mount)
        assert settings.mqtt_tls
        assert settings.mqtt_ca_file == tls_mount / "ca.pem"
        [volume] = [v for v in pod_spec(sts)["volumes"] if v["name"] == "tls-ca"]
        assert volume["secret"]["secretName"] == CA_SECRET
    [location] = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"] == "hats-code-location"]
    assert location["data"]["HATS_INFLUX_CA_FILE"] == f"{CA_MOUNT}/ca.pem"
    plain = render_values(merged(mounting_ca(), {
        "external": {"mqtt": {"host": "mqtt.example.internal", "port": 1883, "tls": False},
                     "influxdb": {"url": "http://influxdb.example.internal:8086"}}}))
    for sts in workers(plain):
        env = container_env(pod_spec(sts)["containers"][0], plain)
        assert "HATS_MQTT_CA_FILE" not in env
        assert "HATS_INFLUX_CA_FILE" not in env
        settings = started(sts, plain, monkeypatch, tls_mount)
        assert not settings.mqtt_tls


# --- Dagster's own storage: verify-full, with the CA mounted in every pod that opens it ----------------------------

def test_dagster_storage_is_verify_full_with_the_ca_every_dagster_pod_mounts(rendered: Rendered) -> None:
    """The webserver, the daemon, the code location and each run's pod (the run launcher's) open Dagster's storage
    with dagster.postgresql.postgresqlParams: verify-full, and the sslrootcert they name is in each of them: the
    CA Secret's ca.pem at tls.mountPath, or (no CA Secret) the image's own bundle."""
    values = rendered.values
    params = values["dagster"]["postgresql"]["postgresqlParams"]
    assert params["sslmode"] == "verify-full"
    pods = dagster_pods(values)
    assert len(pods) == 4
    secret = values["tls"]["caSecret"]
    if not secret:
        assert params["sslrootcert"] == IMAGE_CA_BUNDLE  # not `system`: see values.yaml
        return
    assert params["sslrootcert"] == f"{values['tls']['mountPath']}/ca.pem"
    entries = set()
    for path, pod in pods.items():
        [volume] = [v for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == secret]
        pem = {"key": "ca.pem", "path": "ca.pem"}
        assert pem in volume["secret"].get("items", [pem]), path
        [mount] = [m for m in pod.get("volumeMounts", []) if m["name"] == volume["name"]]
        assert (mount["mountPath"], mount.get("readOnly")) == (values["tls"]["mountPath"], True), path
        entries.add(yaml.safe_dump((volume, mount)))
    # One entry everywhere: a run's pod gets the run launcher's and the code location's (includeConfigInLaunchedRuns),
    # which dagster-k8s merges into one volume only when they are the same.
    assert len(entries) == 1


def test_dagster_storage_params_make_a_verified_connection_through_dagsters_own_driver(
        rendered: Rendered, stack_env: dict[str, str], profile: Profile) -> None:
    """The chart's postgresqlParams, as dagster-postgres turns them into its connection string (psycopg2, the
    driver of the image), against the stack's TLS PostgreSQL: with its CA where sslrootcert points the
    connection is encrypted; with a bundle that lacks it (the image's public one), or at a name its certificate
    does not carry (what verify-full adds to verify-ca), it is refused."""
    import sqlalchemy
    from dagster_postgres.utils import pg_url_from_config

    storage = urllib.parse.urlsplit(stack_env["HATS_DAGSTER_PG_URL"])  # the stack's own Dagster storage
    params = dict(rendered.values["dagster"]["postgresql"]["postgresqlParams"])

    def connect(sslrootcert: str, hostname: str | None = None) -> bool:
        extra = {} if hostname is None else {"hostaddr": storage.hostname}  # that name, at the stack's address
        url = pg_url_from_config({"postgres_db": {
            "username": urllib.parse.unquote(storage.username or ""),
            "password": urllib.parse.unquote(storage.password or ""),
            "hostname": hostname or storage.hostname, "port": str(storage.port), "db_name": storage.path.lstrip("/"),
            "params": {**params, **extra, "sslrootcert": sslrootcert}}})
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                return bool(conn.execute(sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
                            .scalar_one())
        finally:
            engine.dispose()

    assert connect(str(certs.ca_file(profile))) is True
    with pytest.raises(sqlalchemy.exc.OperationalError, match="certificate verify failed"):
        connect(IMAGE_CA_BUNDLE)
    elsewhere = "not-the-server.invalid"
    with pytest.raises(sqlalchemy.exc.OperationalError, match=re.escape(f'does not match host name "{elsewhere}"')):
        connect(str(certs.ca_file(profile)), hostname=elsewhere)


def _without_ca(values: dict[str, Any], path: str) -> dict[str, Any]:
    """`values` with the pod at `path` (dagster_pods' names) mounting nothing."""
    values = merged(values, {})
    dagster_pods(values)[path].update(volumes=[], volumeMounts=[])
    return values


@pytest.mark.parametrize("path", sorted(dagster_pods(values_of("production"))))
def test_a_dagster_pod_without_the_ca_fails_to_render_naming_it(path: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(f"{path}: mount tls.caSecret ({CA_SECRET}) at tls.mountPath")):
        render_exactly(_without_ca(values_of("production"), path))


@pytest.mark.parametrize(("params", "message"), [
    ({"sslmode": "require"}, 'dagster.postgresql.postgresqlParams.sslmode must be verify-full (got "require")'),
    ({"sslmode": None}, "dagster.postgresql.postgresqlParams.sslmode must be verify-full"),
    ({"sslrootcert": None}, "dagster.postgresql.postgresqlParams.sslrootcert: the CA"),
    ({"sslrootcert": "system"}, f"dagster.postgresql.postgresqlParams.sslrootcert must be {CA_MOUNT}/ca.pem"),
])
def test_dagster_storage_weaker_than_verify_full_fails_to_render(params: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render_exactly(merged(values_of("production"), {"dagster": {"postgresql": {"postgresqlParams": params}}}))


# --- the InfluxDB write gate over TLS -----------------------------------------------------------------------------

def test_the_gate_serves_https_with_its_certificate_and_its_clients_verify_it(
        monkeypatch: pytest.MonkeyPatch, tls_mount: Path) -> None:
    """influxGate.tls.secretName: the gate starts with the Secret's pair (mounted 0400), the workers and the code
    location reach it at https://<service>.<namespace>.svc with the CA Secret's ca.pem, and the gate verifies
    InfluxDB with the same ca.pem."""
    from influx_gate.settings import ENV_PREFIX as GATE_PREFIX
    from influx_gate.settings import load_settings as load_gate_settings

    rendered = render("production")
    values = rendered.values
    [gate] = [d for d in rendered.of_kind("Deployment") if d["metadata"]["name"] == "hats-influx-gate"]
    [container] = pod_spec(gate)["containers"]
    volumes = {v["name"]: v for v in pod_spec(gate)["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # the stack's PKI stands in for the Secrets' files: its CA for ca.pem, a server pair for tls.crt / tls.key
    files = {"ca.pem": tls_mount / "ca.pem", "tls.crt": tls_mount / "influxdb.pem",
             "tls.key": tls_mount / "influxdb.key"}
    for name in [n for n in os.environ if n.upper().startswith(GATE_PREFIX)]:
        monkeypatch.delenv(name)
    mounted = {}
    for name, source in container_env(container, rendered).items():
        value = resolve(source, rendered, "gate")
        if (directory := str(Path(value).parent)) in mounts:
            volume = volumes[mounts[directory]["name"]]["secret"]
            assert Path(value).name in [item["path"] for item in volume["items"]], name
            mounted[name] = (volume, mounts[directory])
            value = str(files[Path(value).name])
        monkeypatch.setenv(name, value)
    settings = load_gate_settings()
    assert settings.server_ssl() is not None  # the pair loads: it serves HTTPS
    cert_volume, cert_mount = mounted["HATS_INFLUX_GATE_TLS_KEY_FILE"]
    assert mounted["HATS_INFLUX_GATE_TLS_CERT_FILE"][0] is cert_volume
    assert cert_volume["secretName"] == values["influxGate"]["tls"]["secretName"]
    assert cert_volume["defaultMode"] == 0o400
    assert cert_mount["readOnly"] is True
    assert mounted["HATS_INFLUX_GATE_UPSTREAM_CA_FILE"][0]["secretName"] == values["tls"]["caSecret"]
    assert settings.upstream_ssl() is not None
    url = f"https://hats-influx-gate.{NAMESPACE}.svc:{settings.port}"
    [service] = [s for s in rendered.of_kind("Service") if s["metadata"]["name"] == "hats-influx-gate"]
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https", settings.port)]
    for sts in workers(rendered):
        worker = started(sts, rendered, monkeypatch, tls_mount)
        assert worker.influx_write_url == url
        assert worker.influx_ca_file == tls_mount / "ca.pem"
    location = rendered.named("ConfigMap", "hats-code-location")["data"]
    assert (location["HATS_INFLUX_RETENTION_URL"], location["HATS_INFLUX_CA_FILE"]) == (url, f"{CA_MOUNT}/ca.pem")


@pytest.mark.parametrize(("values", "message"), [
    ({}, "influxGate.tls.secretName: the write gate serves HTTPS by default; make a kubernetes.io/tls Secret "
         "(keys tls.crt, tls.key) for hats-influx-gate.hats.svc"),
    ({"influxGate": {"tls": {"enabled": True}}}, "influxGate.tls.secretName: the write gate serves HTTPS by default"),
    ({"influxGate": {"tls": {"secretName": "gate-tls"}}},
     "tls.caSecret: the workers and the code location verify the write gate's certificate "
     '(influxGate.tls.secretName "gate-tls")'),
    ({"influxGate": {"tls": {"enabled": False, "secretName": "gate-tls"}}},
     'influxGate.tls.enabled is false but influxGate.tls.secretName is set ("gate-tls")'),
])
def test_the_gate_without_tls_decided_fails_to_render_naming_the_value(values: dict[str, Any], message: str) -> None:
    """TLS on the gate is the default: the chart's own defaults render nothing until a certificate is named or
    plain HTTP is asked for."""
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render_exactly(values)


def test_a_plaintext_gate_is_only_what_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render_exactly({"influxGate": {"tls": {"enabled": False}}})
    [sts, *_] = workers(rendered)
    settings = started(sts, rendered, monkeypatch)
    assert settings.influx_write_url == "http://hats-influx-gate:8087"
    assert settings.influx_ca_file is None
