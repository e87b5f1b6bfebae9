"""The WAL archive: where PostgreSQL puts each finished WAL segment, and how recovery reads it back.

Segments are gzipped (a segment closed by a timeout is mostly zeros: 16 MiB becomes a few KiB) into
`<HATS_BACKUP_DIR>/wal/<system identifier>/`: one folder per cluster, because a cluster made again (a
purged stack, say) restarts its segment names at 1 and must never collide with the old one's. A segment is
written to `.part` and renamed, so the archive never holds half a file; an existing segment is accepted only
if it is the same (PostgreSQL may re-send a segment whose success it did not record) and refused otherwise.

Only what a backup needs is archived: the archive command copies a segment only while the cluster's folder
holds `ARCHIVING`, a marker `hats backup` writes before its first base backup (pg_basebackup streams the WAL
the backup itself needs, so the archive is for replaying past its end). Before that the command succeeds
without copying and PostgreSQL recycles the segment: a stack never backed up (every test stack, a scratch
restore) keeps no WAL. From then on every segment is archived until retention removes what no kept backup
needs (`retention.py`) or `hats purge` removes the folder with the marker.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

WAL_FOLDER = "wal"
SUFFIX = ".gz"
MARKER = "ARCHIVING"  # in a cluster's archive folder: a base backup needs its WAL from now on
SEGMENT_BYTES = 16 * 1024 * 1024
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def archive_dir(backup_dir: Path, system_identifier: str) -> Path:
    return backup_dir / WAL_FOLDER / system_identifier


def archive_command(folder: Path) -> str:
    """PostgreSQL's archive_command (run by sh in the data directory; %p the segment, %f its name): a no-op
    that succeeds until the folder holds the `MARKER`."""
    quoted = shlex.quote(str(folder))
    target = quoted + "/%f" + SUFFIX
    return (f'if test -f {quoted}/{MARKER}; then f={target}; if test -f "$f"; then gunzip -c "$f" | cmp -s - %p; '
            f'else gzip -1 -c %p > "$f.part" && sync "$f.part" && mv "$f.part" "$f"; fi; fi')


def start_archiving(folder: Path) -> bool:
    """Write the marker (before a base backup: every segment finished after it is archived); False when the
    folder does not exist, i.e. this server does not archive here (a managed PostgreSQL's own PITR)."""
    if not folder.is_dir():
        return False
    marker = folder / MARKER
    if not marker.exists():
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    return True


def restore_command(folder: Path) -> str:
    """recovery's restore_command: a segment not in the archive is a non-zero exit (the end of the WAL)."""
    source = shlex.quote(str(folder)) + "/%f" + SUFFIX
    return f"test -f {source} && gunzip -c {source} > %p"


def parse_lsn(text: str) -> int:
    match = _LSN.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a WAL location like 0/2000028")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def segment_name(timeline: int, lsn: int) -> str:
    """The WAL file holding `lsn` on `timeline` (PostgreSQL's XLogFileName for 16 MiB segments)."""
    segment = lsn // SEGMENT_BYTES
    per_id = 0x1_0000_0000 // SEGMENT_BYTES
    return f"{timeline:08X}{segment // per_id:08X}{segment % per_id:08X}"


def segments(folder: Path) -> list[str]:
    """The archived segments' names (no history or backup-label files), oldest first."""
    if not folder.is_dir():
        return []
    return sorted(path.name.removesuffix(SUFFIX) for path in folder.glob(f"*{SUFFIX}")
                  if len(path.name.removesuffix(SUFFIX)) == 24)
