"""The gate's settings (HATS_INFLUX_GATE_*), validated at start: the worker's credential it accepts, the InfluxDB
account it writes with, the retention endpoint's credential and the admin it acts as, where it listens and, for
HTTPS, its certificate and the CA it verifies InfluxDB by."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HATS_INFLUX_GATE_"
DEFAULT_PORT = 8087


class GateConfigError(Exception):
    """A setting is missing or invalid; the message names each variable and the fix."""


class GateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="Address the gate listens on")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Port the gate listens on")
    upstream_url: str = Field(description="InfluxDB's base URL (v1 API), which only the gate should reach")
    upstream_username: str = Field(min_length=1, description="InfluxDB account with WRITE on the homes' databases")
    upstream_password: SecretStr = Field(description="Its password (held by the gate only)")
    username: str = Field(min_length=1, description="The worker's gate account (HATS_INFLUX_USERNAME of the worker)")
    password: SecretStr = Field(description="Its password (HATS_INFLUX_PASSWORD of the worker)")
    timeout_s: float = Field(60.0, gt=0, le=600, description="How long the gate waits for InfluxDB's answer")
    upstream_socket: Path | None = Field(None, description="InfluxDB's unix socket (`bind-socket`): reach it there "
                                                           "instead of over TCP (the host of the URL is then only "
                                                           "its Host header)")
    front_host: str = Field("127.0.0.1", min_length=1, description="Address of the front listener")
    front_port: int | None = Field(None, ge=1, le=65535,
                                   description="A second listener, for InfluxDB's own accounts (Dagster, the "
                                               "admin): every request but /debug/* forwarded as it is, with the "
                                               "client's credentials; for an InfluxDB whose own listeners nobody "
                                               "else reaches. Unset: no front")
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain): the gate serves HTTPS with it")
    tls_key_file: Path | None = Field(None, description="Its PEM private key (0600)")
    retention_username: str | None = Field(None, min_length=1,
                                           description="The Dagster code location's account on the gate's retention "
                                                       "endpoint (its HATS_INFLUX_RETENTION_USERNAME); unset: the "
                                                       "endpoint is off")
    retention_password: SecretStr | None = Field(None, description="Its password (HATS_INFLUX_RETENTION_PASSWORD of "
                                                                   "the code location)")
    admin_username: str | None = Field(None, min_length=1,
                                       description="InfluxDB admin the retention endpoint acts as (held by the gate "
                                                   "only; required with the endpoint)")
    admin_password: SecretStr | None = Field(None, description="Its password")
    retention_max_hours: int = Field(180_000, ge=1, description="Longest retention-policy duration the endpoint "
                                                                "sets, hours (default ≈ 20.5 years: the longest "
                                                                "tier, 240 rollup months, fits)")
    upstream_ca_file: Path | None = Field(None, description="PEM CA that InfluxDB's HTTPS certificate is verified by "
                                                            "(unset: the system's CAs)")

    @field_validator("upstream_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("upstream_password", "password", "retention_password", "admin_password")
    @classmethod
    def _secret_set(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("is empty")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> GateSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(f"{ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE go together: set both "
                             "(HTTPS) or neither (HTTP)")
        if (self.retention_username is None) != (self.retention_password is None):
            raise ValueError(f"{ENV_PREFIX}RETENTION_USERNAME and {ENV_PREFIX}RETENTION_PASSWORD go together: set "
                             "both (the retention endpoint on) or neither (off)")
        if self.retention_username is not None and (self.admin_username is None or self.admin_password is None):
            raise ValueError(f"the retention endpoint ({ENV_PREFIX}RETENTION_USERNAME) acts as the InfluxDB admin: "
                             f"set {ENV_PREFIX}ADMIN_USERNAME and {ENV_PREFIX}ADMIN_PASSWORD too")
        return self

    @property
    def retention_on(self) -> bool:
        return self.retention_username is not None

    def server_ssl(self) -> ssl.SSLContext | None:
        """The listener's TLS context, or None for plain HTTP."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context

    def upstream_ssl(self) -> ssl.SSLContext | None:
        """How InfluxDB's certificate is verified (https upstream only)."""
        if not self.upstream_url.startswith("https://"):
            return None
        return ssl.create_default_context(cafile=str(self.upstream_ca_file) if self.upstream_ca_file else None)


def load_settings() -> GateSettings:
    try:
        return GateSettings()  # fields come from the environment
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:
                problems.append(f"  {error['msg'].removeprefix('Value error, ')}")
                continue
            name = ENV_PREFIX + str(error["loc"][0]).upper()
            hint = "is not set" if error["type"] == "missing" else f"is invalid: {error['msg']}"
            problems.append(f"  {name} {hint}")
        raise GateConfigError("influx_gate: cannot start, settings need fixing:\n" + "\n".join(problems)
                              + "\nSet them in the environment; the README lists them.") from None
