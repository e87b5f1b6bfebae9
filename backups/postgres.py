"""PostgreSQL's half: a base backup over the replication protocol, the WAL switch, and laying a backup
down as a cluster that recovers from the WAL archive (to the latest commit or to a point in time).

pg_basebackup is the stack's own PostgreSQL 17 (devstack.profile.pg_bin_dir, a client as new as the
server, as it must be); it logs in as hats_backup with its password in a 0600 passfile named by
PGPASSFILE, so the password is on no command line. The base backup is plain (a data directory) with its
WAL streamed into it, so it is consistent on its own, and pg_verifybackup checks it before the manifest
is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from backups import wal
from backups.catalogue import BackupError
from backups.settings import BackupSettings
from devstack.profile import pg_bin_dir

Progress = Callable[[str], None]
ARCHIVE_WAIT_S = 120.0
RECOVERY_SETTINGS = ("restore_command", "recovery_target_time", "recovery_target_action",
                     "recovery_target_timeline")
POSTGRES_USER = "postgres"


@contextlib.contextmanager
def passfile(settings: BackupSettings) -> Iterator[dict[str, str]]:
    """libpq's environment for hats_backup: host, port, user, database and a 0600 passfile (deleted after)."""
    parts = settings.pg()
    host, port, user = parts["host"], parts.get("port", "5432"), parts["user"]
    with tempfile.TemporaryDirectory(prefix="hats-backup-") as tmp:
        path = Path(tmp) / "pgpass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        escaped = [value.replace("\\", "\\\\").replace(":", "\\:")
                   for value in (host, port, "*", user, parts.get("password", ""))]
        with os.fdopen(fd, "w") as handle:
            handle.write(":".join(escaped) + "\n")
        yield {"PGHOST": host, "PGPORT": port, "PGUSER": user, "PGDATABASE": parts.get("dbname", "hats"),
               "PGPASSFILE": str(path), "PGCONNECT_TIMEOUT": "10"}


def _connect(settings: BackupSettings) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(settings.backup_dsn.get_secret_value(), autocommit=True, connect_timeout=10)


