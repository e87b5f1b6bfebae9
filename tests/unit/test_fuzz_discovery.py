"""Properties of MQTT discovery and its value templates: hostile configs, templates and state payloads are
refused with a reason (the message's, or one entity's through `take_rejections`), never a crash; a device's
config and its JSON states become the points they mean; the supported template forms render what Home
Assistant's Jinja would (the reference is written here, from the form)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ingest_worker.normalise import EntityState
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import Outcome
from ingest_worker.sources.discovery import DiscoverySource
from ingest_worker.sources.templates import compile_template, load_json
from tests.ha_strategies import (
    NUMERIC_KINDS,
    Kind,
    any_text,
    assert_point_is,
    dumps,
    examples,
    hostile_json,
    object_ids,
    outcome_of,
    payload_bytes,
    through_worker,
)
from tests.ha_strategies import HaState as Expected

PREFIX = "homeassistant"
CONFIG_KEYS = ("state_topic", "stat_t", "value_template", "val_tpl", "unit_of_measurement", "device_class",
               "state_class", "object_id", "default_entity_id", "name", "device", "dev", "~", "payload_on",
               "payload_off", "unique_id")
config_values = st.dictionaries(st.sampled_from(CONFIG_KEYS) | any_text, hostile_json(6), max_size=8)
topics = st.builds(lambda c, o: f"{PREFIX}/{c}/{o}/config", st.sampled_from(["sensor", "binary_sensor", "switch"])
                   | any_text, object_ids | any_text) | any_text
templates = st.sampled_from(["{{ value }}", "{{ value_json.t }}", "{{ value_json['t'] | float }}",
                             "{{ value_json.t | int(0) }}", "{{ value_json.a[0] | round(2) }}",
                             "{{ value_json.t | is_defined }}", "{% if x %}", "{{ value_json.t + 1 }}"]) | any_text


@examples(80)
@given(st.lists(st.tuples(topics, config_values.map(dumps) | payload_bytes), max_size=5),
       st.lists(payload_bytes | st.fixed_dictionaries({"t": hostile_json(3), "a": hostile_json(3)}).map(dumps),
                max_size=5))
def test_hostile_configs_and_states_are_refused_with_a_reason(configs: list[tuple[str, bytes]],
                                                                states: list[bytes]) -> None:
    source = DiscoverySource(PREFIX, tenant_prefix="")
    learned: list[str] = []
    for topic, payload in configs:
        outcome = outcome_of(lambda topic=topic, payload=payload: source.handle(topic, payload))  # type: ignore[misc]
        if not isinstance(outcome, Rejected):
            learned.extend(outcome.subscribe)
        _reasons_are_known(source.take_rejections())
    for topic in learned:
        for payload in states:
            outcome = outcome_of(lambda topic=topic, payload=payload: source.handle(topic, payload))  # type: ignore[misc]
            _reasons_are_known(source.take_rejections())
            if not isinstance(outcome, Rejected):
                for state in outcome.states:
                    through_worker(state)


def _reasons_are_known(rejections: list[Rejected]) -> None:
    for rejected in rejections:
        assert isinstance(rejected.reason, Reason)
        assert rejected.detail.strip()


@examples(150)
@given(templates, payload_bytes)
def test_any_template_is_refused_as_unsupported_or_renders_or_refuses_with_a_reason(text: str,
                                                                                      payload: bytes) -> None:
    compiled = outcome_of(lambda: compile_template(text))
    if isinstance(compiled, Rejected):
        assert compiled.reason is Reason.UNSUPPORTED_TEMPLATE
        return
    decoded = payload.decode("utf-8", "replace")
    rendered = outcome_of(lambda: compiled.render(decoded, load_json(decoded)))
    assert isinstance(rendered, str | Rejected)


@examples(200)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12), st.integers(0, 4),
       st.sampled_from(["plain", "float", "int", "round"]))
def test_the_supported_forms_render_what_home_assistant_renders(number: float, digits: int, form: str) -> None:
    template, expected = {
        "plain": ("{{ value_json.sensor.t }}", str(number)),
        "float": ("{{ value_json['sensor']['t'] | float }}", str(float(number))),
        "int": ("{{ value_json.sensor.t | int }}", str(math.trunc(number))),
        "round": (f"{{{{ value_json.sensor.t | round({digits}) }}}}",
                  str(round(number, digits)) if digits else str(round(number))),
    }[form]
    payload = json.dumps({"sensor": {"t": number}})
    assert compile_template(template).render(payload, load_json(payload)) == expected


@examples(80)
@given(st.sampled_from(NUMERIC_KINDS), object_ids, st.from_regex(r"0x[0-9a-f]{16}", fullmatch=True),
       st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=4))
def test_a_device_config_and_its_states_become_their_points(kind: Kind, object_id: str, ieee: str,
                                                            values: list[float]) -> None:
    assert kind.convert is not None
    state_topic = f"zigbee2mqtt/{ieee}"
    config = {"unit_of_measurement": kind.unit, "device_class": kind.device_class, "state_class": "measurement",
              "value_template": "{{ value_json.reading }}", "state_topic": state_topic, "object_id": object_id,
              "device": {"identifiers": [f"zigbee2mqtt_{ieee}"], "name": "dev", "manufacturer": "Aqara"}}
    source = DiscoverySource(PREFIX, tenant_prefix="")
    assert source.handle(f"{PREFIX}/sensor/{ieee}/{object_id}/config", json.dumps(config).encode()).subscribe == (
        state_topic,)
    previous = None
    for value in values:
        payload = json.dumps({"reading": value, "linkquality": 120}).encode()
        outcome = source.handle(state_topic, payload)
        repeated, previous = payload == previous, payload
        if repeated:  # the same payload again: no new state, as in Home Assistant (no force_update)
            assert outcome == Outcome(ignored="repeated_payload")
            continue
        (state,) = outcome.states
        assert isinstance(state, EntityState)
        received_ns = 1_764_496_800_123_456_000  # microseconds: HaState keeps a datetime
        line = through_worker(state, received_ns)
        assert not isinstance(line, Rejected), line
        # The state is HA's rendering (str of the float) and discovery carries no time: receipt time.
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=received_ns // 1_000)
        expected = Expected(f"sensor.{object_id}", str(value), {}, at, kind.measurement,
                            value=kind.convert(float(str(value))), device_id=f"zigbee2mqtt_{ieee}")
        assert_point_is(line, expected)

