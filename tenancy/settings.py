"""What tenant administration connects to, validated before anything is touched.

The operator's tools run as the platform's owners: PostgreSQL as the migrations' owner (it creates roles
and writes `core.tenants`), InfluxDB as its admin (databases, retention policies, grants) and Mosquitto as
the dynamic-security admin (the homes' accounts). A missing or invalid setting stops the command at once
with a message naming the environment variable, before any store is touched.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest_worker import tls
from ingest_worker.settings import http_base_url

ENV_PREFIX = "HATS_"


class SettingsError(Exception):
    """A setting is missing or invalid; the message names each variable and the fix."""


class TenancySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    pg_dsn: SecretStr = Field(description="PostgreSQL DSN of the migrations' owner (creates roles, writes core.*)")
    influx_url: str = Field(description="InfluxDB base URL (v1 API: /query)")
    influx_ca_file: Path | None = Field(None, description="CA certificate (PEM) an https:// InfluxDB is verified "
                                                          "with (unset: the system's trust store)")
    influx_admin_username: str = Field(min_length=1, description="InfluxDB admin: databases, policies, grants")
    influx_admin_password: SecretStr = Field(description="Its password")
    influx_writer_username: str = Field(min_length=1, description="The InfluxDB account the write gate writes "
                                                                  "with: granted WRITE")
    influx_dagster_username: str = Field(min_length=1, description="Dagster's InfluxDB account: granted ALL")
    mqtt_host: str = Field(min_length=1, description="The platform broker's host")
    mqtt_port: int = Field(ge=1, le=65535, description="The platform broker's port")
    mqtt_tls: bool = Field(False, description="Connect to the broker over TLS (the stack's broker: 1)")
    mqtt_ca_file: Path | None = Field(None, description="CA certificate (PEM) the broker is verified with "
                                                        "(unset: the system's trust store)")
    broker_admin_username: str = Field(min_length=1,
                                       description="Mosquitto dynamic-security admin: makes the homes' accounts")
    broker_admin_password: SecretStr = Field(description="Its password")
    tenant_secrets_dir: Path = Field(description="One folder per tenant of secret files (0600); in a cluster "
                                                 "a Secret volume; locally .hats/<profile>/tenants")

    @field_validator("influx_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_base_url(value)

    @model_validator(mode="after")
    def _tls(self) -> TenancySettings:
        problems = tls.settings_problems(self.mqtt_tls, self.mqtt_ca_file, self.influx_url, self.influx_ca_file)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def mqtt_tls_context(self) -> ssl.SSLContext | None:
        return tls.client_context(self.mqtt_ca_file) if self.mqtt_tls else None

    def influx_verify(self) -> ssl.SSLContext:
        """httpx's `verify` for InfluxDB (the CA's context; unused for an http:// URL)."""
        return tls.client_context(self.influx_ca_file)

    @field_validator("pg_dsn", "influx_admin_password", "broker_admin_password")
    @classmethod
    def _secret_set(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("is empty")
        return value


def load_settings(environ: Mapping[str, str] | None = None) -> TenancySettings:
    """The settings from ``environ`` (default: the process environment); every problem named at once."""
    source = os.environ if environ is None else environ
    values = {key.removeprefix(ENV_PREFIX).lower(): value for key, value in source.items()
              if key.startswith(ENV_PREFIX) and key.removeprefix(ENV_PREFIX).lower() in TenancySettings.model_fields}
    try:
        # Values are passed explicitly so that a given mapping is the only source (tests pass a stack's env).
        return TenancySettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings: its message names them
                problems.append(f"  {error['msg'].removeprefix('Value error, ')}")
                continue
            name = ENV_PREFIX + str(error["loc"][0]).upper()
            hint = "is not set" if error["type"] == "missing" else f"is invalid: {error['msg']}"
            problems.append(f"  {name} {hint}")
        raise SettingsError("hats tenant: settings need fixing:\n" + "\n".join(problems)
                            + "\nSet them in the environment (for the local stack: `. .hats/env`).") from None
