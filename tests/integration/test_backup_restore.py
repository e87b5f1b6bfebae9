"""A restore equals its source: rows in several tables (one partitioned) and points in two retention
policies are written, backed up, written again; a timestamp is noted; more is written. Restored into a
scratch stack (its own ports, state folder and cluster), every table of the hats schemas and every
(database, policy, measurement)'s points equal the source's at the latest restore; at the point-in-time
target the rows equal what the source held then (later rows absent). A killed backup leaves no manifest
and is never listed as complete nor restored."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from backups import catalogue, restore, retention, take, wal
from backups import postgres as postgres_backup
from backups.catalogue import BackupError
from backups.settings import BackupSettings, load_settings
from devstack import influxdb as stack_influx
from devstack import postgres
from devstack.procs import free_ports
from devstack.profile import PORT_SETTINGS, PROJECT_ROOT, Profile
from hats_assets.defs.warehouse.tables import month_partition
from ingest_worker.tls import client_context
from tests.conftest import Tenant, wait_for

pytestmark = pytest.mark.integration

SCHEMAS = ("core", "ops", "analytics", "iam")
MEASUREMENTS = ("temperature", "power")


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Profile]:
    """A second stack on free ports with its own state folder and cluster, removed after the test."""
    ports = dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True))
    profile = Profile(name="test", state_dir=tmp_path / "scratch", ports=ports)
    yield profile
    restore.purge_scratch(profile)
    assert not profile.pg_data_dir.exists()
    assert not profile.backup_dir.exists()


@pytest.fixture
def backup_settings(stack_env: dict[str, str]) -> Iterator[BackupSettings]:
    """The stack's own backup settings; the backups a test takes are removed after it (the WAL stays)."""
    settings = load_settings(stack_env)
    before = {backup.id for backup in catalogue.backups(settings.backup_dir)}
    yield settings
    for backup in catalogue.backups(settings.backup_dir):
        if backup.id not in before:
            shutil.rmtree(backup.path)


def _digests(dsn: str) -> dict[str, tuple[int, str]]:
    """Every table of the hats schemas: (rows, md5 of its rows' text, in order)."""
    with psycopg.connect(dsn) as conn:
        tables = [f"{schema}.{name}" for schema, name in conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s) ORDER BY 1, 2", (list(SCHEMAS),))]
        found: dict[str, tuple[int, str]] = {}
        for table in tables:
            row = conn.execute(f"SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), "
                               f"'')) FROM {table} t").fetchone()
            assert row is not None
            found[table] = (int(row[0]), str(row[1]))
    assert len(found) > 10
    return found


def _influx(env: dict[str, str], query: str, database: str | None = None) -> list[dict[str, Any]]:
    response = httpx.post(f"{env['HATS_INFLUX_URL']}/query", data={"q": query, "epoch": "ns"} | (
        {"db": database} if database else {}), auth=(env["HATS_INFLUX_ADMIN_USERNAME"],
                                                     env["HATS_INFLUX_ADMIN_PASSWORD"]), timeout=30,
                                                     verify=client_context(env["HATS_INFLUX_CA_FILE"]))
    response.raise_for_status()
    series: list[dict[str, Any]] = []
    for result in response.json()["results"]:
        assert "error" not in result, result["error"]
        series.extend(result.get("series", []))
    return series


def _points(env: dict[str, str]) -> dict[tuple[str, str, str], tuple[int, str]]:
    """Every hats database's points per (database, policy, measurement): (count, sha256 of the rows)."""
    found: dict[tuple[str, str, str], tuple[int, str]] = {}
    for database in [row[0] for one in _influx(env, "SHOW DATABASES") for row in one["values"]]:
        if not database.startswith("hats_"):
            continue
        policies = [row[0] for one in _influx(env, f'SHOW RETENTION POLICIES ON "{database}"')
                    for row in one["values"]]
        measurements = [row[0] for one in _influx(env, "SHOW MEASUREMENTS", database) for row in one["values"]]
        for policy in policies:
            for measurement in measurements:
                series = _influx(env, f'SELECT * FROM "{policy}"."{measurement}"', database)
                rows = [row for one in series for row in one["values"]]
                if rows:
                    text = json.dumps(rows, sort_keys=True).encode()
                    found[(database, policy, measurement)] = (len(rows), hashlib.sha256(text).hexdigest())
    return found


