"""MQTT filter algebra, against the broker's own rules (MQTT 3.1.1 §4.7) and paho's matcher."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ingest_worker.settings import WorkerSettings
from ingest_worker.sources.base import Outcome
from ingest_worker.sources.discovery import DiscoverySource
from ingest_worker.sources.registry import build_sources, subscription_filters
from ingest_worker.topic_filters import covers, overlap, problem

SETTINGS = {"influx_write_url": "http://127.0.0.1:8087", "influx_username": "w", "influx_password": "p",
            "ingest_dsn": "postgresql://x@127.0.0.1/hats", "mqtt_username": "w", "mqtt_password": "p"}


@pytest.mark.parametrize("topic_filter", ["zigbee2mqtt/+", "zigbee2mqtt/#", "tele/+/SENSOR", "a/b"])
def test_well_formed_filters_pass(topic_filter: str) -> None:
    assert problem(topic_filter) is None


@pytest.mark.parametrize("topic_filter", ["", "#", "+/x", "a/#/b", "a/b#", "a/+b", "$SYS/#", "/a"])
def test_malformed_or_unbounded_filters_are_named(topic_filter: str) -> None:
    assert problem(topic_filter) is not None


@pytest.mark.parametrize(("first", "second", "expected"), [
    ("zigbee2mqtt/+", "homeassistant/statestream/+/+/+", False),
    ("zigbee2mqtt/+", "zigbee2mqtt/bridge/state", False),
    ("zigbee2mqtt/#", "zigbee2mqtt/bridge/state", True),
    ("homeassistant/+", "homeassistant/events", True),
    ("homeassistant/#", "homeassistant/+/+/config", True),
    ("a/#", "a", True),  # `a/#` matches `a` itself
    ("a/+", "a", False),
    ("a/+/c", "a/b/+", True),
    ("a/+/c", "a/b/d", False),
])
def test_overlap_is_whether_some_topic_matches_both(first: str, second: str, expected: bool) -> None:
    assert overlap(first, second) is expected
    assert overlap(second, first) is expected
    # Cross-checked with the matcher on the witness topic when there is one without wildcards.
    for witness in (first, second):
        if "+" not in witness and "#" not in witness:
            other = second if witness == first else first
            assert covers(other, witness) is expected


def test_a_covered_state_topic_is_not_subscribed_on_its_own_and_its_unknown_neighbours_are_expected() -> None:
    source = DiscoverySource(state_filters=("zigbee2mqtt/+",))
    config = {"state_topic": "zigbee2mqtt/weather", "object_id": "weather_t", "value_template": "{{ value_json.t }}"}
    outcome = source.handle("homeassistant/sensor/0x1/t/config", json.dumps(config).encode())
    assert outcome == Outcome(ignored="config")  # the filter is subscribed already
    assert source.matches("zigbee2mqtt/weather")
    assert source.state_topics() == ()
    assert source.covers("zigbee2mqtt/other")
    assert not source.matches("zigbee2mqtt/other")
    assert not source.covers("zigbee2mqtt/bridge/state")
    # Removing it unsubscribes nothing: the filter stays.
    assert source.handle("homeassistant/sensor/0x1/t/config", b"") == Outcome(ignored="entity_removed")
    # A topic outside the filters is still subscribed when learned, and unsubscribed when unused.
    config["state_topic"] = "tasmota/tele/plug/SENSOR"
    assert source.handle("homeassistant/sensor/0x2/t/config", json.dumps(config).encode()) == Outcome(
        subscribe=("tasmota/tele/plug/SENSOR",))
    assert source.handle("homeassistant/sensor/0x2/t/config", b"") == Outcome(
        unsubscribe=("tasmota/tele/plug/SENSOR",))


def test_state_filters_come_from_the_settings_under_the_prefix_and_are_shared() -> None:
    settings = WorkerSettings(**SETTINGS, topic_prefix="hats/acme/")  # type: ignore[arg-type]
    filters = subscription_filters(build_sources(settings))
    assert ("hats/acme/zigbee2mqtt/+", True) in filters
    assert ("hats/acme/homeassistant/+/+/config", False) in filters
    empty = WorkerSettings(**SETTINGS, discovery_state_filters="")  # type: ignore[arg-type]
    assert empty.discovery_state_filter_list() == ()


@pytest.mark.parametrize(("value", "named"), [
    ("homeassistant/#", "HATS_STATESTREAM_BASE"),
    ("homeassistant/+/+/config", "HATS_DISCOVERY_PREFIX"),
    ("homeassistant/events", "HATS_EVENTSTREAM_TOPIC"),
])
def test_a_state_filter_overlapping_another_sources_topics_fails_naming_both(value: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named) as info:
        WorkerSettings(**SETTINGS, discovery_state_filters=value)  # type: ignore[arg-type]
    assert "HATS_DISCOVERY_STATE_FILTERS" in str(info.value)


def test_a_malformed_state_filter_is_refused() -> None:
    with pytest.raises(ValidationError, match="whole level"):
        WorkerSettings(**SETTINGS, discovery_state_filters="zigbee2mqtt/dev+")  # type: ignore[arg-type]
