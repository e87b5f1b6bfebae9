"""Properties of the whole CPU path (`Pipeline.process` with every source, in the worker's routing order):
whatever arrives, nothing escapes, no parser fails with anything but `Rejected` (no `internal_error` dead
letter), every dead letter has a known reason, every line reads back, and everything the flush would write
to PostgreSQL — dead letters' topics and details, `core.entities` and `core.devices` rows — is text
PostgreSQL can hold (no NUL, no lone surrogate): one such value fails the flush's transaction, and every
retry of it."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import example, given
from hypothesis import strategies as st

from ingest_worker.mqtt_link import Incoming
from ingest_worker.pipeline import Pipeline
from ingest_worker.rejections import Reason
from ingest_worker.sources.base import Source
from ingest_worker.sources.discovery import DiscoverySource
from ingest_worker.sources.eventstream import EventstreamSource
from ingest_worker.sources.recorder import RecorderSource
from ingest_worker.sources.statestream import StatestreamSource
from ingest_worker.sources.status import StatusSource
from ingest_worker.sources.websocket import EVENT_TOPIC, HISTORY_TOPIC, STATE_TOPIC, WebsocketSource
from ingest_worker.store.deadletters import MAX_DETAIL_CHARS
from ingest_worker.store.metadata import MetadataStore, column_text
from tests.ha_strategies import any_text, dumps, examples, hostile_json, payload_bytes
from tests.lineprotocol_reader import read_line

EVENTS, STATESTREAM, PREFIX, STATE_TOPIC_Z2M = "ha/events", "ha/statestream", "homeassistant", "z2m/dev"
CONFIG = f"{PREFIX}/sensor/dev/temp/config"


def sources() -> list[Source]:
    return [WebsocketSource(), RecorderSource(), StatusSource("homeassistant/status"), EventstreamSource(EVENTS),
            StatestreamSource(STATESTREAM), DiscoverySource(PREFIX)]


def config(identifier: object) -> bytes:
    return json.dumps({"state_topic": STATE_TOPIC_Z2M, "value_template": "{{ value_json.t }}",
                       "unit_of_measurement": "°C", "device_class": "temperature",
                       "device": {"identifiers": [identifier], "name": "dev"}}).encode()


topics = st.sampled_from([EVENTS, f"{STATESTREAM}/sensor/x/state", CONFIG, STATE_TOPIC_Z2M, EVENT_TOPIC, STATE_TOPIC,
                          "recorder:state:sensor.x", "homeassistant/status"]) \
    | any_text.map(lambda t: HISTORY_TOPIC + t) | any_text
messages = st.lists(st.tuples(topics, payload_bytes | hostile_json().map(dumps)
                              | hostile_json(4).map(config)), max_size=10)


def storable(text: object) -> bool:
    if not isinstance(text, str):
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@examples(120)
@given(messages)
@example([(CONFIG, config("dev\x00id")), (STATE_TOPIC_Z2M, b'{"t": 21.5}')])  # a NUL in a device id once
@example([(HISTORY_TOPIC + "sensor.a\x00b", b'{"s": "1", "lu": 1.7e9}')])  # failed the flush; so did a NUL
@example([(HISTORY_TOPIC + "sensor.\ud800", b'{"s": "1", "lu": 1.7e9}')])  # or a lone surrogate in a topic
def test_nothing_escapes_and_everything_the_flush_would_write_is_storable(
        items: list[tuple[str, bytes]]) -> None:
    metadata = MetadataStore("fuzz", 10_000)
    pipeline = Pipeline("fuzz", sources(), None, metadata, None, "", None,  # type: ignore[arg-type]
                        262_144, 10**9, 60.0)
    pipeline.process([Incoming(topic, payload, i, 1, 1, 1_764_496_800_000_000_000)
                      for i, (topic, payload) in enumerate(items)], force=True)
    lines = list(pipeline._lines)
    _, letters = pipeline.discard()
    for line in lines:
        read_line(line)
    for letter in letters:
        assert letter.reason in set(Reason), letter
        assert letter.reason != Reason.INTERNAL_ERROR, letter
        assert letter.detail.strip()
        assert storable(column_text(letter.topic, None))
        assert storable(column_text(letter.detail, MAX_DETAIL_CHARS))
    for row in metadata._pending_entities.values():
        assert all(storable(value) for value in dataclasses.astuple(row)), row
    for device in metadata._pending_devices.values():
        assert all(storable(value) for value in (device.device_id, device.name, device.manufacturer, device.model,
                                                 *device.identifiers)), device