def _write_points(tenant: Tenant, start: datetime, count: int) -> None:
    for policy in ("raw", "rollup"):
        lines = [f"{measurement},entity_id=sensor.{measurement}_{i % 3} value={i * 1.5 + len(policy)} "
                 f"{int((start + timedelta(seconds=i)).timestamp() * 1e9)}"
                 for measurement in MEASUREMENTS for i in range(count)]
        response = httpx.post(f"{tenant.env['HATS_INFLUX_URL']}/write",
                              params={"db": tenant.database, "rp": policy}, content="\n".join(lines),
                              auth=(tenant.env["HATS_INFLUX_ADMIN_USERNAME"], tenant.env["HATS_INFLUX_ADMIN_PASSWORD"]),
                              timeout=30, verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
        assert response.status_code == 204, response.text


def _write_rows(dsn: str, tenant: str, tag: str, hour: datetime) -> None:
    """Rows in core.entities, ops.dead_letters, ops.ingest_hours and the partitioned analytics.hourly_rollup."""
    with psycopg.connect(dsn) as conn:
        conn.execute(month_partition("hourly_rollup", hour)[0])
        conn.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, source) "
                     "VALUES (%s, %s, 'sensor', 'temperature', 'statestream')", (tenant, f"sensor.{tag}"))
        conn.execute("INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason) "
                     "VALUES (now(), %s, %s, %s, 'test')", (tenant, f"t/{tag}", tag.encode()))
        conn.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, 3)", (tenant, hour))
        conn.execute("INSERT INTO analytics.hourly_rollup (tenant_id, entity_id, quantity, kind, hour, mean, count) "
                     "VALUES (%s, %s, 'temperature', 'gauge', %s, 21.5, 12)", (tenant, f"sensor.{tag}", hour))


def _delete_rows(dsn: str, tenant: str) -> None:
    with psycopg.connect(dsn) as conn:
        for table in ("analytics.hourly_rollup", "ops.ingest_hours", "ops.dead_letters", "core.entities"):
            conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (tenant,))


