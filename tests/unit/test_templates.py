"""value_template forms devices really publish, rendered as Home Assistant renders them; the rest refused."""

from __future__ import annotations

import json

import pytest

from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.templates import (
    MAX_TEMPLATE_CHARS,
    NOT_JSON,
    ValueTemplate,
    compile_template,
    load_json,
)

# zigbee2mqtt's weather sensor state (shared DESIGN.md), plus nesting seen from Tasmota and Shelly.
PAYLOAD = json.dumps({
    "temperature": 27.34, "humidity": 44.72, "battery": 97, "linkquality": 120,
    "occupancy": True, "battery_state": None, "text_number": "21.7", "word": "abc",
    "ENERGY": {"Power": [12.5, 7], "Total": 1234.567}, "co2-level": 415,
})


def render(template: str, payload: str = PAYLOAD) -> str:
    return compile_template(template).render(payload, load_json(payload))


@pytest.mark.parametrize(("template", "expected"), [
    ('{{ value_json["temperature"] }}', "27.34"),  # the DESIGN.md config, exactly
    ("{{ value_json['temperature'] }}", "27.34"),
    ("{{ value_json.temperature }}", "27.34"),
    ("{{value_json.temperature}}", "27.34"),
    ("  {{   value_json . temperature   }}  ", "27.34"),
    ("{{- value_json.temperature -}}", "27.34"),
    ("{{ value_json.battery }}", "97"),
    ("{{ value_json.occupancy }}", "True"),
    ("{{ value_json.battery_state }}", "None"),
    ("{{ value_json['co2-level'] }}", "415"),
    ("{{ value_json.ENERGY.Total }}", "1234.567"),
    ("{{ value_json['ENERGY']['Total'] }}", "1234.567"),
    ('{{ value_json["ENERGY"].Power[0] }}', "12.5"),
    ("{{ value_json.ENERGY.Power[-1] }}", "7"),
])
def test_key_paths_render_as_jinja_would(template: str, expected: str) -> None:
    assert render(template) == expected


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ value_json.battery | float }}", "97.0"),
    ("{{ value_json.temperature | int }}", "27"),
    ("{{ value_json.text_number | int }}", "21"),  # Jinja's do_int goes through float for "21.7"
    ("{{ value_json.text_number | float }}", "21.7"),
    ("{{ value_json.temperature | round }}", "27"),  # HA's round without precision is an int
    ("{{ value_json.temperature | round(1) }}", "27.3"),
    ("{{ value_json.temperature | round(precision=1) }}", "27.3"),
    ("{{ value_json.temperature|float|round(1) }}", "27.3"),
    ("{{ value_json.ENERGY.Total | float | round(2) }}", "1234.57"),
    ("{{ value_json.word | float(0) }}", "0"),
    ("{{ value_json.word | int(0) }}", "0"),
    ("{{ value_json.word | float(-1.5) }}", "-1.5"),
    ("{{ value_json.word | int(default=0) }}", "0"),
    ("{{ value_json.battery_state | float(0) }}", "0"),
    ("{{ value_json.temperature | is_defined }}", "27.34"),
    ("{{ value_json.temperature | float() }}", "27.34"),
])
def test_filters_follow_home_assistants_forgiving_semantics(template: str, expected: str) -> None:
    assert render(template) == expected


@pytest.mark.parametrize(("template", "payload", "expected"), [
    ("{{ value }}", "21.5", "21.5"),
    ("{{ value }}", "ON", "ON"),
    ("{{ value | float }}", "21.5", "21.5"),
    ("{{ value | round(1) }}", "21.46", "21.5"),
    ("{{ value | int }}", "42", "42"),
    ("{{ value_json }}", "21.5", "21.5"),
])
def test_value_is_the_raw_payload(template: str, payload: str, expected: str) -> None:
    assert render(template, payload) == expected


def test_value_renders_even_when_the_payload_is_not_json() -> None:
    template = compile_template("{{ value }}")
    assert not template.needs_json
    assert template.render("not json {", NOT_JSON) == "not json {"


