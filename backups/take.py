"""`hats backup`: one complete backup, or none.

The folder is made first, the manifest last: if anything fails (or the process is killed) the folder has no
manifest and is never taken for a backup; a failure here also removes what it wrote.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime

from backups import catalogue, influx, postgres
from backups.catalogue import Backup, BackupError
from backups.settings import BackupSettings

Progress = Callable[[str], None]


def take(settings: BackupSettings, progress: Progress, now: datetime | None = None) -> Backup:
    started = now or datetime.now(UTC)
    with catalogue.locked(settings.backup_dir):
        backup_id = catalogue.new_id(started)
        folder = settings.backup_dir / backup_id
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            raise BackupError(f"a backup {backup_id} exists already; wait a second and run it again") from None
        try:
            clock = time.monotonic()
            progress(f"PostgreSQL base backup into {folder / 'postgresql'}")
            pg = postgres.base_backup(settings, folder / "postgresql", progress)
            progress(f"PostgreSQL done ({time.monotonic() - clock:.1f} s)")
            clock = time.monotonic()
            progress(f"InfluxDB portable backup from {settings.influx_rpc_addr}")
            influxdb = influx.backup(settings.influx_rpc_addr, folder / "influxdb", settings.influx_rpc_netns)
            progress(f"InfluxDB done: {len(influxdb['databases'])} databases with data "
                     f"({time.monotonic() - clock:.1f} s)")
            progress("checksums")
            files = catalogue.file_table(folder)
            catalogue.write_manifest(folder, {
                "id": backup_id,
                "started_at": started.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "postgresql": pg,
                "influxdb": influxdb,
                "files": files,
                "total_bytes": sum(entry["size"] for entry in files.values()),
            })
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    backup = next(found for found in catalogue.backups(settings.backup_dir) if found.id == backup_id)
    if not pg["wal_archiving"]:
        progress("warning: PostgreSQL's archive_mode is off: this backup restores to its own end only (no --to "
                 "later than it); restart the stack with `hats up` after `hats down` to archive WAL")
    return backup
