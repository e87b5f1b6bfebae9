"""`hats backup [list|prune]` and `hats restore`: the operator's shell over backups/.

Settings come from the environment (`. .hats/env` locally: HATS_BACKUP_DIR, HATS_BACKUP_DSN,
HATS_INFLUX_RPC_ADDR, …). Exit codes: 0 done, 1 refused (the message says why and what to do), 2 settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from backups import catalogue, restore, retention, take
from backups.catalogue import BackupError
from backups.settings import BackupSettingsError, load_settings
from devstack.procs import StackError
from devstack.profile import StackConfigError, load_profile
from tenancy.influx import InfluxAdminError

EXIT_OK, EXIT_REFUSED, EXIT_SETTINGS = 0, 1, 2


def progress(message: str) -> None:
    print(f"  - {message}", file=sys.stderr, flush=True)


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="backup_command")
    sub.add_parser("run", help="take a backup now (the default): PostgreSQL base backup and InfluxDB portable "
                               "backup, then retention")
    listing = sub.add_parser("list", help="every backup, complete or interrupted, and the WAL archive")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    sub.add_parser("prune", help="apply retention (HATS_BACKUP_KEEP, HATS_BACKUP_KEEP_DAYS) without a new backup")


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup", nargs="?", help="the backup's id (default: the newest complete one, or the newest "
                                                  "that ends before --to)")
    parser.add_argument("--to", metavar="TIMESTAMP",
                        help="point-in-time recovery of PostgreSQL to this ISO 8601 time with a zone, e.g. "
                             "2026-12-01T17:30:00Z (default: the latest commit archived)")
    parser.add_argument("--live", action="store_true",
                        help="restore over the running stack (stops it, keeps its old cluster aside, starts it)")
    parser.add_argument("--purge-scratch", action="store_true", help="only remove the scratch stack a restore made")


def _parse_time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BackupError(f"--to {text!r} is not an ISO 8601 time; write e.g. 2026-12-01T17:30:00Z") from None
    if parsed.tzinfo is None:
        raise BackupError(f"--to {text!r} has no time zone; add Z (UTC) or an offset such as +01:00")
    return parsed


def main_backup(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        command = args.backup_command or "run"
        if command == "list":
            return _list(settings.backup_dir, args.json)
        if command == "prune":
            retention.prune(settings, datetime.now(UTC), progress)
            return EXIT_OK
        print(f"hats backup: into {settings.backup_dir}", file=sys.stderr)
        made = take.take(settings, progress)
        retention.prune(settings, datetime.now(UTC), progress)
        print(f"hats backup: {made.id} complete ({made.size / 1e6:.1f} MB)", file=sys.stderr)
        print(made.id)
    except BackupSettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_SETTINGS
    except BackupError as exc:
        print(f"hats backup: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def _list(folder: Path, as_json: bool) -> int:
    rows = []
    for backup in catalogue.backups(folder):
        manifest = backup.manifest or {}
        pg = manifest.get("postgresql", {})
        rows.append({"id": backup.id, "complete": backup.complete, "bytes": backup.size,
                     "finished_at": manifest.get("finished_at"), "wal_start": pg.get("wal_start"),
                     "wal_end": pg.get("wal_end"), "influxdb_databases": sorted(manifest.get("influxdb", {})
                                                                                .get("databases", {}))})
    if as_json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'id':17} {'state':11} {'MB':>8}  {'WAL from':24}  databases")
    for row in rows:
        state = "complete" if row["complete"] else "interrupted"
        print(f"{row['id']:17} {state:11} {int(row['bytes']) / 1e6:8.1f}  {row['wal_start'] or '-':24}  "
              f"{len(row['influxdb_databases'])}")
    return EXIT_OK


def main_restore(args: argparse.Namespace) -> int:
    try:
        source = load_profile(args.profile)
        target = source if args.live else restore.scratch_profile(source)
        if args.purge_scratch:
            restore.purge_scratch(restore.scratch_profile(source))
            print(f"hats restore: the scratch stack of {source.name} is gone", file=sys.stderr)
            return EXIT_OK
        settings = load_settings()
        target_time = _parse_time(args.to) if args.to else None
        print(f"hats restore: into {'the live' if args.live else 'a scratch'} stack ({target.state_dir})",
              file=sys.stderr)
        done = restore.restore(settings, source, target, backup_id=args.backup, target_time=target_time,
                               live=args.live, progress=progress)
    except BackupSettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_SETTINGS
    except (BackupError, StackError, StackConfigError, InfluxAdminError) as exc:
        print(f"hats restore: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    until = done.target_time.isoformat() if done.target_time else f"the latest archived commit ({done.wal_until})"
    print(f"hats restore: backup {done.backup} restored, PostgreSQL to {until}, InfluxDB as at the backup "
          f"({len(done.databases)} databases).\n  Settings: . {done.target.env_file}", file=sys.stderr)
    if not args.live:
        print(f"  Remove the scratch stack: hats --profile {source.name} restore --purge-scratch", file=sys.stderr)
    else:
        print("  The services are up; start the worker and Dagster again with `hats run`", file=sys.stderr)
    return EXIT_OK