@pytest.mark.parametrize("template", [
    "{{ value_json.x * 2 }}",
    "{{ value_json.x + 1 }}",
    "{{ value | float / 10 }}",
    "{{ (value | float) }}",
    "{% if value_json.x %}on{% else %}off{% endif %}",
    "{% set x = 1 %}{{ x }}",
    "{{ states('sensor.x') }}",
    "{{ now() }}",
    "{{ value_json.x | multiply(2) }}",
    "{{ value_json.x | default(0) }}",
    "{{ value_json.x | round(1, 'floor') }}",
    "{{ value_json.x | float('nan') }}",
    "{{ value_json.x | int(base=16) }}",
    "{{ value_json.x | is_defined(1) }}",
    "{{ value_json.x if value_json.x is defined else 0 }}",
    "{{ value_json.x }} °C",
    "{{ value_json.x }}{{ value_json.y }}",
    "{{ value.x }}",
    "{{ value_json.items() }}",
    "{{ value_json[x] }}",
    "{{ value_json[1.5] }}",
    "{{ value_json['a\\'b'] }}",
    "{{ value_json. }}",
    "{{ }}",
    "value_json.x",
    "{{ value_json.x",
    "{{ value_json.x | }}",
    "{{ value_json.x | round(1 }}",
    "{{ value_json.x | round(1.5) }}",
    "{{ value_json['x' }}",
    "{{ value_json.x | float(0, 1) }}",
    "{{ json }}",
    "{{ value_json.x | float(default=) }}",
])
def test_anything_else_is_unsupported_and_named(template: str) -> None:
    with pytest.raises(Rejected) as caught:
        compile_template(template)
    assert caught.value.reason is Reason.UNSUPPORTED_TEMPLATE
    assert caught.value.reason.value == "unsupported_value_template"
    assert f"value_template {template!r}" in caught.value.detail


def test_the_detail_says_what_is_unsupported() -> None:
    with pytest.raises(Rejected) as caught:
        compile_template("{{ value_json.x | multiply(2) }}")
    assert "multiply" in caught.value.detail
    with pytest.raises(Rejected) as caught:
        compile_template("{{ states('x') }}")
    assert "'states'" in caught.value.detail


def test_an_overlong_template_is_unsupported() -> None:
    long_key = "k" * MAX_TEMPLATE_CHARS
    with pytest.raises(Rejected) as caught:
        compile_template(f"{{{{ value_json.{long_key} }}}}")
    assert caught.value.reason is Reason.UNSUPPORTED_TEMPLATE
    assert len(caught.value.detail) < 200


def test_templates_are_compiled_once_per_text() -> None:
    first = compile_template("{{ value_json.humidity }}")
    assert compile_template("{{ value_json.humidity }}") is first
    assert first == ValueTemplate("{{ value_json.humidity }}", ("humidity",))


def test_a_missing_key_is_rejected_with_its_name() -> None:
    with pytest.raises(Rejected) as caught:
        render('{{ value_json["pressure"] }}')
    assert caught.value.reason is Reason.SCHEMA
    assert caught.value.detail == "key 'pressure' missing from state payload"


def test_a_missing_nested_key_says_where() -> None:
    with pytest.raises(Rejected) as caught:
        render("{{ value_json.ENERGY.Voltage }}")
    assert caught.value.detail == "key 'Voltage' missing from state payload at value_json.ENERGY"


@pytest.mark.parametrize(("template", "reason", "fragment"), [
    ("{{ value_json.ENERGY.Power[5] }}", Reason.SCHEMA, "out of range"),
    ("{{ value_json.temperature.x }}", Reason.SCHEMA, "value_json.temperature is float"),
    ("{{ value_json.ENERGY[0] }}", Reason.SCHEMA, "value_json.ENERGY is dict"),
    ("{{ value_json.ENERGY }}", Reason.SCHEMA, "renders an object"),
    ("{{ value_json.ENERGY.Power }}", Reason.SCHEMA, "renders a list"),
    ("{{ value_json.word | float }}", Reason.SCHEMA, "float filter"),
    ("{{ value_json.word | int }}", Reason.SCHEMA, "int filter"),
    ("{{ value_json.word | round(1) }}", Reason.SCHEMA, "round filter"),
    ("{{ value_json.battery_state | float }}", Reason.SCHEMA, "got None"),
    ("{{ value_json.ENERGY | float }}", Reason.SCHEMA, "float filter"),
    ("{{ value_json.battery_state.x }}", Reason.SCHEMA, "value_json.battery_state is null"),
])
def test_render_errors_are_rejections_not_crashes(template: str, reason: Reason, fragment: str) -> None:
    with pytest.raises(Rejected) as caught:
        render(template)
    assert caught.value.reason is reason
    assert fragment in caught.value.detail


def test_value_json_on_a_non_json_payload_is_invalid_json() -> None:
    with pytest.raises(Rejected) as caught:
        render("{{ value_json.temperature }}", "21.5 °C")
    assert caught.value.reason is Reason.INVALID_JSON


@pytest.mark.parametrize(("payload", "expected"), [("1e999", "0"), ("nan", "0"), ("-inf", "0")])
def test_int_of_non_finite_falls_back_to_its_default(payload: str, expected: str) -> None:
    assert render("{{ value | int(0) }}", payload) == expected


def test_round_of_infinity_without_default_is_rejected() -> None:
    with pytest.raises(Rejected) as caught:
        render("{{ value | round }}", "inf")
    assert caught.value.reason is Reason.SCHEMA


def test_huge_values_in_details_are_clipped() -> None:
    payload = json.dumps({"x": "y" * 10_000})
    with pytest.raises(Rejected) as caught:
        render("{{ value_json.x | float }}", payload)
    assert len(caught.value.detail) < 300