def _server_now(dsn: str) -> datetime:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_a_restore_equals_its_source(profile: Profile, stack_env: dict[str, str], tenant: Tenant,
                                     backup_settings: BackupSettings, scratch: Profile) -> None:
    dsn = stack_env["HATS_PG_DSN"]
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    try:
        _write_rows(dsn, tenant.name, "before_backup", hour)
        _write_points(tenant, hour, 30)
        made = take.take(backup_settings, lambda _: None)
        assert made.complete
        assert made.manifest is not None
        points_at_backup = _points(stack_env)
        assert {(tenant.database, policy, m) for policy in ("raw", "rollup") for m in MEASUREMENTS} <= set(
            points_at_backup)
        pg = made.manifest["postgresql"]
        with psycopg.connect(dsn) as conn:
            names = conn.execute("SELECT pg_walfile_name(%s::pg_lsn), pg_walfile_name(%s::pg_lsn)",
                                 (pg["start_lsn"], pg["end_lsn"])).fetchone()
        assert names == (pg["wal_start"], pg["wal_end"])
        assert made.manifest["total_bytes"] == sum(
            path.stat().st_size for path in made.path.rglob("*") if path.is_file() and path.name != "manifest.json")

        _write_rows(dsn, tenant.name, "after_backup", hour + timedelta(hours=1))
        _write_points(tenant, hour + timedelta(minutes=30), 10)
        target = _server_now(dsn)
        rows_at_target = _digests(dsn)
        _write_rows(dsn, tenant.name, "after_target", hour + timedelta(hours=2))
        rows_latest = _digests(dsn)
        assert rows_latest != rows_at_target

        latest = restore.restore(backup_settings, profile, scratch, progress=lambda _: None)
        assert latest.backup == made.id
        restored_env = _env_of(scratch)
        assert _digests(restored_env["HATS_PG_DSN"]) == rows_latest
        # The source archives since its backup (the restore replayed past the backup's end); the scratch stack,
        # never backed up itself, archives nothing: PostgreSQL counts a closed segment archived, none is kept.
        source_archive = wal.archive_dir(backup_settings.backup_dir, pg["system_identifier"])
        assert (source_archive / wal.MARKER).is_file()
        assert [segment for segment in wal.segments(source_archive) if segment > pg["wal_end"]]
        scratch_archive = wal.archive_dir(scratch.backup_dir, pg["system_identifier"])
        closed = postgres_backup.switch_wal(load_settings(restored_env), lambda _: None)
        assert closed > pg["wal_end"]
        assert scratch_archive.is_dir()
        assert not (scratch_archive / wal.MARKER).exists()
        assert wal.segments(scratch_archive) == []
        assert _points(restored_env) == points_at_backup
        assert tenant.database in latest.databases

        at_target = restore.restore(backup_settings, profile, scratch, target_time=target, progress=lambda _: None)
        assert at_target.backup == made.id
        restored_env = _env_of(scratch)
        restored_rows = _digests(restored_env["HATS_PG_DSN"])
        assert restored_rows == rows_at_target
        with psycopg.connect(restored_env["HATS_PG_DSN"]) as conn:
            entities = {row[0] for row in conn.execute(
                "SELECT entity_id FROM core.entities WHERE tenant_id = %s", (tenant.name,))}
        assert entities == {"sensor.before_backup", "sensor.after_backup"}
        assert _points(restored_env) == points_at_backup
        # The restored home's accounts may use its database again (a restore drops InfluxDB's grants).
        grants = _influx(restored_env, f'SHOW GRANTS FOR "{stack_influx.WRITER_USER}"')
        assert [tenant.database, "WRITE"] in [row for one in grants for row in one["values"]]

        # A time after the source's last commit (nothing written since) is the latest state, not an error.
        quiet = _server_now(dsn)
        restore.restore(backup_settings, profile, scratch, target_time=quiet, progress=lambda _: None)
        assert _digests(_env_of(scratch)["HATS_PG_DSN"]) == rows_latest
    finally:
        _delete_rows(dsn, tenant.name)


def _env_of(profile: Profile) -> dict[str, str]:
    from devstack import envfile

    return envfile.read(profile)


