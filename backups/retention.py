"""Which backups to keep, and the WAL they need.

A complete backup is kept when it is one of the newest HATS_BACKUP_KEEP or younger than
HATS_BACKUP_KEEP_DAYS; the newest complete backup is always kept whatever the settings, so a pass can never
leave none. Interrupted backups (no manifest) older than the newest complete one are removed. Archived WAL
older than the oldest kept base backup's first segment is removed with pg_archivecleanup; WAL of a cluster
no kept backup comes from (an older, purged stack) goes whole.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from backups import catalogue, wal
from backups.catalogue import Backup, BackupError
from backups.settings import BackupSettings
from devstack.profile import pg_bin_dir

Progress = Callable[[str], None]


@dataclass
class Pruned:
    backups: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    wal_clusters: list[str] = field(default_factory=list)
    wal_before: dict[str, str] = field(default_factory=dict)


def kept(complete: list[Backup], keep: int, keep_days: int, now: datetime) -> list[Backup]:
    """The complete backups a pass keeps (pure: tested without a stack)."""
    if not complete:
        return []
    newest = sorted(complete, key=lambda backup: backup.id)
    chosen = {backup.id for backup in newest[-keep:]}
    if keep_days:
        cutoff = now - timedelta(days=keep_days)
        chosen |= {backup.id for backup in newest if backup.started_at >= cutoff}
    chosen.add(newest[-1].id)
    return [backup for backup in newest if backup.id in chosen]


def prune(settings: BackupSettings, now: datetime, progress: Progress) -> Pruned:
    pruned = Pruned()
    with catalogue.locked(settings.backup_dir):
        every = catalogue.backups(settings.backup_dir)
        complete = [backup for backup in every if backup.complete]
        keep = kept(complete, settings.backup_keep, settings.backup_keep_days, now)
        keep_ids = {backup.id for backup in keep}
        for backup in complete:
            if backup.id not in keep_ids:
                shutil.rmtree(backup.path)
                pruned.backups.append(backup.id)
                progress(f"removed backup {backup.id}")
        if complete:
            newest = complete[-1].id
            for backup in every:
                if not backup.complete and backup.id < newest:
                    shutil.rmtree(backup.path)
                    pruned.interrupted.append(backup.id)
                    progress(f"removed interrupted backup {backup.id}")
        _prune_wal(settings.backup_dir, keep, pruned, progress)
    return pruned


def _prune_wal(backup_dir: Path, keep: list[Backup], pruned: Pruned, progress: Progress) -> None:
    if not keep:
        return  # nothing restorable yet: keep every segment
    oldest: dict[str, str] = {}
    for backup in keep:
        assert backup.manifest is not None
        pg = backup.manifest["postgresql"]
        oldest[pg["system_identifier"]] = min(oldest.get(pg["system_identifier"], pg["wal_start"]), pg["wal_start"])
    root = backup_dir / wal.WAL_FOLDER
    if not root.is_dir():
        return
    for cluster in sorted(root.iterdir()):
        if cluster.name not in oldest:
            shutil.rmtree(cluster)
            pruned.wal_clusters.append(cluster.name)
            progress(f"removed the WAL of cluster {cluster.name} (no kept backup is from it)")
            continue
        first = oldest[cluster.name]
        result = subprocess.run([str(pg_bin_dir() / "pg_archivecleanup"), "-x", wal.SUFFIX, str(cluster), first],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BackupError(f"pg_archivecleanup failed in {cluster}: {result.stderr.strip()}")
        pruned.wal_before[cluster.name] = first
