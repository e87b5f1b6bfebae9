"""The tenant secrets directory: `<dir>/<tenant>/<name>`, one file per secret, 0600 in folders of 0700.

In a cluster the directory is a Kubernetes Secret volume; locally it is `.hats/<profile>/tenants`. Secrets
never travel in argv, logs or audit rows: the operator hands over a token through an environment variable
named on the command line, and the platform's own passwords are generated here.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ingest_worker.contract import TENANT_PATTERN
from tenancy.spec import TenantError

# Which secrets a home may have (common.md): the HA token and the worker's password on the home's own broker
# come from the operator; the others are the passwords of the accounts the platform made for the home.
HA_TOKEN = "ha_token"  # noqa: S105 (file names, not secrets)
BROKER_PASSWORD = "broker_password"  # noqa: S105
MQTT_HOMEASSISTANT = "mqtt_homeassistant"
MQTT_DEVICE = "mqtt_device"
PG_ANALYST = "pg_analyst"
NAMES = (HA_TOKEN, BROKER_PASSWORD, MQTT_HOMEASSISTANT, MQTT_DEVICE, PG_ANALYST)
PASSWORD_BYTES = 24  # 192 bits, 32 URL-safe characters


def generate_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


class TenantSecrets:
    """Read and write one tenant's secret files atomically (a reader never sees half a password)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, tenant_id: str) -> Path:
        if not TENANT_PATTERN.match(tenant_id):
            raise ValueError(f"tenant {tenant_id!r} must match {TENANT_PATTERN.pattern}")
        return self.root / tenant_id

    def path(self, tenant_id: str, name: str) -> Path:
        if name not in NAMES:
            raise ValueError(f"unknown tenant secret {name!r}; one of {', '.join(NAMES)}")
        return self.folder(tenant_id) / name

    def read(self, tenant_id: str, name: str) -> str | None:
        path = self.path(tenant_id, name)
        return path.read_text().strip() if path.exists() else None

    def write(self, tenant_id: str, name: str, value: str) -> Path:
        """Write through a temporary file in the same folder, fsync, rename: atomic on POSIX."""
        path = self.path(tenant_id, name)
        for folder in (self.root, path.parent):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
        tmp = path.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def present(self, tenant_id: str) -> list[str]:
        """Names of the secrets the tenant has (never their values)."""
        return [name for name in NAMES if self.path(tenant_id, name).exists()]

    def remove(self, tenant_id: str, name: str) -> None:
        self.path(tenant_id, name).unlink(missing_ok=True)

    def remove_all(self, tenant_id: str) -> list[str]:
        """Delete the tenant's secrets and its folder; returns the names removed."""
        removed = self.present(tenant_id)
        for name in removed:
            self.remove(tenant_id, name)
        folder = self.folder(tenant_id)
        if folder.exists():
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink()
            folder.rmdir()
        return removed


def from_environment(variable: str, field: str) -> str:
    """A secret the operator hands over in the environment variable named on the command line."""
    value = os.environ.get(variable, "")
    if not value:
        raise TenantError(field, f"the environment variable {variable} is not set or empty; export it "
                                 "(e.g. `read -rs VAR; export VAR`) and name it again")
    return value
