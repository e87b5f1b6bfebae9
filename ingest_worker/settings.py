"""Every worker setting, validated at start-up: a missing or invalid one stops the worker at once with
a message naming the environment variable and how to fix it. Defaults are justified in the README.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest_worker import tls, topic_filters
from ingest_worker.contract import TENANT_PATTERN
from ingest_worker.sources.discovery import DiscoverySource
from ingest_worker.sources.statestream import StatestreamSource
from ingest_worker.tracing.settings import TraceSettings

ENV_PREFIX = "HATS_"
SOURCES = ("statestream", "eventstream", "discovery", "status", "websocket")
DEFAULT_SOURCES = ("statestream", "eventstream", "discovery", "status")
# zigbee2mqtt's default base_topic: `zigbee2mqtt/<friendly name>` carries each device's state JSON (its
# `bridge/…` and `<device>/availability` topics are deeper and not matched).
DEFAULT_DISCOVERY_STATE_FILTERS = "zigbee2mqtt/+"
MQTT_SOURCES = frozenset({"statestream", "eventstream", "discovery", "status"})
# Settings only some sources need: (field, the sources that need it, why), checked after the others.
REQUIRED_BY_SOURCES = (
    ("mqtt_username", MQTT_SOURCES, "the MQTT sources read the broker"),
    ("mqtt_password", MQTT_SOURCES, "the MQTT sources read the broker"),
    ("ha_url", frozenset({"websocket"}), "the websocket source connects to Home Assistant"),
    ("ha_token", frozenset({"websocket"}), "the websocket source authenticates with a long-lived access token"),
)


def http_base_url(value: str) -> str:
    """An http(s) base URL without its trailing '/' (InfluxDB's, for the worker and `hats tenant`)."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names each one and the fix."""


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    tenant_mode: str = Field("single", pattern="^(single|registry)$",
                             description="`single`: serve `HATS_TENANT` with the settings below; `registry`: serve "
                                         "every active home of `core.tenants` in this shard, followed at run "
                                         "time (see \"Many homes, one worker\" below)")
    shard: int = Field(0, ge=0, description="registry mode: this worker serves the homes with "
                                                "`shard_of(id, HATS_SHARDS) == HATS_SHARD` (SHA-256 of the id, "
                                                "`ingest_worker/contract.py`)")
    shards: int = Field(1, ge=1, le=4096, description="registry mode: how many shards the homes are hashed "
                                                          "into")
    tenant_secrets_dir: Path = Field(
        default_factory=lambda: Path(".hats") / os.environ.get("HATS_PROFILE", "dev") / "tenants",
        description="registry mode: `<dir>/<tenant>/broker_password` (own broker account), `…/ha_token` "
                    "(WebSocket), files 0600", json_schema_extra={"readme_default": ".hats/<HATS_PROFILE>/tenants"})
    tenant_reread_s: float = Field(30.0, gt=0, le=3600,
                                   description="registry mode: re-read `core.tenants` this often besides "
                                               "`LISTEN hats_tenants` (a notification sent while PostgreSQL "
                                               "was away is lost)")
    pg_connections: int = Field(4, ge=1, le=64,
                                description="registry mode: PostgreSQL connections the homes' flushes share "
                                            "(a home always uses the same one)")
    tenant: str = Field("home", description="tenant whose topics this worker reads; points go to InfluxDB "
                                               "database `hats_<tenant>` (`[a-z0-9_]{1,32}`)")
    topic_prefix: str = Field("", description="prefix of every topic of the tenant when homes share a broker, "
                                              "e.g. `hats/acme/`")
    sources: str = Field(",".join(DEFAULT_SOURCES),
                         description="which Home Assistant formats to read (" + ", ".join(SOURCES) + "); "
                                     "`websocket` adds the WebSocket source (alone, the worker needs no broker)")
    statestream_base: str = Field("homeassistant/statestream", description="mqtt_statestream `base_topic`")
    eventstream_topic: str = Field("homeassistant/events", description="mqtt_eventstream `publish_topic`")
    discovery_prefix: str = Field("homeassistant", description="MQTT discovery prefix (configs on "
                                  "`<prefix>/<component>/[<node>/]<object>/config`)")
    discovery_state_filters: str = Field(
        DEFAULT_DISCOVERY_STATE_FILTERS,
        description="comma-separated MQTT filters under which discovery devices publish their states, subscribed "
                    "from the start (under the topic prefix), so that a new device's first states, published right "
                    "behind its configs, are not gone before the worker could subscribe to the topic its config "
                    "names; a state there that no config explains is a dead letter (replayable). Default: "
                    "zigbee2mqtt's device topics; empty: subscribe each state topic once its config is handled")
    status_topic: str = Field("homeassistant/status", description="Home Assistant's birth/last-will "
                              "topic, recorded as measurement `availability` (1/0)")

    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="MQTT broker port (the local stack: 18830)")
    mqtt_tls: bool = Field(False, description="`1`: connect over TLS 1.2+, verifying the broker's certificate and "
                                              "host name (the local stack writes `1`); `0` for a user's plaintext "
                                              "broker")
    mqtt_ca_file: Path | None = Field(None, description="CA certificate (PEM) the broker is verified with (unset: the "
                                                        "system's trust store; the local stack's is "
                                                        "`.hats/<profile>/tls/ca.pem`); set with `HATS_MQTT_TLS=0`, "
                                                        "missing, unreadable or not PEM, the worker does not start "
                                                        "and names it")
    # Required when an MQTT source is chosen (load_settings checks; a websocket-only worker needs no broker).
    mqtt_username: str = Field("", description="broker account; in the local stack "
                              "`hats_worker`, which may only subscribe")
    mqtt_password: SecretStr = Field(SecretStr(""), description="its password")
    mqtt_client_id: str = Field("hats-ingest", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                                description="fixed client id: the broker keeps the QoS 1 session (and "
                                            "queued messages) across restarts; unique per replica")
    mqtt_share_group: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                         description="replicas with the same group split eventstream and "
                                                     "discovery-state traffic (`$share/<group>/…`)")

    # Required when the websocket source is chosen.
    ha_url: str = Field("", description="Home Assistant's base URL, e.g. `http://homeassistant.local:8123` "
                                     "(`/api/websocket` is added)")
    ha_token: SecretStr = Field(SecretStr(""), description="a long-lived access token (HA: profile → Security); a "
                                              "refused one stops the worker (exit 2) naming this variable")
    ha_recorder_commit_s: float = Field(5.0, ge=0, le=600,
                                        description="the HA recorder's `commit_interval`: after each (re)connect "
                                                    "the gap is read again this long + 1 s after subscribing")

    influx_write_url: str = Field(description="where the worker writes (v1 API `/write`): the InfluxDB write gate "
                                                 "(`influx_gate/`; local stack: `hats up` runs it), never InfluxDB "
                                                 "itself")
    influx_username: str = Field(description="the worker's account on the write gate (local stack: `hats_worker`; "
                                                "InfluxDB does not know it)")
    influx_ca_file: Path | None = Field(None, description="CA certificate (PEM) an `https://` InfluxDB or write gate "
                                                          "is verified with (unset: the system's trust store); with "
                                                          "an `http://` URL it is an error")
    influx_password: SecretStr = Field(description="its password")
    influx_timeout_s: float = Field(10.0, gt=0, le=300,
                                    description="a write slower than this goes to the outbox instead")
    ingest_dsn: SecretStr = Field(description="PostgreSQL URL of role `hats_ingest` (dead letters, `core` "
                                          "metadata)")

    batch_max_points: int = Field(5_000, ge=1, le=100_000,
                                  description="flush at this many points (1–100000); bench: 2,000 → 13k msg/s, "
                                              "5,000 → 17k, 10,000 → 19k")
    batch_max_age_s: float = Field(0.25, gt=0, le=60,
                                   description="… or when the oldest unacknowledged message is this old; bounds "
                                               "latency (p99 ≈ 1 s at half the max rate)")
    outbox_dir: Path = Field(Path(".hats/outbox"),
                             description="on-disk outbox (a sub-folder per client id)")
    outbox_max_bytes: int = Field(1024**3, ge=1024**2,
                                  description="outbox bound; when full the worker stops acknowledging and "
                                              "the broker queues (backpressure)")
    max_payload_bytes: int = Field(256 * 1024, ge=1024, description="larger payloads are dead letters "
                                                                    "`payload_too_large`")
    http_host: str = Field("127.0.0.1",
                           description="address of `/metrics` (Prometheus), `/healthz`, `/readyz`")
    http_port: int = Field(9108, ge=0, le=65535,
                           description="their port (0 turns them off; `hats run` uses 18090)")
    shutdown_timeout_s: float = Field(30.0, gt=0, le=600,
                                      description="on SIGTERM: stop reading, flush, acknowledge, exit within this "
                                                  "bound")
    log_format: str = Field("json", pattern="^(json|text)$",
                            description="`json` (one object per line) or `text`")
    tls_probe_s: float = Field(300.0, gt=0, le=86400,
                               description="how often the worker reads the certificate each TLS peer presents (a "
                                           "handshake with the broker, InfluxDB and PostgreSQL, verified as its "
                                           "connections are) for `hats_tls_cert_not_after_seconds{peer}`")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not TENANT_PATTERN.match(value):
            raise ValueError(f"must match {TENANT_PATTERN.pattern}")
        return value

    @field_validator("influx_write_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_base_url(value)

    @field_validator("ha_url")
    @classmethod
    def _ha_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must start with http://, https://, ws:// or wss:// (Home Assistant's base URL)")
        return value.rstrip("/").removesuffix("/api/websocket")

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: str) -> str:
        chosen = [s.strip() for s in value.split(",") if s.strip()]
        unknown = sorted(set(chosen) - set(SOURCES))
        if unknown or not chosen:
            raise ValueError(f"choose from {', '.join(SOURCES)} (got {value!r})")
        return ",".join(chosen)

    @field_validator("discovery_state_filters")
    @classmethod
    def _state_filters(cls, value: str) -> str:
        chosen = [f.strip() for f in value.split(",") if f.strip()]
        for topic_filter in chosen:
            if (why := topic_filters.problem(topic_filter)) is not None:
                raise ValueError(why)
        return ",".join(chosen)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "#+") or value.startswith("/"):
            raise ValueError("a plain topic prefix: no wildcards, no leading '/'")
        return value if not value or value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _shard_in_range(self) -> WorkerSettings:
        if self.shard >= self.shards:
            raise ValueError(f"HATS_SHARD {self.shard} must be below HATS_SHARDS {self.shards}")
        return self

    @model_validator(mode="after")
    def _state_filters_apart(self) -> WorkerSettings:
        # The filters the sources themselves subscribe (one definition of each), by the setting that names them.
        others = [*((f, "HATS_STATESTREAM_BASE") for f in StatestreamSource(self.statestream_base).filters()),
                  (self.eventstream_topic, "HATS_EVENTSTREAM_TOPIC"), (self.status_topic, "HATS_STATUS_TOPIC"),
                  *((f, "HATS_DISCOVERY_PREFIX") for f in DiscoverySource(self.discovery_prefix).filters())]
        for topic_filter in filter(None, self.discovery_state_filters.split(",")):
            for other, name in others:
                if topic_filters.overlap(topic_filter, other):
                    raise ValueError(f"HATS_DISCOVERY_STATE_FILTERS: {topic_filter!r} overlaps {other!r} ({name}); "
                                     "name the devices' state topics only (e.g. zigbee2mqtt/+), or set it empty")
        return self

    @model_validator(mode="after")
    def _tls(self) -> WorkerSettings:
        problems = tls.settings_problems(self.mqtt_tls, self.mqtt_ca_file, self.influx_write_url, self.influx_ca_file,
                                         "HATS_INFLUX_WRITE_URL")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def mqtt_tls_context(self) -> ssl.SSLContext | None:
        """The broker's verifying context, None for a plaintext broker (HATS_MQTT_TLS=0)."""
        return tls.client_context(self.mqtt_ca_file) if self.mqtt_tls else None

    def influx_verify(self) -> ssl.SSLContext:
        """httpx's `verify` for InfluxDB (the CA's context; unused for an http:// URL)."""
        return tls.client_context(self.influx_ca_file)

    @property
    def registry_mode(self) -> bool:
        return self.tenant_mode == "registry"

    def source_names(self) -> tuple[str, ...]:
        return tuple(self.sources.split(","))

    def mqtt_sources(self) -> tuple[str, ...]:
        return tuple(name for name in self.source_names() if name in MQTT_SOURCES)

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    def discovery_state_filter_list(self) -> tuple[str, ...]:
        """The state filters under the topic prefix, as subscribed."""
        return tuple(self.topic(f) for f in self.discovery_state_filters.split(",") if f)


