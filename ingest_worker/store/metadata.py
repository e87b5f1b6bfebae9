"""Entity and device metadata for PostgreSQL `core`, and the tenant's series budget.

Upserts are batched with each flush and only carry what changed, so steady traffic costs no
PostgreSQL round trips beyond the flush's own. The budget counts entities (each is at least one
series): the set is loaded from `core.entities` at start, so a restart does not reset it. What is
known of each entity (unit, device_class, state_class, name) is loaded too: it describes the states
that carry no description of their own (an attribute-less message, an `unavailable` state without its
unit), so their series never depends on what one message happened to carry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import psycopg

from ingest_worker.contract import AVAILABILITY_STATES
from ingest_worker.normalise import DeviceInfo, EntityState
from ingest_worker.units import conversion_for, is_percent_class

MAX_TEXT_CHARS = 255
# The attributes that decide an entity's series (measurement, quantity, unit conversion).
DESCRIPTION_KEYS = ("unit_of_measurement", "device_class", "state_class")


@dataclass(frozen=True, slots=True)
class EntityRow:
    entity_id: str
    device_id: str | None
    domain: str
    measurement: str
    device_class: str | None
    state_class: str | None
    unit_original: str | None
    unit_canonical: str | None
    conversion: str | None
    friendly_name: str | None
    source: str


def column_text(value: object, limit: int | None = MAX_TEXT_CHARS) -> str | None:
    """A text column's value: PostgreSQL text cannot hold NUL or a lone surrogate, and a name is not worth a
    dead letter (the one cleaning of names for `core`, whichever source or registry they come from, and of
    a dead letter's topic and detail). `limit` characters at most (None: all)."""
    if not isinstance(value, str) or not value:
        return None
    return value.replace("\x00", "")[:limit].encode("utf-8", "replace").decode("utf-8")


DEFAULT_BUDGET = 10_000  # core.tenants.series_budget's default (migration 0011)


class MetadataStore:
    """`budget` until `load`, which takes the home's own (`core.tenants.series_budget`, its row: the same
    number the code location's budget check reads)."""

    def __init__(self, tenant: str, budget: int) -> None:
        self.tenant = tenant
        self.budget = budget
        self._known: dict[str, EntityRow | None] = {}
        self._pending_entities: dict[str, EntityRow] = {}
        self._pending_devices: dict[str, DeviceInfo] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self._sent: tuple[dict[str, DeviceInfo], dict[str, EntityRow]] = ({}, {})

    async def load(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        await conn.execute("INSERT INTO core.tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                           (self.tenant, self.tenant))
        cur = await conn.execute("SELECT series_budget FROM core.tenants WHERE tenant_id = %s", (self.tenant,))
        row = await cur.fetchone()
        if row is not None:
            self.budget = int(str(row[0]))
        cur = await conn.execute(
            "SELECT entity_id, device_id, domain, measurement, device_class, state_class, unit_original, "
            "unit_canonical, conversion, friendly_name, source FROM core.entities WHERE tenant_id = %s",
            (self.tenant,))
        self._known = {str(row[0]): EntityRow(*row) for row in await cur.fetchall()}  # type: ignore[arg-type]

    def described(self, state: EntityState) -> EntityState:
        """`state` with the entity's known description when it carries none of its own: no attributes at
        all, or an availability state without unit, device_class and state_class. Attributes pieced together
        (statestream) have their gaps filled: each arrived on its own topic, and one missing is one not
        received (yet), not one the entity dropped (a retained attribute topic outlives its attribute anyway)."""
        attrs = state.attributes
        if not state.attributes_pieced and attrs and (
                state.state not in AVAILABILITY_STATES or any(key in attrs for key in DESCRIPTION_KEYS)):
            return state
        row = self._known.get(state.entity_id)
        if row is None:
            return state
        gaps = {key: value for key, value in (
            ("unit_of_measurement", row.unit_original), ("device_class", row.device_class),
            ("state_class", row.state_class), ("friendly_name", row.friendly_name))
            if value is not None and key not in attrs}
        if not gaps:
            return state
        return replace(state, attributes={**gaps, **attrs})

    def knows(self, entity_id: str) -> bool:
        """Whether the entity's description is on record (loaded from `core.entities`, or noted since)."""
        return self._known.get(entity_id) is not None

    def admit(self, entity_id: str) -> bool:
        """Within budget: a known entity, or a new one while there is room."""
        if entity_id in self._known:
            return True
        if len(self._known) >= self.budget:
            return False
        self._known[entity_id] = None
        return True

    def note(self, state: EntityState, measurement: str) -> None:
        attrs = state.attributes
        device_class, unit = column_text(attrs.get("device_class")), column_text(attrs.get("unit_of_measurement"))
        conversion = conversion_for(None if is_percent_class(device_class) else unit)
        canonical = (conversion.unit or unit) if unit else None  # humidity/battery keep their % as is
        row = EntityRow(state.entity_id, state.device_id, state.entity_id.split(".", 1)[0], measurement,
                        device_class, column_text(attrs.get("state_class")), unit, canonical,
                        conversion.name, column_text(attrs.get("friendly_name")), state.source)
        if self._known.get(state.entity_id) != row:
            self._known[state.entity_id] = row
            self._pending_entities[state.entity_id] = row
        device = state.device
        if device is not None and self._devices.get(device.device_id) != device:
            self._devices[device.device_id] = device
            self._pending_devices[device.device_id] = DeviceInfo(
                device.device_id, column_text(device.name), column_text(device.manufacturer), column_text(device.model),
                tuple(t for t in (column_text(i) for i in device.identifiers) if t))

    async def flush(self, cur: psycopg.AsyncCursor[tuple[object, ...]]) -> None:
        # What this transaction carries: `note` may add more while it awaits (the next batch is parsed
        # meanwhile), and `committed` must not forget those.
        devices, entities = self._sent = (dict(self._pending_devices), dict(self._pending_entities))
        if devices:
            await cur.executemany(
                "INSERT INTO core.devices (tenant_id, device_id, name, manufacturer, model, identifiers) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, device_id) DO UPDATE SET "
                "name = EXCLUDED.name, manufacturer = EXCLUDED.manufacturer, model = EXCLUDED.model, "
                "identifiers = EXCLUDED.identifiers, last_seen = now()",
                [(self.tenant, d.device_id, d.name, d.manufacturer, d.model, json.dumps(list(d.identifiers)))
                 for d in devices.values()])
        if entities:
            await cur.executemany(
                "INSERT INTO core.entities (tenant_id, entity_id, device_id, domain, measurement, device_class, "
                "state_class, unit_original, unit_canonical, conversion, friendly_name, source) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, entity_id) DO UPDATE SET device_id = EXCLUDED.device_id, "
                "measurement = EXCLUDED.measurement, device_class = EXCLUDED.device_class, "
                "state_class = EXCLUDED.state_class, unit_original = EXCLUDED.unit_original, "
                "unit_canonical = EXCLUDED.unit_canonical, conversion = EXCLUDED.conversion, "
                "friendly_name = EXCLUDED.friendly_name, source = EXCLUDED.source, last_seen = now()",
                [(self.tenant, r.entity_id, r.device_id, r.domain, r.measurement, r.device_class, r.state_class,
                  r.unit_original, r.unit_canonical, r.conversion, r.friendly_name, r.source)
                 for r in entities.values()])

    def committed(self) -> None:
        """The transaction holding `flush`'s statements committed: forget what it carried (only that)."""
        devices, entities = self._sent
        self._sent = ({}, {})
        for device_id, device in devices.items():
            if self._pending_devices.get(device_id) is device:
                del self._pending_devices[device_id]
        for entity_id, row in entities.items():
            if self._pending_entities.get(entity_id) is row:
                del self._pending_entities[entity_id]
