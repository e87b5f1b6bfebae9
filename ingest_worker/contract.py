"""The raw data contract in InfluxDB, shared with the Dagster assets that read it.

One database per tenant, retention policies `raw` (default) and `rollup`; the measurement is the
normalised quantity; tags are a bounded whitelist (attributes are never tags, so series stay
bounded); `value` is always a float (no field-type conflicts), `state` holds non-numeric states.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# The Dagster side verifies a TLS InfluxDB the worker's way (one context builder for every client).
from ingest_worker.tls import client_context as tls_client_context

# Traces: both sides send their spans where the OpenTelemetry SDK's own variables say (tracing/settings.py).
from ingest_worker.tracing.settings import TraceSettings as TraceSettings

__all__ = ["TraceSettings", "tls_client_context"]

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
DATABASE_PREFIX = "hats_"


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
    return f"{DATABASE_PREFIX}{tenant}"


def is_tenant_database(database: str) -> bool:
    """Whether `database` is named as a home's (`database_for`'s form): what the worker may write."""
    return database.startswith(DATABASE_PREFIX) and bool(TENANT_PATTERN.match(database[len(DATABASE_PREFIX):]))


# Home Assistant's long-term statistics, imported (`hats import`): rows of the rollup contract
# (hats_assets/defs/rollups/contract.py: tags entity_id and quantity, the same field names) in their own
# measurements of the `rollup` policy, `imported_<kind>_<window>` for kinds gauge/counter and windows 1h
# (`statistics`) and 5m (`statistics_short_term`). Rollup runs never delete them; where our own rollup of
# an hour exists the warehouse takes ours. Fields: gauges `mean`, `min`, `max`; meters `consumption` (the
# change of HA's `sum` over the window, canonical unit), `last` (HA's `state`), `sum`, `resets` (integer:
# 1 when `last_reset` moved within the window, or when `state` dropped while `sum` did not: HA's recorder
# keeps no last_reset for a `total_increasing` meter's new cycle); both `count` (integer 0: no raw points)
# and `available_s` (the window's length: HA's statistics do not record unavailable time). A field HA left
# NULL is absent. External statistics (`<integration>:<id>`, no entity) are not imported: the warehouse
# keys every row by entity. Tag `quantity`: the entity's measurement in core.entities, else the worker's.
IMPORTED_PREFIX = "imported_"
IMPORTED_WINDOWS = ("1h", "5m")
IMPORTED_KINDS = ("gauge", "counter")


def imported_measurement(kind: str, window: str) -> str:
    if kind not in IMPORTED_KINDS or window not in IMPORTED_WINDOWS:
        raise ValueError(f"no imported statistics measurement for kind {kind!r} and window {window!r}")
    return f"{IMPORTED_PREFIX}{kind}_{window}"


# Sharding of tenants across worker Deployments (registry mode, `HATS_SHARD` of `HATS_SHARDS`): the code
# location and the chart must place a tenant exactly where the worker serves it, in every process and
# Python version, so the shard is a hash of the id's bytes (Python's `hash` is salted per process).
SHARD_HASH_BYTES = 8


def shard_of(tenant_id: str, shards: int) -> int:
    """The shard (0 ≤ shard < `shards`) that serves `tenant_id`: the first 8 bytes of its SHA-256, modulo."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1 (got {shards})")
    digest = hashlib.sha256(tenant_id.encode()).digest()
    return int.from_bytes(digest[:SHARD_HASH_BYTES], "big") % shards


def share_group_of(shard: int, shards: int) -> str:
    """The MQTT shared-subscription group of one shard: replicas of the shard split its tenants' messages
    (`$share/<group>/<filter>`); the count is part of the name, so a re-sharded deployment never shares
    a group with workers that still hash by the old count."""
    return f"hats-shard-{shard}-of-{shards}"
