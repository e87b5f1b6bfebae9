"""What a tenant is, checked before anything is made, and every refusal worded the same way.

A refusal names the field first (`topic_prefix: overlaps the prefix of tenant b`), whether it comes from
the spec (zoneinfo checks the time zone) or from PostgreSQL's constraints (unique ids, the disjoint-prefix
trigger's exclusion violation, checks, among them `core.is_time_zone`: PostgreSQL's own list of zones,
checked by the row's constraint rather than by a second query, ~90 ms each), so the operator knows which
option to fix.
"""

from __future__ import annotations

import re
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ingest_worker.contract import TENANT_PATTERN

# The same rules as migration 0011's constraints, checked here first so that the message can say why.
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*/$")
BROKER_URL_PATTERN = re.compile(r"^mqtts?://[^/@]+(:[0-9]{1,5})?$")
HA_URL_PATTERN = re.compile(r"^(https?|wss?)://[^/@]+")
NAME_MAX = 200
# (field, low, high) as the migration's CHECKs; defaults as its column defaults.
RANGES = {"series_budget": (1, 1_000_000), "raw_days": (1, 365), "rollup_months": (1, 240)}
DEFAULT_SERIES_BUDGET = 10_000
DEFAULT_RAW_DAYS = 30
DEFAULT_ROLLUP_MONTHS = 24
DEFAULT_TIME_ZONE = "UTC"
# Fields an operator may change after adding (`change`); the id is the tenant's identity.
CHANGEABLE = ("name", "topic_prefix", "broker_url", "broker_username", "ha_url", "time_zone",
              "series_budget", "raw_days", "rollup_months")
# PostgreSQL constraint → the field it guards (unique and check violations name constraints, not fields).
CONSTRAINT_FIELDS = {
    "tenants_pkey": "id", "tenants_tenant_id_check": "id",
    "tenants_topic_prefix_key": "topic_prefix", "tenants_topic_prefix_plain": "topic_prefix",
    "tenants_broker_username_key": "broker_username", "tenants_broker_account": "broker_username",
    "tenants_broker_url_mqtt": "broker_url", "tenants_ha_url_http": "ha_url",
    "tenants_time_zone_known": "time_zone", "tenants_series_budget_positive": "series_budget",
    "tenants_raw_days_range": "raw_days", "tenants_rollup_months_range": "rollup_months",
}


class TenantError(ValueError):
    """Refused input: ``field`` is the option or column at fault, the text says what to do."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TenantSpec(BaseModel):
    """A home as the operator describes it; everything else (database, accounts) follows from it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    topic_prefix: str | None = None
    broker_url: str | None = None
    broker_username: str | None = None
    ha_url: str | None = None
    time_zone: str = DEFAULT_TIME_ZONE
    series_budget: int = DEFAULT_SERIES_BUDGET
    raw_days: int = DEFAULT_RAW_DAYS
    rollup_months: int = DEFAULT_ROLLUP_MONTHS

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not TENANT_PATTERN.match(value):
            raise ValueError(f"{value!r} must match {TENANT_PATTERN.pattern} (lower-case letters, digits, _)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > NAME_MAX:
            raise ValueError(f"give a name of 1 to {NAME_MAX} characters")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if any(c in value for c in "#+"):
            raise ValueError(f"{value!r} holds an MQTT wildcard (# or +); give a plain prefix like hats/acme/")
        if not value.endswith("/"):
            raise ValueError(f"{value!r} must end with '/', e.g. {value}/")
        if not PREFIX_PATTERN.match(value):
            raise ValueError(f"{value!r} must be levels of letters, digits, _ or - separated by '/', "
                             "without a leading '/' or empty levels, e.g. hats/acme/")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is not None and not BROKER_URL_PATTERN.match(value):
            raise ValueError(f"{value!r} must be mqtt://host[:port] or mqtts://host[:port] (no account, no path)")
        return value

    @field_validator("ha_url")
    @classmethod
    def _ha_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/").removesuffix("/api/websocket")
        if not HA_URL_PATTERN.match(value):
            raise ValueError(f"{value!r} must be Home Assistant's base URL, http(s):// or ws(s)://host[:port], "
                             "without an account in it")
        return value

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; give an IANA name like Europe/Amsterdam") from None
        return value

    @field_validator("series_budget", "raw_days", "rollup_months", mode="before")
    @classmethod
    def _in_range(cls, value: Any, info: Any) -> int:
        low, high = RANGES[info.field_name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high} (got {value!r})")
        return value

    @model_validator(mode="after")
    def _broker_account(self) -> Self:
        if (self.broker_url is None) != (self.broker_username is None):
            missing = "broker_username" if self.broker_username is None else "broker_url"
            raise ValueError(f"{missing}|set broker_url and broker_username together (the home's own broker "
                             "account the worker reads with)")
        return self

    @classmethod
    def parse(cls, **fields: Any) -> TenantSpec:
        """Validate, turning pydantic's errors into one TenantError naming the first field at fault."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            error = exc.errors()[0]
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                field = str(error["loc"][0])
            else:
                field, _, message = message.partition("|")
            if error["type"] == "extra_forbidden":
                message = f"not a tenant field; fields: {', '.join(cls.model_fields)}"
            raise TenantError(field, message) from None

    def row(self) -> dict[str, Any]:
        """The `core.tenants` columns of this spec."""
        values = self.model_dump()
        values["tenant_id"] = values.pop("id")
        return values


def translate(exc: psycopg.Error, tenant_id: str) -> TenantError | None:
    """PostgreSQL's refusal of a tenant row in the same form as the spec's, or None if it is not one."""
    diag = exc.diag
    if isinstance(exc, psycopg.errors.ExclusionViolation) and diag.column_name == "topic_prefix":
        primary = diag.message_primary or ""
        other = primary.rsplit(" ", 1)[-1]
        return TenantError("topic_prefix", f"overlaps the prefix of tenant {other}; "
                                           "give a prefix that neither starts nor is started by another's")
    field = CONSTRAINT_FIELDS.get(diag.constraint_name or "")
    if field is None:
        return None
    if isinstance(exc, psycopg.errors.UniqueViolation):
        if field == "id":
            return TenantError("id", f"tenant {tenant_id!r} already exists; pick another id or `hats tenant "
                                     f"change {tenant_id}`")
        return TenantError(field, "another tenant already has this value; `hats tenant list` shows whose")
    if isinstance(exc, psycopg.errors.CheckViolation):
        if field == "time_zone":
            # zoneinfo knew it (the spec checked), PostgreSQL's tzdata does not: local days are computed there.
            return TenantError("time_zone", "unknown time zone to PostgreSQL (its tzdata lacks it); give a "
                                            "zone listed in pg_timezone_names")
        return TenantError(field, f"refused by PostgreSQL's check {diag.constraint_name}")
    return None
