"""The exporter's settings (HATS_EXPORTER_*), validated at start: a bad one stops it naming the variable."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HATS_EXPORTER_"


class ExporterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    dsn: SecretStr = Field(description="PostgreSQL warehouse DSN of the read-only role hats_exporter (migration 0014)")
    dagster_dsn: SecretStr | None = Field(
        None, description="DSN of Dagster's run storage (database dagster) as hats_exporter; unset: no run failures")
    host: str = Field("127.0.0.1", description="Address the /metrics listener binds")
    port: int = Field(9109, ge=1, le=65535, description="Port of the /metrics listener")
    lookback_days: int = Field(31, ge=1, le=400,
                               description="Days of check results and owed hours counted (the warehouse reloads "
                                           "late data within 31 days)")
    statement_timeout_s: float = Field(10.0, gt=0, le=300,
                                       description="A scrape's query budget; a slower query fails the scrape "
                                                   "(hats_exporter_up 0) instead of piling up")

    @field_validator("dagster_dsn", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        """An empty value (a chart Secret's key left blank) means unset, not a DSN that cannot connect."""
        return None if value == "" else value
