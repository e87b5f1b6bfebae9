"""Bring the whole local stack up or down, idempotently, and report its state."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

from devstack import certs, envfile, exporter, influx_gate, influxdb, mosquitto, postgres, prometheus, run_storage
from devstack.procs import Managed
from devstack.profile import PROJECT_ROOT, Profile
from devstack.secrets import load_or_create
from tenancy import influx as tenant_influx
from tenancy.registry import TenantRegistry
from tenancy.settings import load_settings
from tenancy.spec import TenantSpec

# Migration 0001's name for the demo home, used only if its row is missing.
DEFAULT_TENANT_NAME = "Default single-home tenant"


def progress(message: str) -> None:
    print(f"  - {message}", file=sys.stderr, flush=True)


def _timed(what: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    progress(f"{what} ({time.monotonic() - started:.1f} s)")


def secrets_for(profile: Profile) -> dict[str, str]:
    return load_or_create(profile.path("secrets.json"))


def migrate(dsn: str, revision: str = "head", downgrade: bool = False) -> None:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["dsn"] = dsn
    previous = os.environ.get("HATS_PG_DSN")
    os.environ["HATS_PG_DSN"] = dsn
    try:
        if downgrade:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)
    finally:
        if previous is None:
            os.environ.pop("HATS_PG_DSN", None)
        else:
            os.environ["HATS_PG_DSN"] = previous


def ensure_default_tenant(values: dict[str, str]) -> None:
    """The demo home (its row comes from migration 0001) is a normal tenant: `hats up` runs the registry's
    add for it, idempotently, so it has its database, retention policies, grants, analyst role, their
    secrets and iam rows like any home added with `hats tenant add` (an existing row is kept as it is).
    Databases made before `autogen` was dropped at creation lose it here."""
    spec = TenantSpec(id=values["HATS_TENANT"], name=DEFAULT_TENANT_NAME)
    with TenantRegistry(load_settings(values)) as registry:
        registry.add(spec, exist_ok=True)
        dropped = tenant_influx.drop_every_autogen(registry.influx)
    if dropped:
        progress(f"dropped the autogen retention policy of {len(dropped)} database(s)")


def up(profile: Profile) -> dict[str, str]:
    """Start every service, migrate, provision accounts and databases, write the env file."""
    fresh_state = not profile.path("secrets.json").exists()
    secrets = secrets_for(profile)
    if fresh_state and profile.pg_data_dir.exists():
        # The state folder was deleted but the cluster (outside it) was not: its passwords are gone.
        progress(f"removing the orphaned PostgreSQL cluster in {profile.pg_data_dir}")
        postgres.stop(profile)
        shutil.rmtree(profile.pg_data_dir)
    profile.path("logs").mkdir(parents=True, exist_ok=True)
    for issued in certs.ensure(profile):
        progress(f"TLS: new {issued.service} certificate, valid until {issued.not_after:%Y-%m-%d %H:%M} UTC")
    _timed(f"Mosquitto on 127.0.0.1:{profile.ports['mqtt']}", lambda: mosquitto.start(profile, secrets))
    _timed(f"InfluxDB in its own network namespace, its front on 127.0.0.1:{profile.ports['influx']}, write gate "
           f"on 127.0.0.1:{profile.ports['influx_gate']}", lambda: influxdb.start(profile, secrets))
    _timed(f"PostgreSQL on 127.0.0.1:{profile.ports['pg']}", lambda: postgres.start(profile, secrets))
    _timed("migrations at head", lambda: migrate(postgres.superuser_dsn(profile, secrets)))
    postgres.set_role_passwords(profile, secrets)
    postgres.ensure_database(profile, secrets, postgres.DAGSTER_DB, owner="hats_dagster")
    with postgres.connect(postgres.superuser_dsn(profile, secrets, postgres.DAGSTER_DB)) as conn:
        conn.execute("REVOKE ALL ON DATABASE dagster FROM PUBLIC")
    postgres.harden_cluster(profile, secrets)
    values = envfile.settings(profile, secrets)
    _timed(f"tenant {values['HATS_TENANT']}", lambda: ensure_default_tenant(values))
    dagster_home = Path(values["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    link = dagster_home / "dagster.yaml"
    if not link.is_symlink():
        link.unlink(missing_ok=True)
        link.symlink_to(PROJECT_ROOT / "dagster.yaml")
    envfile.write(profile, values)
    _timed("Dagster run storage readable by the ops exporter",
           lambda: run_storage.grant_exporter(profile, secrets, values))
    _timed(f"ops exporter on 127.0.0.1:{profile.ports['exporter']}", lambda: exporter.start(profile, values))
    _timed(f"Prometheus on 127.0.0.1:{profile.ports['prometheus']}", lambda: prometheus.start(profile))
    if profile.name == "dev":
        shortcut = profile.state_dir.parent / "env"
        shortcut.unlink(missing_ok=True)
        shortcut.symlink_to(profile.env_file)
    return values


def renew_certificates(profile: Profile) -> list[certs.Issued]:
    """`hats certs renew`: new server certificates from the same CA, and every running service made to
    serve them (Mosquitto and InfluxDB restarted, PostgreSQL reloaded); clients trust the CA, so they
    reconnect without a change. A stopped service serves the new one at its next start."""
    secrets = secrets_for(profile)
    issued = certs.renew(profile)
    if mosquitto.process(profile).running():
        _timed("Mosquitto restarted on its new certificate", lambda: mosquitto.restart(profile, secrets))
    if influxdb.process(profile).running():
        _timed("InfluxDB restarted on its new certificate", lambda: influxdb.restart(profile, secrets))
    if postgres.running(profile):
        _timed("PostgreSQL reloaded its new certificate", lambda: postgres.start(profile, secrets))
    return issued


def app_processes(profile: Profile) -> list[Managed]:
    """The platform's own processes that `hats run` starts on top of the services."""
    return [Managed(name, profile.path("run", f"{name}.pid"), profile.path("logs", f"{name}.log"))
            for name in ("simulator", "worker", "dagster", "backups")]


