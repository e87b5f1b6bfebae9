"""Home Assistant's registries (areas, devices, entities) in PostgreSQL `core`, from the WebSocket source.

The link lists `config/area_registry/list`, `config/device_registry/list` and
`config/entity_registry/list` on every connection and again after a `*_registry_updated` event; this
store keeps the latest lists in memory, answers the source's "which device is this entity on", and
writes what changed with the next flush (a `FlushHook`, in the flush's transaction):

* `core.areas`: id and name (upserted; an area deleted in Home Assistant stays, unreferenced).
* `core.devices`: name (the user's `name_by_user` first), manufacturer, model, identifiers
  (`domain:id`), `area_id`.
* `core.entities`: `device_id`, the entity's own `area_id` (NULL when it follows its device's area, as
  in Home Assistant) and `registry_name` (the user's name, else the integration's). Only rows the
  pipeline has created are updated: a registry entry carries no measurement. An entry whose row does
  not exist yet is written again once the source has emitted a state of that entity: in the flush
  whose metadata creates the row, after it in the same transaction, so the row never commits with its
  device but without its registry name. That flush may be the one already under way when the state is
  parsed (the metadata store writes what is pending when its statement runs, later than the hooks'
  snapshot), so `store` also takes the entries seen since its snapshot; and a state parsed while the
  UPDATE that will find no row is still in flight is retried like one parsed after it.
* `core.tenants.time_zone`: the home's zone from `get_config` (`store/time_zone.py`), read with the
  registries on every connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg

from ingest_worker.store.metadata import column_text
from ingest_worker.store.time_zone import store_home_time_zone

log = logging.getLogger(__name__)

MAX_IDENTIFIERS = 16
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Area:
    area_id: str
    name: str
    floor_id: str | None = None


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    name: str | None
    manufacturer: str | None
    model: str | None
    area_id: str | None
    identifiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RegistryEntity:
    entity_id: str
    device_id: str | None
    area_id: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class Pending:
    areas: tuple[Area, ...]
    devices: tuple[Device, ...]
    entities: tuple[RegistryEntity, ...]
    time_zone: str | None = None
    # Entries seen since the snapshot whose rows the flush's metadata may create: fixed by the first
    # `store` call, so a transaction PostgreSQL makes retry writes them again.
    late: set[str] = field(default_factory=set)


def _entries(result: object, what: str) -> list[Mapping[str, object]]:
    if not isinstance(result, list):
        log.warning("%s: expected a list, got %s; ignored", what, type(result).__name__)
        return []
    entries: list[Mapping[str, object]] = [entry for entry in result if isinstance(entry, dict)]
    if len(entries) != len(result):
        log.warning("%s: %d entries that are not objects ignored", what, len(result) - len(entries))
    return entries


def parse_areas(result: object) -> list[Area]:
    areas = []
    for entry in _entries(result, "config/area_registry/list"):
        area_id = column_text(entry.get("area_id"))
        if area_id is not None:
            areas.append(Area(area_id, column_text(entry.get("name")) or area_id, column_text(entry.get("floor_id"))))
    return areas


def _identifiers(value: object) -> tuple[str, ...]:
    found: list[str] = []
    for pair in value if isinstance(value, list) else []:
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
            text = column_text(f"{pair[0]}:{pair[1]}")
            if text:
                found.append(text)
    return tuple(found[:MAX_IDENTIFIERS])


def parse_devices(result: object) -> list[Device]:
    devices = []
    for entry in _entries(result, "config/device_registry/list"):
        device_id = column_text(entry.get("id"))
        if device_id is not None:
            devices.append(Device(device_id, column_text(entry.get("name_by_user")) or column_text(entry.get("name")),
                                  column_text(entry.get("manufacturer")), column_text(entry.get("model")),
                                  column_text(entry.get("area_id")), _identifiers(entry.get("identifiers"))))
    return devices


def parse_entities(result: object) -> list[RegistryEntity]:
    entities = []
    for entry in _entries(result, "config/entity_registry/list"):
        entity_id = column_text(entry.get("entity_id"))
        if entity_id is not None:
            entities.append(RegistryEntity(entity_id, column_text(entry.get("device_id")),
                                           column_text(entry.get("area_id")),
                                           column_text(entry.get("name")) or column_text(entry.get("original_name"))))
    return entities


class RegistryStore:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self._areas: dict[str, Area] = {}
        self._devices: dict[str, Device] = {}
        self._entities: dict[str, RegistryEntity] = {}
        self._pending_areas: dict[str, Area] = {}
        self._pending_devices: dict[str, Device] = {}
        self._pending_entities: dict[str, RegistryEntity] = {}
        # Entries whose core.entities row did not exist when written, and those of them seen since.
        self._unmatched: set[str] = set()
        self._retry: set[str] = set()
        # The entries of the snapshot whose `store` has not run yet (it may find no row for them either),
        # and those of them seen meanwhile: retried if it does not.
        self._in_flight: frozenset[str] = frozenset()
        self._seen_in_flight: set[str] = set()
        self._time_zone: str | None = None
        self._pending_time_zone: str | None = None

    @property
    def has_pending(self) -> bool:
        """Changes wait for a flush (the worker flushes for them even without points)."""
        return bool(self._pending_areas or self._pending_devices or self._pending_entities
                    or self._pending_time_zone)

    @property
    def entity_ids(self) -> tuple[str, ...]:
        return tuple(self._entities)

    def device_of(self, entity_id: str) -> str | None:
        """The registry's device of an entity the source is about to emit (None if it has none)."""
        if entity_id in self._unmatched:
            self._retry.add(entity_id)
        elif entity_id in self._in_flight:
            self._seen_in_flight.add(entity_id)
        entry = self._entities.get(entity_id)
        return entry.device_id if entry is not None else None

    def area_name(self, area_id: str | None) -> str | None:
        area = self._areas.get(area_id) if area_id else None
        return area.name if area else None

    def replace_areas(self, areas: Iterable[Area]) -> None:
        self._areas = self._replace(self._areas, {a.area_id: a for a in areas}, self._pending_areas)

    def replace_devices(self, devices: Iterable[Device]) -> None:
        self._devices = self._replace(self._devices, {d.device_id: d for d in devices}, self._pending_devices)

    def replace_entities(self, entities: Iterable[RegistryEntity]) -> None:
        self._entities = self._replace(self._entities, {e.entity_id: e for e in entities}, self._pending_entities)
        self._unmatched &= self._entities.keys()  # no longer listed: no registry fields to write for it

    def set_time_zone(self, zone: str) -> None:
        """Home Assistant's validated time zone (written with the next flush once per connection's value)."""
        if zone != self._time_zone:
            self._time_zone = self._pending_time_zone = zone

    @staticmethod
    def _replace(current: dict[K, V], new: dict[K, V], pending: dict[K, V]) -> dict[K, V]:
        for key, value in new.items():
            if current.get(key) != value:
                pending[key] = value
        return new

    # -- FlushHook ----------------------------------------------------------------------------------
    def snapshot(self) -> Pending | None:
        for entity_id in self._retry:
            entry = self._entities.get(entity_id)
            if entry is not None:
                self._pending_entities.setdefault(entity_id, entry)
        self._retry.clear()
        if not (self.has_pending or self._unmatched):
            return None  # nothing to write, and no row this flush creates can be an entry's
        pending = Pending(tuple(self._pending_areas.values()), tuple(self._pending_devices.values()),
                          tuple(self._pending_entities.values()), self._pending_time_zone)
        self._pending_areas, self._pending_devices, self._pending_entities = {}, {}, {}
        self._pending_time_zone = None
        self._in_flight = frozenset(e.entity_id for e in pending.entities)
        return pending

    async def store(self, cur: psycopg.AsyncCursor[tuple[object, ...]], snapshot: object) -> None:
        assert isinstance(snapshot, Pending)
        if snapshot.time_zone is not None:
            await store_home_time_zone(cur, self.tenant, snapshot.time_zone)
        if snapshot.areas:
            await cur.executemany(
                "INSERT INTO core.areas (tenant_id, area_id, name, floor_id) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, area_id) DO UPDATE SET name = EXCLUDED.name, floor_id = EXCLUDED.floor_id, "
                "last_seen = now()",
                [(self.tenant, a.area_id, a.name, a.floor_id) for a in snapshot.areas])
        if snapshot.devices:
            await cur.executemany(
                "INSERT INTO core.devices (tenant_id, device_id, name, manufacturer, model, identifiers, area_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, device_id) DO UPDATE SET "
                "name = EXCLUDED.name, manufacturer = EXCLUDED.manufacturer, model = EXCLUDED.model, "
                "identifiers = EXCLUDED.identifiers, area_id = EXCLUDED.area_id",
                [(self.tenant, d.device_id, d.name, d.manufacturer, d.model, json.dumps(list(d.identifiers)),
                  d.area_id) for d in snapshot.devices])
        # Runs after the flush's metadata statements: rows they created for entries seen since the
        # snapshot get their registry fields in this transaction, not one flush later (or never).
        snapshot.late.update(self._retry)
        entries = {e.entity_id: e for e in snapshot.entities}
        for entity_id in snapshot.late:
            late_entry = self._entities.get(entity_id)
            if late_entry is not None:
                entries.setdefault(entity_id, late_entry)
        if entries:
            entities = tuple(entries.values())
            await cur.execute(
                "UPDATE core.entities e SET device_id = coalesce(v.device_id, e.device_id), area_id = v.area_id, "
                "registry_name = v.name "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS v(entity_id, device_id, area_id, name) "
                "WHERE e.tenant_id = %s AND e.entity_id = v.entity_id RETURNING e.entity_id",
                ([e.entity_id for e in entities], [e.device_id for e in entities], [e.area_id for e in entities],
                 [e.name for e in entities], self.tenant))
            matched = {str(row[0]) for row in await cur.fetchall()}
            for entry in entities:
                if entry.entity_id in matched:
                    self._unmatched.discard(entry.entity_id)
                    self._retry.discard(entry.entity_id)
                else:
                    self._unmatched.add(entry.entity_id)  # a late one stays in _retry: the next flush's row
                    if entry.entity_id in self._seen_in_flight:
                        self._retry.add(entry.entity_id)
        self._in_flight, self._seen_in_flight = frozenset(), set()
