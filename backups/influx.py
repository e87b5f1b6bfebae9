"""InfluxDB's half: `influxd backup -portable` of every database and the meta store, and `influxd restore
-portable` of one database to a name.

InfluxDB 1.x has no point-in-time recovery: a restore brings a database back as it was at the backup. The
backup RPC address is a parameter (HATS_INFLUX_RPC_ADDR), never assumed. A database that already exists is
refused unless the restore is asked to replace it; the database's grants go with a DROP, so the caller
grants them again (restore.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from backups.catalogue import BackupError
from tenancy.influx import InfluxAdmin, InfluxAdminError, ident

READY_TIMEOUT_S = 60.0
POLL_S = 0.2


def version() -> str:
    result = subprocess.run(["influxd", "version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def influxd(argv: list[str], netns: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`influxd backup|restore …`: the one place the tool runs. `netns`: a network namespace to run it in
    (`nsenter --net=`), for an InfluxDB whose RPC port answers only there (the local stack's,
    HATS_INFLUX_RPC_NETNS); None: this host's network."""
    command = ["influxd", *argv] if netns is None else ["nsenter", f"--net={netns}", "--", "influxd", *argv]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def backup(rpc_addr: str, dest: Path, netns: Path | None = None) -> dict[str, Any]:
    """Every database and the meta store into `dest`; what it holds (databases → policies) for the manifest."""
    result = influxd(["backup", "-portable", "-host", rpc_addr, str(dest)], netns)
    if result.returncode != 0:
        raise BackupError(f"influxd backup failed: {result.stderr.strip()[-500:]}; is InfluxDB's backup RPC "
                          f"listening on {rpc_addr} (HATS_INFLUX_RPC_ADDR)?")
    return {"influxd": version(), "databases": contents(dest)}


def _manifest(folder: Path) -> dict[str, Any]:
    found = sorted(folder.glob("*.manifest"))
    if len(found) != 1:
        raise BackupError(f"{folder} holds {len(found)} InfluxDB manifests, not one; the backup is damaged")
    loaded: dict[str, Any] = json.loads(found[0].read_text())
    return loaded


def contents(folder: Path) -> dict[str, list[str]]:
    """Database → its retention policies with shards in the backup."""
    found: dict[str, set[str]] = {}
    for entry in _manifest(folder).get("files") or []:
        found.setdefault(str(entry["database"]), set()).add(str(entry["policy"]))
    return {database: sorted(policies) for database, policies in sorted(found.items())}


def restore(admin: InfluxAdmin, rpc_addr: str, folder: Path, database: str, policies: list[str],
            new_name: str | None = None, replace: bool = False, netns: Path | None = None) -> str:
    """Restore `database` from the portable backup in `folder` as `new_name` (default: its own name)."""
    target = new_name or database
    if target in admin.databases():
        if not replace:
            raise BackupError(f"InfluxDB already has a database {target}: restoring over it would mix two "
                              "histories. Restore it under another name (--as), or replace it (--replace) to drop "
                              "it first")
        admin.query(f"DROP DATABASE {ident(target)}")
    argv = ["restore", "-portable", "-host", rpc_addr, "-db", database]
    if target != database:
        argv += ["-newdb", target]
    result = influxd([*argv, str(folder)], netns)
    if result.returncode != 0:
        raise BackupError(f"influxd restore of {database} failed: {result.stderr.strip()[-500:]}; is InfluxDB's "
                          f"backup RPC listening on {rpc_addr}?")
    _wait_readable(admin, target, policies)
    return target


def _wait_readable(admin: InfluxAdmin, database: str, policies: list[str]) -> None:
    """A restored shard is briefly "disabled" while InfluxDB opens it: wait until each policy answers."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for policy in policies:
        while True:
            try:
                admin.query(f"SELECT count(*) FROM {ident(database)}.{ident(policy)}./.*/ LIMIT 1", database)
                break
            except InfluxAdminError as exc:
                if time.monotonic() > deadline:
                    raise BackupError(f"restored {database}.{policy} did not open within {READY_TIMEOUT_S:.0f} s: "
                                      f"{exc}") from exc
                time.sleep(POLL_S)