def down(profile: Profile) -> None:
    for proc in app_processes(profile):
        if proc.stop():
            progress(f"stopped {proc.name}")
    # Test sessions stop their Home Assistant peers; one whose session was killed is stopped here.
    for pidfile in sorted(profile.path("homeassistant").glob("*/slot-*/config/hass.pid")):
        if Managed("Home Assistant", pidfile, pidfile.with_name("hass.out")).stop():
            progress(f"stopped Home Assistant in {pidfile.parent}")
    prometheus.unregister_all(profile)
    for name, stop in (("Prometheus", prometheus.stop), ("ops exporter", exporter.stop), ("Mosquitto", mosquitto.stop),
                       ("InfluxDB write gate", influx_gate.stop),
                       ("InfluxDB", influxdb.stop), ("PostgreSQL", postgres.stop)):
        if stop(profile):
            progress(f"stopped {name}")


def purge(profile: Profile) -> None:
    """Stop everything and delete the profile's state: data, secrets, logs, its PostgreSQL cluster and its
    backups with their WAL archive (a new cluster starts its WAL names again; `hats backup` first to keep one)."""
    down(profile)
    shutil.rmtree(profile.pg_data_dir, ignore_errors=True)
    shutil.rmtree(profile.backup_dir, ignore_errors=True)
    shutil.rmtree(profile.state_dir, ignore_errors=True)


def status(profile: Profile) -> dict[str, bool]:
    states = {
        "mosquitto": mosquitto.process(profile).running(),
        "influxdb": influxdb.process(profile).running(),
        "influx_gate": influx_gate.process(profile).running(),
        "postgresql": postgres.running(profile),
        "prometheus": prometheus.process(profile).running(),
        "ops_exporter": exporter.process(profile).running(),
    }
    states |= {proc.name: proc.running() for proc in app_processes(profile)}
    return states