def test_an_interrupted_backup_is_never_taken_for_one(stack_env: dict[str, str], backup_settings: BackupSettings,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "backup.log"
    before = {backup.id for backup in catalogue.backups(backup_settings.backup_dir)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devstack.cli", "--profile", "test", "backup"],
                                env={**os.environ, **stack_env}, cwd=PROJECT_ROOT, stdout=out, stderr=out,
                                start_new_session=True)

    def started() -> catalogue.Backup | None:
        fresh = [backup for backup in catalogue.backups(backup_settings.backup_dir) if backup.id not in before]
        return fresh[0] if fresh and (fresh[0].path / "postgresql" / "base").is_dir() else None

    interrupted: catalogue.Backup = wait_for(started, "the backup to start writing its base backup")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    listed = {backup.id: backup for backup in catalogue.backups(backup_settings.backup_dir)}
    assert not listed[interrupted.id].complete
    assert interrupted.id not in {backup.id for backup in catalogue.complete(backup_settings.backup_dir)}
    cli = subprocess.run([sys.executable, "-m", "devstack.cli", "--profile", "test", "backup", "list", "--json"],
                         env={**os.environ, **stack_env}, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True)
    assert {row["id"]: row["complete"] for row in json.loads(cli.stdout)}[interrupted.id] is False
    with pytest.raises(BackupError, match="interrupted"):
        restore.pick(backup_settings.backup_dir, interrupted.id, None)

    # The next complete backup's retention pass removes the interrupted one and keeps the complete.
    made = take.take(backup_settings, lambda _: None)
    pruned = retention.prune(backup_settings, datetime.now(UTC), lambda _: None)
    assert interrupted.id in pruned.interrupted
    assert made.id not in pruned.backups
    assert not interrupted.path.exists()


def test_restoring_over_what_exists_is_refused(profile: Profile, stack_env: dict[str, str], tenant: Tenant,
                                               backup_settings: BackupSettings) -> None:
    with pytest.raises(BackupError, match="--live"):
        restore.restore(backup_settings, profile, profile, progress=lambda _: None)
    _write_points(tenant, datetime.now(UTC) - timedelta(hours=1), 5)
    made = take.take(backup_settings, lambda _: None)
    assert made.manifest is not None
    from backups import influx
    from tenancy.influx import InfluxAdmin

    admin = InfluxAdmin(stack_env["HATS_INFLUX_URL"], stack_env["HATS_INFLUX_ADMIN_USERNAME"],
                        stack_env["HATS_INFLUX_ADMIN_PASSWORD"],
                        verify=client_context(stack_env["HATS_INFLUX_CA_FILE"]))
    try:
        policies = made.manifest["influxdb"]["databases"][tenant.database]
        with pytest.raises(BackupError, match=f"already has a database {tenant.database}.*--replace"):
            influx.restore(admin, backup_settings.influx_rpc_addr, made.path / "influxdb", tenant.database, policies)
        copy = f"hats_copy_{uuid.uuid4().hex[:8]}"
        try:
            assert influx.restore(admin, backup_settings.influx_rpc_addr, made.path / "influxdb", tenant.database,
                                  policies, new_name=copy, netns=backup_settings.influx_rpc_netns) == copy
            source = {key[1:]: value for key, value in _points(stack_env).items() if key[0] == tenant.database}
            restored = {key[1:]: value for key, value in _points(stack_env).items() if key[0] == copy}
            assert restored == source
        finally:
            admin.query(f'DROP DATABASE "{copy}"')
    finally:
        admin.close()
    assert postgres.running(profile)


@pytest.fixture
def second_stack(tmp_path: Path) -> Iterator[Profile]:
    """A whole stack to restore over, so that `--live` is exercised without touching the test stack."""
    ports = dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True))
    profile = Profile(name="test", state_dir=tmp_path / "live", ports=ports)
    yield profile
    restore.purge_scratch(profile)


def test_a_live_restore_stops_the_stack_keeps_its_old_cluster_and_starts_it(second_stack: Profile) -> None:
    from devstack import envfile, stack

    env = stack.up(second_stack)
    settings = load_settings(env)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    home = Tenant("home", "hats_home", "", env)
    _write_rows(env["HATS_PG_DSN"], "home", "before_backup", hour)
    _write_points(home, hour, 10)
    made = take.take(settings, lambda _: None)
    points_at_backup = _points(env)
    _write_rows(env["HATS_PG_DSN"], "home", "after_backup", hour + timedelta(hours=1))
    _write_points(home, hour + timedelta(minutes=20), 5)
    rows = _digests(env["HATS_PG_DSN"])
    assert _points(env) != points_at_backup

    done = restore.restore(settings, second_stack, second_stack, live=True, progress=lambda _: None)
    assert done.backup == made.id
    assert done.set_aside is not None
    assert (done.set_aside / "PG_VERSION").is_file()
    assert envfile.read(second_stack) == env  # the same stack, settings and secrets
    assert postgres.running(second_stack)
    assert _digests(env["HATS_PG_DSN"]) == rows
    assert _points(env) == points_at_backup  # replaced by the backup's (InfluxDB has no PITR)
    grants = _influx(env, f'SHOW GRANTS FOR "{stack_influx.WRITER_USER}"')
    assert ["hats_home", "WRITE"] in [row for one in grants for row in one["values"]]
