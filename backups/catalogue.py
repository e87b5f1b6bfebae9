"""The backups in a folder and their manifests.

A backup is `<HATS_BACKUP_DIR>/<UTC timestamp>/` holding `postgresql/` (a plain base backup) and `influxdb/`
(a portable backup); its `manifest.json` (what, when, sizes, sha256 of every file, versions, WAL range) is
written last, to a temporary name renamed into place, so a folder without one is an interrupted backup:
listed as incomplete, never restored, removed by retention once a later backup is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1
ID_FORMAT = "%Y%m%dT%H%M%SZ"
LOCK = ".lock"
CHUNK = 1024 * 1024


class BackupError(RuntimeError):
    """A backup or restore could not go on; the message says what to do next."""


def new_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime(ID_FORMAT)


def parse_id(name: str) -> datetime | None:
    try:
        return datetime.strptime(name, ID_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class Backup:
    id: str
    path: Path
    manifest: dict[str, Any] | None

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def started_at(self) -> datetime:
        started = parse_id(self.id)
        assert started is not None
        return started

    @property
    def consistent_at(self) -> datetime:
        """The earliest time PostgreSQL can be recovered to from this backup (its end)."""
        assert self.manifest is not None
        return datetime.fromisoformat(self.manifest["postgresql"]["consistent_at"])

    @property
    def size(self) -> int:
        return int(self.manifest["total_bytes"]) if self.manifest else 0


def backups(folder: Path) -> list[Backup]:
    """Every backup folder, oldest first; a manifest that cannot be read counts as none."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or parse_id(path.name) is None:
            continue
        manifest: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads((path / MANIFEST).read_text())
            manifest = loaded if isinstance(loaded, dict) and loaded.get("format") == FORMAT else None
        found.append(Backup(path.name, path, manifest))
    return found


def complete(folder: Path) -> list[Backup]:
    return [backup for backup in backups(folder) if backup.complete]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """Every file under `root`: its size and sha256, by relative path."""
    return {str(path.relative_to(root)): {"size": path.stat().st_size, "sha256": sha256(path)}
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != MANIFEST}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Written last, atomically: a temporary file, fsynced, renamed over the final name, the folder fsynced."""
    tmp = path / (MANIFEST + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"format": FORMAT, **manifest}, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path / MANIFEST)
    folder = os.open(path, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def verify(backup: Backup) -> None:
    """Every file the manifest names is there with its size and checksum; raises naming the first that is not."""
    if backup.manifest is None:
        raise BackupError(f"backup {backup.id} has no manifest: it was interrupted; pick a complete one "
                          "(`hats backup list`)")
    for name, expected in backup.manifest["files"].items():
        path = backup.path / name
        if not path.is_file() or path.stat().st_size != expected["size"] or sha256(path) != expected["sha256"]:
            raise BackupError(f"backup {backup.id} is damaged: {name} differs from its manifest; restore another "
                              "backup (`hats backup list`)")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One backup or retention pass at a time per folder (a scheduled one and an operator's)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup or retention pass holds {folder / LOCK}; wait for it to end") from None
        yield
    finally:
        os.close(fd)
