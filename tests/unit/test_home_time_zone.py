"""The home's time zone from Home Assistant's get_config: validated, and carried by the registry store."""

from __future__ import annotations

import pytest

from ingest_worker.store.registry import RegistryStore
from ingest_worker.store.time_zone import home_time_zone


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "America/Argentina/Buenos_Aires", "UTC"])
def test_iana_zones_are_taken(zone: str) -> None:
    assert home_time_zone({"time_zone": zone, "unit_system": {}}) == zone


@pytest.mark.parametrize("config", [{"time_zone": "Mars/Olympus_Mons"}, {"time_zone": "../etc/passwd"},
                                    {"time_zone": ""}, {"time_zone": 1}, {}, None, "Europe/Amsterdam"])
def test_anything_else_is_left_out(config: object) -> None:
    assert home_time_zone(config) is None


def test_the_registry_store_writes_a_zone_once_per_value() -> None:
    registry = RegistryStore("home")
    registry.set_time_zone("Europe/Amsterdam")
    assert registry.has_pending
    pending = registry.snapshot()
    assert pending is not None
    assert (pending.time_zone, pending.areas, pending.entities) == ("Europe/Amsterdam", (), ())
    registry.set_time_zone("Europe/Amsterdam")  # the next connection reads the same zone
    assert registry.snapshot() is None
    registry.set_time_zone("Asia/Tokyo")
    later = registry.snapshot()
    assert later is not None
    assert later.time_zone == "Asia/Tokyo"
