"""Which OTLP endpoint the worker's traces go to: the OpenTelemetry SDK's own environment variables.

One way, the standard one: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, `…/v1/traces`) or
`OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL; `/v1/traces` is added), `OTEL_SERVICE_NAME`,
`OTEL_SDK_DISABLED`. A collector's operator (or the OpenTelemetry Operator on Kubernetes) sets the same
names for every service, so no `HATS_` copy of them exists. Neither endpoint set: tracing is off and no
OpenTelemetry module is imported. The SDK reads its own tuning variables (`OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`/`_HEADERS`/`_COMPRESSION`) itself.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SERVICE_NAME = "hats-ingest-worker"
TRACES_PATH = "/v1/traces"


def otlp_url(value: str) -> str:
    """An OTLP/HTTP URL (or empty: not set)."""
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https:// (OTLP over HTTP, e.g. http://collector:4318)")
    return value


class TraceSettings(BaseSettings):
    # No prefix: these are the OpenTelemetry SDK's names (case-insensitive, like every other setting).
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    otel_exporter_otlp_traces_endpoint: str = Field(
        "", description="traces: the OTLP/HTTP URL spans are posted to, e.g. `http://collector:4318/v1/traces`; "
                        "this or the next one set turns tracing on (see \"Traces\"); neither: off, OpenTelemetry "
                        "not even imported")
    otel_exporter_otlp_endpoint: str = Field(
        "", description="traces: the collector's base URL instead, e.g. `http://collector:4318` (`/v1/traces` is "
                        "added); the one above wins")
    otel_service_name: str = Field(DEFAULT_SERVICE_NAME, min_length=1, description="traces: the spans' `service.name`")
    otel_sdk_disabled: bool = Field(False, description="traces: `true` turns them off whatever the endpoint",
                                    json_schema_extra={"readme_default": "false"})

    @field_validator("otel_exporter_otlp_traces_endpoint", "otel_exporter_otlp_endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        return otlp_url(value)

    @property
    def endpoint(self) -> str | None:
        """Where spans are sent, or None: tracing off."""
        if self.otel_sdk_disabled:
            return None
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + TRACES_PATH
        return None
