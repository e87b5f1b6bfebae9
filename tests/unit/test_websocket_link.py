"""The HA link without a network: how frames (single and coalesced) become pipeline items, which
history rows are written, the resume point's rules, the registry parsing, and the settings it needs."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest

from ingest_worker.ha_link import HaLink, HaLinkSettings, _Connection
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.settings import ConfigError, load_settings
from ingest_worker.sources import websocket as ws
from ingest_worker.sources.websocket import WebsocketSource
from ingest_worker.store.registry import RegistryStore, parse_areas, parse_devices, parse_entities
from ingest_worker.store.resume import ResumePoint
from tests.unit.test_settings import VALID

LU = "2025-04-30T10:00:00.000001+00:00"
LU_US = 1_746_007_200_000_001


def state_event(sub: int, entity: str, value: str, last_updated: str = LU) -> dict[str, Any]:
    new_state = {"entity_id": entity, "state": value, "attributes": {}, "last_updated": last_updated,
                 "last_changed": last_updated}
    return {"id": sub, "type": "event", "event": {"event_type": "state_changed",
                                                   "data": {"entity_id": entity, "new_state": new_state}}}


def link(registry: RegistryStore | None = None) -> tuple[HaLink, ResumePoint, _Connection]:
    resume = ResumePoint("home")
    ha = HaLink(HaLinkSettings("http://127.0.0.1:8123", "t"), resume, registry or RegistryStore("home"), lambda: None)
    conn = _Connection(cast(Any, None))
    conn.state_sub, conn.registry_subs, conn.holding = 2, {3: "areas"}, False
    return ha, resume, conn


def test_a_coalesced_frame_is_split_into_one_item_per_message() -> None:
    ha, _, conn = link()
    loop = asyncio.new_event_loop()
    future: asyncio.Future[dict[str, object]] = loop.create_future()
    conn.pending[7] = future
    frame = [state_event(2, "sensor.a", "1"), {"id": 7, "type": "result", "success": True, "result": None},
             state_event(2, "sensor.b", "2"), state_event(99, "sensor.c", "3"), 42, {"id": 8}]
    text = json.dumps(frame)
    ha._frame(conn, text, json.loads(text))
    items = ha.take()
    assert [item.topic for item in items] == [ws.EVENT_TOPIC, ws.EVENT_TOPIC, ws.FRAME_TOPIC, ws.FRAME_TOPIC]
    assert future.result()["id"] == 7  # results go to the waiting request, not the pipeline
    loop.close()
    source = WebsocketSource()
    assert [source.handle(i.topic, i.payload).states[0].state for i in items[:2]] == ["1", "2"]
    for item in items[2:]:
        with pytest.raises(Rejected) as caught:
            source.handle(item.topic, item.payload)
        assert caught.value.reason == Reason.SCHEMA


def test_a_single_message_keeps_its_exact_text_and_a_broken_frame_is_dead_lettered() -> None:
    ha, _, conn = link()
    text = json.dumps(state_event(2, "sensor.a", "1"), indent=1)
    ha._frame(conn, text, json.loads(text))
    ha._frame(conn, '{"id": 2, "type": "ev', ha_parse('{"id": 2, "type": "ev'))
    first, broken = ha.take()
    assert first.payload == text.encode()
    assert broken.topic == ws.FRAME_TOPIC
    with pytest.raises(Rejected) as caught:
        WebsocketSource().handle(broken.topic, broken.payload)
    assert caught.value.reason == Reason.INVALID_JSON


def ha_parse(text: str) -> object:
    return asyncio.run(HaLink._parse(text))


def test_live_events_are_held_while_the_gap_is_filled() -> None:
    ha, _, conn = link()
    conn.holding = True
    text = json.dumps(state_event(2, "sensor.a", "1"))
    ha._frame(conn, text, json.loads(text))
    assert ha.take() == []
    ha._release(conn)
    assert [item.topic for item in ha.take()] == [ws.EVENT_TOPIC]


def test_history_rows_skip_the_synthetic_start_state_and_report_the_newest() -> None:
    ha, _, _ = link()
    start_us = 1_746_007_200_000_000
    result = {"sensor.a": [{"s": "1", "a": {}, "lu": start_us / 1e6},  # the state at the start: HA stamps it so
                           {"s": "2", "a": {}, "lu": (start_us + 1) / 1e6},
                           {"s": "3", "a": {}, "lu": (start_us + 5_000_000) / 1e6, "lc": 1.0}],
              "sensor.b": [{"s": "on", "lc": (start_us + 2) / 1e6}]}
    rows, newest = ha._queue_history(result, start_us)
    items = ha.take()
    assert (rows, newest) == (3, start_us + 5_000_000)
    assert [item.topic for item in items] == [ws.history_topic("sensor.a")] * 2 + [ws.history_topic("sensor.b")]
    source = WebsocketSource()
    assert [source.handle(i.topic, i.payload).states[0].state for i in items] == ["2", "3", "on"]


def test_resume_point_moves_only_after_the_gap_is_closed_and_never_back() -> None:
    resume = ResumePoint("home")
    resume.taken(100)
    assert resume.snapshot() is None  # gap not closed: items before it may still be missing
    resume.taken(90, close=True)
    assert resume.snapshot() == 100
    resume.committed_us = 100
    assert resume.snapshot() is None  # nothing newer
    resume.reopen()
    resume.taken(200)
    assert resume.snapshot() is None  # disconnected: frozen until the next fill closes
    resume.taken(None, close=True)
    assert resume.snapshot() == 200


def test_link_reports_what_the_pipeline_took() -> None:
    ha, resume, conn = link()
    text = json.dumps(state_event(2, "sensor.a", "1"))
    ha._frame(conn, text, json.loads(text))
    ha._close_at_take = True
    ha.take()
    assert resume.snapshot() == LU_US


def test_registries_parse_and_feed_device_lookups() -> None:
    registry = RegistryStore("home")
    registry.replace_areas(parse_areas([{"area_id": "kitchen", "name": "Kitchen", "floor_id": None}, "junk"]))
    registry.replace_devices(parse_devices([{"id": "d1", "name": "Plug", "name_by_user": "Fridge plug",
                                             "manufacturer": "Acme", "model": "P1", "area_id": "kitchen",
                                             "identifiers": [["zha", "00:11"], ["bad"]]}]))
    registry.replace_entities(parse_entities([{"entity_id": "sensor.fridge_power", "device_id": "d1",
                                               "area_id": None, "name": None, "original_name": "Power"}]))
    pending = registry.snapshot()
    assert pending is not None
    assert [(a.area_id, a.name) for a in pending.areas] == [("kitchen", "Kitchen")]
    (device,) = pending.devices
    assert (device.name, device.identifiers, device.area_id) == ("Fridge plug", ("zha:00:11",), "kitchen")
    assert [(e.entity_id, e.device_id, e.name) for e in pending.entities] == [("sensor.fridge_power", "d1", "Power")]
    assert registry.device_of("sensor.fridge_power") == "d1"
    assert registry.device_of("sensor.other") is None
    assert registry.snapshot() is None  # written once
    registry.replace_devices(parse_devices([{"id": "d1", "name": "Plug", "name_by_user": "Fridge plug",
                                             "manufacturer": "Acme", "model": "P1", "area_id": "kitchen",
                                             "identifiers": [["zha", "00:11"]]}]))
    assert registry.snapshot() is None  # the same list again changes nothing


def test_websocket_needs_url_and_token_each_named(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        clean_env.setenv(key, value)
    clean_env.setenv("HATS_SOURCES", "eventstream,websocket")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HATS_HA_URL is not set" in str(caught.value)
    assert "HATS_HA_TOKEN is not set" in str(caught.value)


def test_websocket_only_needs_no_broker_and_other_errors_are_named_with_it(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        if not key.startswith("HATS_MQTT"):
            clean_env.setenv(key, value)
    clean_env.setenv("HATS_SOURCES", "websocket")
    clean_env.setenv("HATS_HA_URL", "http://127.0.0.1:8123/")
    clean_env.setenv("HATS_HA_TOKEN", "secret")
    settings = load_settings()
    assert (settings.mqtt_sources(), settings.ha_url) == ((), "http://127.0.0.1:8123")
    assert HaLinkSettings(settings.ha_url, "t").ws_url == "ws://127.0.0.1:8123/api/websocket"
    clean_env.delenv("HATS_HA_TOKEN")
    clean_env.delenv("HATS_INFLUX_WRITE_URL")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HATS_HA_TOKEN is not set" in str(caught.value)
    assert "HATS_INFLUX_WRITE_URL is not set" in str(caught.value)
    assert "HATS_MQTT" not in str(caught.value)


def test_bad_ha_url_is_named(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        clean_env.setenv(key, value)
    clean_env.setenv("HATS_SOURCES", "websocket")
    clean_env.setenv("HATS_HA_URL", "homeassistant.local:8123")
    clean_env.setenv("HATS_HA_TOKEN", "secret")
    with pytest.raises(ConfigError, match="HATS_HA_URL is invalid"):
        load_settings()


def test_registry_names_are_cleaned_like_every_other_name_for_core() -> None:
    """A NUL or a lone surrogate (valid in JSON, not in PostgreSQL text) would fail the flush's transaction."""
    (area,) = parse_areas([{"area_id": "kitchen", "name": "Kit\u0000chen \ud800", "floor_id": None}])
    (device,) = parse_devices([{"id": "d1", "name": "Plug \udfff", "manufacturer": "Acme"}])
    (entity,) = parse_entities([{"entity_id": "sensor.x", "name": "x" * 300}])
    assert area.name.encode("utf-8") == b"Kitchen ?"
    assert device.name is not None
    assert device.name.encode("utf-8") == b"Plug ?"
    assert entity.name == "x" * 255