def tool_version(name: str) -> str:
    result = subprocess.run([str(pg_bin_dir() / name), "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def base_backup(settings: BackupSettings, dest: Path, progress: Progress) -> dict[str, Any]:
    """Take a base backup into `dest` (must not exist), verify it, and describe it for the manifest."""
    with _connect(settings) as conn:
        server_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        archiving = str(conn.execute("SHOW archive_mode").fetchone()[0]) != "off"  # type: ignore[index]
        identifier = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])  # type: ignore[index]
    if archiving:
        wal.start_archiving(wal.archive_dir(settings.backup_dir, identifier))  # before: the WAL after it is kept
    argv = [str(pg_bin_dir() / "pg_basebackup"), "--pgdata", str(dest), "--format=plain", "--wal-method=stream",
            "--checkpoint=fast", "--no-password", "--label", f"hats {dest.parent.name}",
            "--manifest-checksums=CRC32C"]
    interactive = sys.stderr.isatty()
    if interactive:
        argv.append("--progress")
    with passfile(settings) as env:
        result = subprocess.run(argv, env={**os.environ, **env}, text=True, check=False,
                                stdout=subprocess.DEVNULL, stderr=None if interactive else subprocess.PIPE)
    if result.returncode != 0:
        raise BackupError(f"pg_basebackup failed ({(result.stderr or '').strip()}); check HATS_BACKUP_DSN and that "
                          "PostgreSQL allows replication connections for hats_backup (pg_hba.conf)")
    consistent_at = datetime.now(UTC)
    progress("verifying the base backup (pg_verifybackup)")
    check = subprocess.run([str(pg_bin_dir() / "pg_verifybackup"), "--quiet", str(dest)],
                           capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise BackupError(f"pg_verifybackup refused the base backup: {check.stderr.strip()}; take another")
    manifest = json.loads((dest / "backup_manifest").read_text())
    ranges = manifest["WAL-Ranges"]
    timeline = int(ranges[-1]["Timeline"])
    start, end = wal.parse_lsn(ranges[0]["Start-LSN"]), wal.parse_lsn(ranges[-1]["End-LSN"])
    system_identifier = str(manifest.get("System-Identifier") or _control_identifier(dest))
    return {
        "server_version": server_version,
        "pg_basebackup": tool_version("pg_basebackup"),
        "system_identifier": system_identifier,
        "timeline": timeline,
        "start_lsn": ranges[0]["Start-LSN"],
        "end_lsn": ranges[-1]["End-LSN"],
        "wal_start": wal.segment_name(int(ranges[0]["Timeline"]), start),
        "wal_end": wal.segment_name(timeline, end),
        "wal_archiving": archiving,
        "consistent_at": consistent_at.isoformat(),
    }


def _control_identifier(data: Path) -> str:
    result = subprocess.run([str(pg_bin_dir() / "pg_controldata"), "-D", str(data)],
                            capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("Database system identifier:"):
            return line.split(":", 1)[1].strip()
    raise BackupError(f"no system identifier in the base backup {data}: {result.stderr.strip()}")


def switch_wal(settings: BackupSettings, progress: Progress, timeout: float = ARCHIVE_WAIT_S) -> str:
    """Close the source's current WAL segment and wait until the archive has it, so that a restore sees every
    commit made so far; returns the segment's name. A transaction that takes an xid commits first: recovery to a
    time stops at the first commit after it, and a quiet cluster may have none after the --to asked for (PostgreSQL
    then refuses to end recovery short of its target)."""
    with _connect(settings) as conn:
        conn.execute("SELECT pg_current_xact_id()")
        # The switch returns the end of the segment it closed + 1, or, with nothing written since the last
        # switch, the start of the current one: either way the byte before is in the segment to wait for.
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal() - 1)").fetchone()
        assert row is not None
        segment = str(row[0])
        progress(f"waiting for WAL segment {segment} to reach the archive")
        deadline = datetime.now(UTC).timestamp() + timeout
        while True:
            done = conn.execute("SELECT last_archived_wal >= %s AND last_archived_wal ~ '^[0-9A-F]{24}$', "
                                "last_failed_wal FROM pg_stat_archiver", (segment,)).fetchone()
            assert done is not None
            if done[0]:
                return segment
            if datetime.now(UTC).timestamp() > deadline:
                raise BackupError(f"WAL segment {segment} was not archived within {timeout:.0f} s (last failed: "
                                  f"{done[1]}); see PostgreSQL's log for the archive_command's error")
            conn.execute("SELECT pg_sleep(0.2)")


def lay_down(base: Path, data: Path, archive: Path, target_time: datetime | None) -> None:
    """Make `data` the backup's cluster, set to recover from `archive` (to `target_time`, or to its end) and
    then promote; owned by postgres as initdb would make it."""
    if data.exists():
        raise BackupError(f"{data} exists; the restore moves or removes it first")
    shutil.copytree(base, data, symlinks=True)
    (data / "backup_manifest").unlink(missing_ok=True)
    settings = {"restore_command": wal.restore_command(archive), "recovery_target_action": "promote",
                "recovery_target_timeline": "latest"}
    if target_time is not None:
        settings["recovery_target_time"] = target_time.astimezone(UTC).isoformat()
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write("# hats restore: recovery settings, reset once the cluster is promoted\n")
        conf.writelines(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in settings.items())
    (data / "recovery.signal").touch()
    owner = pwd.getpwnam(POSTGRES_USER)
    for path in [data, *data.rglob("*")]:
        os.lchown(path, owner.pw_uid, owner.pw_gid)
    data.chmod(0o700)


def wait_promoted(superuser_dsn: str, timeout: float, progress: Progress) -> None:
    """Wait until recovery has ended and the cluster is promoted, then reset the recovery settings."""
    progress("replaying the archived WAL")
    deadline = datetime.now(UTC).timestamp() + timeout
    with psycopg.connect(superuser_dsn, autocommit=True, connect_timeout=10) as conn:
        while conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
            if datetime.now(UTC).timestamp() > deadline:
                raise BackupError(f"PostgreSQL was still recovering after {timeout:.0f} s; see its log")
            conn.execute("SELECT pg_sleep(0.2)")
        for name in RECOVERY_SETTINGS:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        conn.execute("SELECT pg_reload_conf()")
