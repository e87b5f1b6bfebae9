"""Every worker setting, validated at start-up: a missing or invalid one stops the worker at once with
a message naming the environment variable and how to fix it.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest_worker.contract import TENANT_PATTERN

ENV_PREFIX = "HATS_"


class ConfigError(Exception):
    """A setting is missing or invalid; the message names each one and the fix."""


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    tenant: str = Field("home", description="Tenant whose topics this worker reads (InfluxDB hats_<tenant>)")
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
    mqtt_username: str = Field(description="MQTT account (read-only on the broker)")
    mqtt_password: SecretStr = Field(description="MQTT password")
    mqtt_client_id: str = Field("hats-ingest", min_length=1, max_length=64,
                                description="Fixed client id: the broker keeps its QoS 1 session across restarts")
    eventstream_topic: str = Field("homeassistant/events",
                                   description="Topic mqtt_eventstream publishes on (publish_topic)")
    influx_url: str = Field(description="InfluxDB base URL (v1 API: /write, /query)")
    influx_username: str = Field(description="InfluxDB account with WRITE on hats_<tenant>")
    influx_password: SecretStr = Field(description="InfluxDB password")
    ingest_dsn: SecretStr = Field(description="PostgreSQL DSN of role hats_ingest (dead letters, metadata)")
    batch_max_points: int = Field(5_000, ge=1, le=100_000,
                                  description="Flush a batch to InfluxDB at this many points")
    batch_max_age_s: float = Field(1.0, gt=0, le=60, description="…or when its oldest point is this old")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not TENANT_PATTERN.match(value):
            raise ValueError(f"must match {TENANT_PATTERN.pattern}")
        return value

    @field_validator("influx_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


def load_settings() -> WorkerSettings:
    try:
        return WorkerSettings()  # fields come from the environment
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ENV_PREFIX + str(error["loc"][0]).upper()
            hint = "is not set" if error["type"] == "missing" else f"is invalid: {error['msg']}"
            problems.append(f"  {name} {hint}")
        raise ConfigError(
            "ingest_worker: cannot start, settings need fixing:\n" + "\n".join(problems)
            + "\nSet them in the environment (for the local stack: `. .hats/env`); the README lists them all."
        ) from None
