"""The raw data contract in InfluxDB, shared with the Dagster assets that read it.

One database per tenant, retention policies `raw` (default) and `rollup`; the measurement is the
normalised quantity; tags are a bounded whitelist (attributes are never tags, so series stay
bounded); `value` is always a float (no field-type conflicts), `state` holds non-numeric states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RAW_RP = "raw"
ROLLUP_RP = "rollup"
VALUE_FIELD = "value"
STATE_FIELD = "state"
# No `source` tag: one state change reaching the worker through two sources (statestream and
# eventstream) must be one point, and a tag that differs between the copies would make two series.
# Points written before it was dropped still carry `source`; readers group by entity_id.
TAG_KEYS = ("entity_id", "device_id", "domain")
AVAILABILITY_STATES = frozenset({"unavailable", "unknown"})
TENANT_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")


@dataclass(frozen=True, slots=True)
class Point:
    """One normalised observation of one entity: exactly one of value/state is set."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    time_ns: int
    value: float | None = None
    state: str | None = None

    def tag(self, key: str) -> str | None:
        return next((v for k, v in self.tags if k == key), None)


def database_for(tenant: str) -> str:
    if not TENANT_PATTERN.match(tenant):
        raise ValueError(f"tenant {tenant!r} must match {TENANT_PATTERN.pattern}")
    return f"hats_{tenant}"
