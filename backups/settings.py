"""What `hats backup` and `hats restore` connect to and keep, validated before anything is touched.

The backup logs in to PostgreSQL as `hats_backup` (REPLICATION only, migration 0015) and reaches InfluxDB's
backup RPC address; it never needs the superuser or InfluxDB admin. Its password comes from the DSN in the
environment and reaches pg_basebackup through a 0600 passfile, never argv.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import time
from pathlib import Path

import psycopg
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HATS_"
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-]+:\d{1,5}$")
_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class BackupSettingsError(Exception):
    """A backup setting is missing or invalid; the message names each variable and the fix."""


class BackupSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    backup_dir: Path = Field(description="Folder of the backups (<UTC timestamp>/) and the WAL archive (wal/); "
                                         "locally beside the stack's cluster")
    backup_dsn: SecretStr = Field(description="PostgreSQL DSN of hats_backup (REPLICATION): the base backups' "
                                              "and the WAL switch's account")
    influx_rpc_addr: str = Field(description="InfluxDB's backup RPC address, host:port (its bind-address)")
    influx_rpc_netns: Path | None = Field(default=None, description="A network namespace to run `influxd backup` / "
                                          "`restore` in (`nsenter --net=`), for an InfluxDB whose RPC port answers "
                                          "only there (the local stack's); unset: this host's network")
    backup_keep: int = Field(default=7, ge=1, le=1000,
                             description="Complete backups always kept (the newest N)")
    backup_keep_days: int = Field(default=14, ge=0, le=3650,
                                  description="Complete backups younger than this many days are kept too (0: none)")
    backup_daily_at: str = Field(default="02:30", description="When the daily backup runs, HH:MM UTC")

    @field_validator("influx_rpc_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if not _HOST_PORT.match(value):
            raise ValueError("must be host:port, e.g. 127.0.0.1:8088")
        return value

    @field_validator("backup_daily_at")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if not _HH_MM.match(value):
            raise ValueError("must be HH:MM (UTC, 24 h), e.g. 02:30")
        return value

    @field_validator("backup_dsn")
    @classmethod
    def _dsn(cls, value: SecretStr) -> SecretStr:
        try:
            parts = psycopg.conninfo.conninfo_to_dict(value.get_secret_value())
        except psycopg.ProgrammingError:
            raise ValueError("is not a PostgreSQL DSN (postgresql://hats_backup:…@host:port/hats)") from None
        if not parts.get("user") or not parts.get("host"):
            raise ValueError("must name the user and the host (postgresql://hats_backup:…@host:port/hats)")
        return value

    @property
    def daily_at(self) -> time:
        hours, minutes = self.backup_daily_at.split(":")
        return time(int(hours), int(minutes))

    def pg(self) -> dict[str, str]:
        """The DSN's parts (user, password, host, port, dbname) as libpq keywords."""
        parts = psycopg.conninfo.conninfo_to_dict(self.backup_dsn.get_secret_value())
        return {key: str(value) for key, value in parts.items() if value is not None}


def load_settings(environ: Mapping[str, str] | None = None) -> BackupSettings:
    """The settings from ``environ`` (default: the process environment); every problem named at once."""
    source = os.environ if environ is None else environ
    values = {key.removeprefix(ENV_PREFIX).lower(): value for key, value in source.items()
              if key.startswith(ENV_PREFIX) and key.removeprefix(ENV_PREFIX).lower() in BackupSettings.model_fields}
    try:
        return BackupSettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ENV_PREFIX + str(error["loc"][0]).upper()
            hint = "is not set" if error["type"] == "missing" else f"is invalid: {error['msg']}"
            problems.append(f"  {name} {hint}")
        raise BackupSettingsError("hats backup: settings need fixing:\n" + "\n".join(problems)
                                  + "\nSet them in the environment (for the local stack: `. .hats/env`).") from None
