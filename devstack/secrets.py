"""Per-stack secrets: generated once on first start, kept in the git-ignored state folder (mode 0600).

Every service runs with authentication, so every account gets a random password; nothing secret is
committed, and a developer can rotate everything by deleting the stack's state folder.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

ACCOUNTS = (
    "mqtt_broker_admin",
    "mqtt_worker",
    "mqtt_publisher",
    "mqtt_homeassistant",
    "mqtt_bench",
    "influx_admin",
    "influx_writer",
    "influx_dagster",
    "influx_gate_worker",
    "influx_gate_retention",
    "pg_superuser",
    "pg_ingest",
    "pg_dagster",
    "pg_analyst",
    "pg_exporter",
    "pg_backup",
)


def load_or_create(path: Path) -> dict[str, str]:
    existing: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [account for account in ACCOUNTS if account not in existing]
    if missing:
        existing.update({account: secrets.token_urlsafe(24) for account in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(existing, handle, indent=2)
        tmp.replace(path)
    return existing
