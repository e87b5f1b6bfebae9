"""`hats restore`: a backup brought back into a stack, PostgreSQL to the latest commit or to a point in time.

By default the target is a scratch stack (its own ports, state folder and cluster, `<profile>-restore`), so
a restore can be looked at and compared before anything live is touched; restoring over the live stack
takes `--live`, which stops the stack cleanly (its processes, then the services), keeps the old cluster
aside (`data.pre-restore-<id>`), restores, and starts the services again. A scratch stack gets the source
stack's secrets: the restored cluster's roles have the source's passwords.

PostgreSQL: the newest complete base backup that ends before the target time (or the newest one), laid down
with recovery.signal and restore_command reading the WAL archive; "latest" first asks the source to close
its WAL segment so that every commit so far is archived. InfluxDB has no point-in-time recovery: each
database comes back as it was at that backup.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from backups import catalogue, influx, postgres, wal
from backups.catalogue import Backup, BackupError
from backups.settings import BackupSettings
from devstack import certs, envfile, mosquitto, stack
from devstack import influxdb as stack_influx
from devstack import postgres as stack_postgres
from devstack.procs import StackError
from devstack.profile import STATE_ROOT, Profile
from ingest_worker.contract import database_for
from ingest_worker.tls import client_context
from tenancy.influx import InfluxAdmin, ident

Progress = Callable[[str], None]
SCRATCH_PORT_SHIFT = 50  # offsets move stacks by multiples of 100: +50 never meets another stack's port
RECOVERY_TIMEOUT_S = 600.0


@dataclass
class Restored:
    backup: str
    target: Profile
    target_time: datetime | None
    wal_until: str | None
    databases: list[str] = field(default_factory=list)
    set_aside: Path | None = None


def scratch_profile(source: Profile) -> Profile:
    """The scratch stack a restore of `source` goes to by default: beside it, never on its ports."""
    ports = {service: port + SCRATCH_PORT_SHIFT for service, port in source.ports.items()}
    return Profile(name=source.name, state_dir=STATE_ROOT / f"{source.name}-restore", ports=ports)


def pick(folder: Path, backup_id: str | None, target_time: datetime | None) -> Backup:
    """The backup to restore: the one named, else the newest complete one that ends before `target_time`."""
    complete = catalogue.complete(folder)
    if backup_id is not None:
        chosen = [backup for backup in catalogue.backups(folder) if backup.id == backup_id]
        if not chosen:
            raise BackupError(f"no backup {backup_id} in {folder}; `hats backup list` shows them")
        if not chosen[0].complete:
            raise BackupError(f"backup {backup_id} has no manifest: it was interrupted; pick a complete one")
        if target_time is not None and chosen[0].consistent_at > target_time:
            raise BackupError(f"backup {backup_id} ends at {chosen[0].consistent_at.isoformat()}, after --to; "
                              "pick an earlier backup or a later --to")
        return chosen[0]
    if not complete:
        raise BackupError(f"no complete backup in {folder} (HATS_BACKUP_DIR); take one with `hats backup`")
    if target_time is None:
        return complete[-1]
    before = [backup for backup in complete if backup.consistent_at <= target_time]
    if not before:
        raise BackupError(f"no complete backup ends before {target_time.isoformat()}: the oldest ends at "
                          f"{complete[0].consistent_at.isoformat()}; pick a later --to")
    return before[-1]


def restore(settings: BackupSettings, source: Profile, target: Profile, *, backup_id: str | None = None,
            target_time: datetime | None = None, live: bool = False, progress: Progress) -> Restored:
    if target_time is not None and target_time.tzinfo is None:
        raise BackupError("--to needs a time zone, e.g. 2026-12-01T17:30:00Z")
    if target_time is not None and target_time > datetime.now(UTC):
        raise BackupError(f"--to {target_time.isoformat()} is in the future; give a time that has passed")
    same = target.pg_data_dir == source.pg_data_dir
    if same and not live:
        raise BackupError("that is the live stack: restoring over it needs --live (it stops the stack, keeps its "
                          "old cluster aside and starts the restored one)")
    if live and not same:
        raise BackupError("--live restores over the stack the backups come from; leave it out for a scratch stack")
    backup = pick(settings.backup_dir, backup_id, target_time)
    assert backup.manifest is not None
    progress(f"backup {backup.id}: checking its {len(backup.manifest['files'])} files against the manifest")
    catalogue.verify(backup)
    pg = backup.manifest["postgresql"]
    archive = wal.archive_dir(settings.backup_dir, pg["system_identifier"])
    wal_until = _close_source_wal(settings, progress)
    restored = Restored(backup.id, target, target_time, wal_until)

    secrets = stack.secrets_for(source)
    if live:
        progress("stopping the live stack")
        stack.down(target)
        data = target.pg_data_dir / "data"
        restored.set_aside = data.with_name(f"data.pre-restore-{catalogue.new_id(datetime.now(UTC))}")
        data.rename(restored.set_aside)
        progress(f"the old cluster is kept in {restored.set_aside} (delete it once the restore is checked)")
    else:
        progress(f"scratch stack in {target.state_dir} (PostgreSQL on 127.0.0.1:{target.ports['pg']})")
        purge_scratch(target)
        _copy_secrets(source, target)

    clock = time.monotonic()
    stack_postgres.prepare_dirs(target)
    progress("laying down the base backup" + (f", recovery to {target_time.isoformat()}" if target_time else ""))
    postgres.lay_down(backup.path / "postgresql", target.pg_data_dir / "data", archive, target_time)
    try:
        stack_postgres.start(target, secrets)
    except StackError as exc:
        hint = (" --to is later than the last commit in the archive: leave --to out for the latest, or give an "
                "earlier time" if "before configured recovery target was reached" in str(exc) else "")
        raise BackupError(f"the restored PostgreSQL did not start: {exc}{hint}") from exc
    postgres.wait_promoted(stack_postgres.superuser_dsn(target, secrets), RECOVERY_TIMEOUT_S, progress)
    progress(f"PostgreSQL restored ({time.monotonic() - clock:.1f} s)")

    clock = time.monotonic()
    stack_influx.start(target, secrets)
    admin = InfluxAdmin(stack_influx.url(target), stack_influx.ADMIN_USER, secrets["influx_admin"],
                        verify=client_context(certs.ca_file(target)))
    try:
        rpc = f"127.0.0.1:{target.ports['influx_rpc']}"
        for database, policies in backup.manifest["influxdb"]["databases"].items():
            progress(f"InfluxDB {database} ({', '.join(policies)}) as at {backup.id}")
            restored.databases.append(influx.restore(admin, rpc, backup.path / "influxdb", database, policies,
                                                     replace=live, netns=stack_influx.netns_path(target)))
        progress(f"InfluxDB restored ({time.monotonic() - clock:.1f} s)")
        _grant_again(admin, target, secrets)
    finally:
        admin.close()
    # Not `hats up`: its migrations and default-tenant upkeep would write to the restored data, which must be
    # what the backup held; the operator runs `hats up` afterwards to bring an older backup to this code's head.
    progress("starting Mosquitto and writing the env file")
    mosquitto.start(target, secrets)
    envfile.write(target, envfile.settings(target, secrets))
    return restored


def _close_source_wal(settings: BackupSettings, progress: Progress) -> str | None:
    try:
        return postgres.switch_wal(settings, progress)
    except psycopg.OperationalError:
        progress("the source PostgreSQL is not reachable: restoring up to the last segment already archived")
        return None


def _copy_secrets(source: Profile, target: Profile) -> None:
    target.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.path("secrets.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(source.path("secrets.json").read_text())


def _grant_again(admin: InfluxAdmin, target: Profile, secrets: dict[str, str]) -> None:
    """A restored (or replaced) database has no grants: give each home's database its accounts' again."""
    with psycopg.connect(stack_postgres.superuser_dsn(target, secrets), connect_timeout=10) as conn:
        tenants = [str(row[0]) for row in conn.execute("SELECT tenant_id FROM core.tenants")]
    existing = set(admin.databases())
    for tenant in tenants:
        database = database_for(tenant)
        if database in existing:
            admin.query(f"GRANT WRITE ON {ident(database)} TO {ident(stack_influx.WRITER_USER)}")
            admin.query(f"GRANT ALL ON {ident(database)} TO {ident(stack_influx.DAGSTER_USER)}")


def purge_scratch(target: Profile) -> None:
    """Remove a scratch stack: its processes, cluster, state and the WAL it archived."""
    stack.purge(target)
