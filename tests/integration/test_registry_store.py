"""Home Assistant's registry fields reach `core.entities` in the flush that creates the entity's row.

The worker parses the next batch while a flush is in flight, and that flush's metadata statement writes
whatever is pending when it runs (later than the hooks' snapshot). So a state can be parsed before,
between or after the flush's statements; in every order the row must commit with its registry name, not
one flush later, and not never. The real MetadataStore and RegistryStore against PostgreSQL, with the
pipeline's order of statements in one transaction (metadata first, then the hooks), step by step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from ingest_worker.normalise import EntityState
from ingest_worker.store.metadata import MetadataStore
from ingest_worker.store.registry import Pending, RegistryStore, parse_entities
from tests.conftest import Tenant

pytestmark = pytest.mark.integration

ENTITY = "sensor.probe_temperature"
DEVICE = "dev-probe"
AsyncConn = psycopg.AsyncConnection[tuple[object, ...]]


class Worker:
    """The two stores as the worker wires them: the source asks `device_of` for each state it parses."""

    def __init__(self, tenant: Tenant, conn: AsyncConn) -> None:
        self.tenant, self.conn = tenant, conn
        self.metadata = MetadataStore(tenant.name, budget=100)
        self.registry = RegistryStore(tenant.name)

    def list_registry(self) -> None:
        self.registry.replace_entities(parse_entities([
            {"entity_id": ENTITY, "device_id": DEVICE, "area_id": None, "name": None, "original_name": "Temperature"},
            {"entity_id": "sensor.never_reported", "device_id": DEVICE, "area_id": None, "name": "Quiet",
             "original_name": None}]))

    def parse_state(self) -> None:
        assert self.metadata.admit(ENTITY)
        state = EntityState(ENTITY, "21.5", {"unit_of_measurement": "°C", "device_class": "temperature"},
                            source="websocket", device_id=self.registry.device_of(ENTITY))
        self.metadata.note(state, "temperature")

    async def flush(self, mark: Pending | None, during: Callable[[], None] = lambda: None) -> None:
        """One flush's transaction; `during` runs between its metadata statement and the hooks."""
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await self.metadata.flush(cur)
            during()
            if mark is not None:
                await self.registry.store(cur, mark)
        self.metadata.committed()

    async def row(self) -> tuple[object, ...] | None:
        cur = await self.conn.execute("SELECT device_id, registry_name FROM core.entities "
                                      "WHERE tenant_id = %s AND entity_id = %s", (self.tenant.name, ENTITY))
        return await cur.fetchone()


async def connected(tenant: Tenant) -> AsyncConn:
    return await psycopg.AsyncConnection.connect(tenant.env["HATS_PG_DSN"], autocommit=True)


def test_a_state_parsed_while_the_registry_update_is_in_flight_gets_its_name_with_its_row(tenant: Tenant) -> None:
    async def scenario() -> None:
        async with await connected(tenant) as conn:
            worker = Worker(tenant, conn)
            worker.list_registry()
            first = worker.registry.snapshot()  # the registry's flush starts: no row for the entity yet
            assert first is not None
            assert {e.entity_id for e in first.entities} == {ENTITY, "sensor.never_reported"}
            # Its metadata statement already ran when the current states are parsed; its UPDATE finds no row.
            await worker.flush(first, during=worker.parse_state)
            assert await worker.row() is None
            await worker.flush(worker.registry.snapshot())  # the flush that writes the parsed state's row
            assert await worker.row() == (DEVICE, "Temperature")
    asyncio.run(scenario())


def test_a_state_parsed_after_the_snapshot_gets_its_name_in_the_same_transaction(tenant: Tenant) -> None:
    async def scenario() -> None:
        async with await connected(tenant) as conn:
            worker = Worker(tenant, conn)
            worker.list_registry()
            await worker.flush(worker.registry.snapshot())  # listed before any state: no rows to update
            mark = worker.registry.snapshot()  # the next flush starts…
            worker.parse_state()  # …and the entity's first state is parsed before its metadata statement
            await worker.flush(mark)
            assert await worker.row() == (DEVICE, "Temperature")  # this flush, not the next one
    asyncio.run(scenario())


def test_nothing_is_written_again_once_written_and_an_unlisted_entry_is_not_retried(tenant: Tenant) -> None:
    async def scenario() -> None:
        async with await connected(tenant) as conn:
            worker = Worker(tenant, conn)
            worker.list_registry()
            worker.parse_state()
            await worker.flush(worker.registry.snapshot())
            assert await worker.row() == (DEVICE, "Temperature")
            worker.parse_state()  # the same entity again: its row has its name, nothing to write
            again = worker.registry.snapshot()
            assert again is None or not again.entities
            await worker.flush(again)
            worker.registry.replace_entities(parse_entities([{"entity_id": ENTITY, "device_id": DEVICE,
                                                              "area_id": None, "name": "Probe",
                                                              "original_name": "Temperature"}]))
            await worker.flush(worker.registry.snapshot())  # renamed; the quiet entity is no longer listed
            assert await worker.row() == (DEVICE, "Probe")
            assert worker.registry.snapshot() is None
    asyncio.run(scenario())
