"""The sourceable env file: every connection setting of a running stack, for shells, tests and tools."""

from __future__ import annotations

import os
import shlex

from devstack import certs, influx_gate, influxdb, mosquitto, postgres
from devstack.profile import LOOPBACK, Profile

DEFAULT_TENANT = "home"
# Store outages retried quickly in tests (the code location's defaults: 4 retries from 15 s, up to 450 s of
# waiting for a store that stays down). hats_assets binds them when it loads: tests/conftest.py sets them too.
TEST_STEP_RETRIES = {"HATS_DAGSTER_STEP_RETRIES": "2", "HATS_DAGSTER_RETRY_DELAY_S": "0.5"}


def settings(profile: Profile, secrets: dict[str, str]) -> dict[str, str]:
    def url(user: str, account: str, database: str = postgres.WAREHOUSE_DB) -> str:
        return postgres.dsn(profile, user, secrets[account], database)
    return {
        "HATS_PROFILE": profile.name,
        "HATS_TENANT": DEFAULT_TENANT,
        "HATS_MQTT_HOST": LOOPBACK,
        "HATS_MQTT_PORT": str(profile.ports["mqtt"]),
        "HATS_MQTT_TLS": "1",
        "HATS_MQTT_CA_FILE": str(certs.ca_file(profile)),
        "HATS_MQTT_USERNAME": mosquitto.WORKER_USER,
        "HATS_MQTT_PASSWORD": secrets["mqtt_worker"],
        "HATS_MQTT_PUBLISHER_USERNAME": mosquitto.PUBLISHER_USER,
        "HATS_MQTT_PUBLISHER_PASSWORD": secrets["mqtt_publisher"],
        "HATS_MQTT_HOMEASSISTANT_USERNAME": mosquitto.HOMEASSISTANT_USER,
        "HATS_MQTT_HOMEASSISTANT_PASSWORD": secrets["mqtt_homeassistant"],
        "HATS_MQTT_BENCH_USERNAME": mosquitto.BENCH_USER,
        "HATS_MQTT_BENCH_PASSWORD": secrets["mqtt_bench"],
        "HATS_BROKER_ADMIN_USERNAME": mosquitto.ADMIN_USER,
        "HATS_BROKER_ADMIN_PASSWORD": secrets["mqtt_broker_admin"],
        "HATS_INFLUX_URL": influxdb.url(profile),
        "HATS_INFLUX_CA_FILE": str(certs.ca_file(profile)),
        # The worker writes through the gate with the gate's credential; the InfluxDB WRITE account's password
        # is the gate's alone (devstack/influx_gate.py), tenancy only grants that account WRITE.
        "HATS_INFLUX_WRITE_URL": influx_gate.url(profile),
        "HATS_INFLUX_USERNAME": influx_gate.WORKER_USER,
        "HATS_INFLUX_PASSWORD": secrets["influx_gate_worker"],
        "HATS_INFLUX_WRITER_USERNAME": influxdb.WRITER_USER,
        "HATS_INFLUX_DAGSTER_USERNAME": influxdb.DAGSTER_USER,
        "HATS_INFLUX_DAGSTER_PASSWORD": secrets["influx_dagster"],
        # The code location alters retention policies and lists shards through the gate's retention endpoint,
        # with its own credential; the admin's is the operator tools' (tenancy, devstack) and the gate's.
        "HATS_INFLUX_RETENTION_URL": influx_gate.url(profile),
        "HATS_INFLUX_RETENTION_USERNAME": influx_gate.RETENTION_USER,
        "HATS_INFLUX_RETENTION_PASSWORD": secrets["influx_gate_retention"],
        "HATS_INFLUX_ADMIN_USERNAME": influxdb.ADMIN_USER,
        "HATS_INFLUX_ADMIN_PASSWORD": secrets["influx_admin"],
        "HATS_PG_DSN": url(postgres.SUPERUSER, "pg_superuser"),
        "HATS_INGEST_DSN": url("hats_ingest", "pg_ingest"),
        "HATS_DAGSTER_DSN": url("hats_dagster", "pg_dagster"),
        "HATS_ANALYST_DSN": url("hats_analyst", "pg_analyst"),
        "HATS_DAGSTER_PG_URL": url("hats_dagster", "pg_dagster", postgres.DAGSTER_DB),
        # ops_exporter: read-only, the ops rows it counts (migration 0014) and Dagster's run statuses.
        "HATS_EXPORTER_DSN": url("hats_exporter", "pg_exporter"),
        "HATS_EXPORTER_DAGSTER_DSN": url("hats_exporter", "pg_exporter", postgres.DAGSTER_DB),
        "HATS_EXPORTER_PORT": str(profile.ports["exporter"]),
        "HATS_PROMETHEUS_URL": f"http://{LOOPBACK}:{profile.ports['prometheus']}",
        "HATS_DAGSTER_PORT": str(profile.ports["dagster"]),
        # `hats backup` / `hats restore` (backups/): the REPLICATION-only role, the folder, InfluxDB's backup RPC.
        "HATS_BACKUP_DSN": url("hats_backup", "pg_backup"),
        "HATS_BACKUP_DIR": str(profile.backup_dir),
        "HATS_INFLUX_RPC_ADDR": f"{LOOPBACK}:{profile.ports['influx_rpc']}",
        # InfluxDB's RPC port answers only in its network namespace (devstack/influxdb.py): the backups run there.
        "HATS_INFLUX_RPC_NETNS": str(influxdb.netns_path(profile)),
        "DAGSTER_HOME": str(profile.path("dagster_home")),
        # One folder per home of secret files (tenancy/secrets.py); a Kubernetes Secret volume in a cluster.
        "HATS_TENANT_SECRETS_DIR": str(profile.path("tenants")),
        **(TEST_STEP_RETRIES if profile.name == "test" else {}),
    }


def write(profile: Profile, values: dict[str, str]) -> None:
    lines = ["# Written by `hats up`: the running stack's settings. Source it: `. .hats/env`"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in values.items()]
    fd = os.open(profile.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def read(profile: Profile) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in profile.env_file.read_text().splitlines():
        if line.startswith("export "):
            key, _, raw = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(raw)[0] if raw else ""
    return values