def _missing_for_sources(settings: WorkerSettings | None) -> list[str]:
    """The settings the chosen sources need that are empty (read from the environment when the others
    failed too, so one start names every problem)."""
    if settings is not None:
        chosen = set(settings.source_names())
    else:
        raw = next((v for k, v in os.environ.items() if k.upper() == ENV_PREFIX + "SOURCES"), None)
        chosen = {s.strip() for s in (raw if raw is not None else ",".join(DEFAULT_SOURCES)).split(",")}
    problems = []
    for field, needed_by, why in REQUIRED_BY_SOURCES:
        if not chosen & needed_by:
            continue
        name = ENV_PREFIX + field.upper()
        if settings is not None:
            value = getattr(settings, field)
            empty = not (value.get_secret_value() if isinstance(value, SecretStr) else value)
        else:
            empty = not next((v for k, v in os.environ.items() if k.upper() == name), "")
        if empty:
            which = ", ".join(sorted(chosen & needed_by))
            problems.append(f"  {name} is not set ({why}: HATS_SOURCES includes {which})")
    return problems


def load_settings() -> WorkerSettings:
    settings: WorkerSettings | None = None
    problems: list[str] = []
    try:
        settings = WorkerSettings()  # fields come from the environment
    except ValidationError as exc:
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings: its message names them (pydantic prefixes "Value error, ")
                problems.append(f"  {error['msg'].removeprefix('Value error, ')}")
                continue
            name = ENV_PREFIX + str(error["loc"][0]).upper()
            hint = "is not set" if error["type"] == "missing" else f"is invalid: {error['msg']}"
            problems.append(f"  {name} {hint}")
    known = {line.split()[0] for line in problems}
    problems += [line for line in _missing_for_sources(settings) if line.split()[0] not in known]
    try:
        TraceSettings()  # the OpenTelemetry SDK's own variables (tracing/settings.py), read again when used
    except ValidationError as exc:
        problems += [f"  {str(error['loc'][0]).upper()} is invalid: {error['msg'].removeprefix('Value error, ')}"
                     for error in exc.errors()]
    if problems or settings is None:
        raise ConfigError(
            "ingest_worker: cannot start, settings need fixing:\n" + "\n".join(problems)
            + "\nSet them in the environment (for the local stack: `. .hats/env`); the README lists them all."
        )
    return settings
